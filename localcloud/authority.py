"""Who may pull what from the local registry: the seam between the token endpoint and IAM.

GAR's token endpoint accepts Basic auth as ``_json_key:<key JSON>``,
``_json_key_base64:<base64 of it>`` or ``oauth2accesstoken:<token>`` and issues a pull
token only when the key belongs to an active service-account key and the account may read
the repository. The local token endpoint asks an :class:`Authority` both questions; the
local IAM and Artifact Registry stand-ins answer them.
"""

from __future__ import annotations

import json
import threading
from typing import Protocol


class Authority(Protocol):
    def principal_for(self, username: str, password: str) -> str | None:
        """The service-account email these Basic-auth credentials prove, or None if refused."""

    def can_pull(self, principal: str, repository: str) -> bool:
        """Whether ``principal`` may pull ``repository`` (``PROJECT/REPO/IMAGE``)."""


class StaticAuthority:
    """An Authority over an explicit set of key files, for tests that need no IAM stand-in.

    ``grants`` maps an email to the ``PROJECT/REPO`` scopes it may pull.
    """

    def __init__(self) -> None:
        self._keys: dict[str, str] = {}  # key JSON text -> email
        self._tokens: dict[str, str] = {}  # oauth2 access token -> email
        self._grants: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def add_key(self, key_json: str, repositories: list[str]) -> str:
        email = json.loads(key_json)["client_email"]
        with self._lock:
            self._keys[key_json] = email
            self._grants.setdefault(email, set()).update(repositories)
        return email

    def add_token(self, token: str, email: str, repositories: list[str]) -> None:
        with self._lock:
            self._tokens[token] = email
            self._grants.setdefault(email, set()).update(repositories)

    def revoke_key(self, key_json: str) -> None:
        with self._lock:
            self._keys.pop(key_json, None)

    def principal_for(self, username: str, password: str) -> str | None:
        import base64

        with self._lock:
            if username == "_json_key":
                return self._keys.get(password)
            if username == "_json_key_base64":
                try:
                    return self._keys.get(base64.b64decode(password, validate=True).decode())
                except ValueError:
                    return None
            if username == "oauth2accesstoken":
                return self._tokens.get(password)
        return None

    def can_pull(self, principal: str, repository: str) -> bool:
        scope = "/".join(repository.split("/")[:2])
        with self._lock:
            return scope in self._grants.get(principal, set())
