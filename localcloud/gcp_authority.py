"""The local registry's view of Google: IAM says who is presenting a key, Artifact Registry says what they may pull.

GAR's token endpoint answers ``_json_key`` / ``_json_key_base64`` / ``oauth2accesstoken``
Basic auth with a pull token only when the key is a live key of a live, enabled service
account (one IAM has finished propagating) and the account holds a reader role on the
repository or its project. :class:`GcpAuthority` asks the local IAM and Artifact
Registry stand-ins exactly those questions, so a rotated-away, disabled, deleted or
too-new key fails at the registry the way it would on Google (docs/external-apis.md §2.4, §3.4).
"""

from __future__ import annotations

import base64
import binascii
import threading

from localcloud.artifactregistry import ArtifactRegistryState
from localcloud.iam import IamState, KeyCheck


class GcpAuthority:
    """An :class:`~localcloud.authority.Authority` backed by the IAM and Artifact Registry stand-ins.

    ``location`` pins the registry host's region (``us-central1`` for
    ``us-central1-docker.pkg.dev``); ``None`` accepts a repository of that name in any
    location, which is enough when a test has one registry.
    """

    def __init__(self, iam: IamState, registry: ArtifactRegistryState, *, location: str | None = None) -> None:
        self.iam = iam
        self.registry = registry
        self.location = location
        self._lock = threading.Lock()
        self._last_refusal = ""

    @property
    def last_refusal(self) -> str:
        """Why the most recent credentials were refused (``"unknown key"``, ``"key disabled"``, …); never secret."""
        with self._lock:
            return self._last_refusal

    def principal_for(self, username: str, password: str) -> str | None:
        check = self.check(username, password)
        with self._lock:
            self._last_refusal = "" if check.accepted else check.reason
        return check.email

    def check(self, username: str, password: str) -> KeyCheck:
        """Like :meth:`principal_for`, with the reason for a refusal."""
        if username == "_json_key":
            return self.iam.check_key_file(password)
        if username == "_json_key_base64":
            try:
                text = base64.b64decode(password, validate=True).decode()
            except (binascii.Error, ValueError):
                return KeyCheck(None, "password is not base64")
            return self.iam.check_key_file(text)
        if username == "oauth2accesstoken":
            email = self.iam.principal_for_access_token(password)
            return KeyCheck(email, "ok" if email else "unknown or expired access token")
        return KeyCheck(None, f"unsupported username {username!r}")

    def can_pull(self, principal: str, repository: str) -> bool:
        parts = repository.split("/")
        if len(parts) < 2 or not self.iam.service_account_exists(principal):
            return False
        member = f"serviceAccount:{principal}"
        return any(
            member in self.registry.readers(name)
            for name in self.registry.find_repositories(parts[0], parts[1], self.location)
        )
