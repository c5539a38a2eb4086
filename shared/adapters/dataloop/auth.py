"""The bearer JWT every Dataloop call carries: an API key, or a bot user's login.

An API key *is* a long-lived JWT and is sent as it is. A bot user logs in with its
password at ``{gateway origin}/token?default`` (not under ``/api/v1``), gets a short-lived
``id_token`` and a ``refresh_token``, and must refresh before the JWT's ``exp`` -- dtlpy
does so 60 s ahead. If the refresh is refused (refresh tokens expire and can be revoked),
logging in again with the password is the only way back, so that is what happens.

The token is shared by every thread that uses one client; a lock makes sure that a token
about to expire is renewed once, not once per thread.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import requests

from shared.adapters.dataloop.errors import error_from_response, unreachable
from shared.adapters.http import json_body
from shared.core.json_text import loads
from shared.core.logs import log
from shared.core.redaction import register_secret
from shared.model.dataloop import DataloopError, DataloopRejected, DataloopUnauthorized

logger = logging.getLogger(__name__)

#: How long before ``exp`` a token is renewed (dtlpy's ``token_expired(t=60)``).
DEFAULT_REFRESH_MARGIN_SECONDS = 60.0
#: Never renew earlier than this share of a token's life before ``exp``, so that a token
#: living only a few minutes (or seconds, in tests) is not "always due".
_MAX_MARGIN_SHARE = 0.25


class Credentials(Protocol):
    """Where the ``Authorization`` header comes from."""

    def authorization(self) -> str:
        """The header value to send now (``Bearer <jwt>``), renewing it first if due."""

    def refused(self, authorization: str) -> bool:
        """Dataloop answered 401 to ``authorization``; True if trying once more may help."""


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT, read without verifying it (only the gateway can verify).

    We read ``exp`` to know when to renew; trusting it blindly is harmless because a wrong
    value only makes us renew early or meet a 401, which also triggers a renewal.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def renew_at(token: str, obtained_at: float, margin: float = DEFAULT_REFRESH_MARGIN_SECONDS) -> float | None:
    """The time (epoch seconds) from which ``token`` should be renewed, or None if it has no ``exp``.

    ``margin`` is shortened to a quarter of the token's life so a short-lived token is
    still used for most of it.
    """
    claims = jwt_claims(token) or {}
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        return None
    issued = claims.get("iat")
    start = issued if isinstance(issued, (int, float)) and not isinstance(issued, bool) else obtained_at
    life = max(float(exp) - float(start), 0.0)
    return float(exp) - min(margin, life * _MAX_MARGIN_SHARE)


class ApiKey:
    """A Dataloop API key: a JWT sent as the bearer token, never renewed by us."""

    def __init__(self, api_key: str) -> None:
        if not api_key or not api_key.strip():
            raise ValueError("Dataloop API key is empty")
        self._header = f"Bearer {api_key.strip()}"
        register_secret(api_key.strip())

    def authorization(self) -> str:
        return self._header

    def refused(self, authorization: str) -> bool:
        return False  # the same key will be refused again; the 401 is the answer

    def __repr__(self) -> str:
        return "ApiKey(***)"


class BotLogin:
    """A bot user's password login with refresh, shared safely between threads."""

    def __init__(
        self,
        username: str,
        password: str,
        *,
        gate_origin: str,
        session: requests.Session,
        timeout: float | tuple[float, float],
        refresh_margin_seconds: float = DEFAULT_REFRESH_MARGIN_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not username or not password:
            raise ValueError("Dataloop bot login needs both a username and a password")
        self.username = username
        self._password = password
        register_secret(password)
        self._token_url = gate_origin.rstrip("/") + "/token?default"
        self._origin = gate_origin.rstrip("/")
        self._session = session
        self._timeout = timeout
        self._margin = refresh_margin_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_token: str | None = None
        self._renew_at: float | None = None

    def __repr__(self) -> str:
        return f"BotLogin({self.username!r}, ***)"

    def authorization(self) -> str:
        with self._lock:
            if self._token is None or (self._renew_at is not None and self._clock() >= self._renew_at):
                self._renew()
            assert self._token is not None
            return f"Bearer {self._token}"

    def refused(self, authorization: str) -> bool:
        with self._lock:
            if self._token is not None and authorization == f"Bearer {self._token}":
                # The gateway no longer accepts a token we thought valid (revoked, clock skew):
                # start over with the password rather than trusting the refresh token too.
                self._token = None
                self._refresh_token = None
        return True

    # -- under self._lock ---------------------------------------------------------
    def _renew(self) -> None:
        if self._refresh_token is not None:
            try:
                self._store(self._post({"type": "refresh_token", "refresh_token": self._refresh_token}), refresh=True)
                log(logger, logging.DEBUG, "dataloop token refreshed", user=self.username)
                return
            except DataloopRejected as exc:
                log(
                    logger,
                    logging.INFO,
                    "dataloop token refresh refused; logging in again",
                    user=self.username,
                    status=exc.status,
                    request_id=exc.request_id,
                )
                self._refresh_token = None
        answer = self._post({"username": self.username, "password": self._password, "type": "user_credentials"})
        self._store(answer, refresh=False)
        log(logger, logging.INFO, "dataloop bot user logged in", user=self.username)

    def _post(self, body: dict[str, str]) -> dict[str, Any]:
        path = "/token?default"
        try:
            response = self._session.post(
                self._token_url, json=body, headers={"Content-Type": "application/json"}, timeout=self._timeout
            )
        except requests.RequestException as exc:
            raise unreachable("POST", path, self._origin, exc) from None
        if not response.ok:
            error = error_from_response("POST", path, response)
            if isinstance(error, DataloopRejected) and body.get("type") == "user_credentials":
                raise DataloopUnauthorized(
                    f"Dataloop refused the login of bot user {self.username!r} with {error.status}"
                    f"{f': {error.message}' if error.message else ''} (x-request-id: {error.request_id or 'none'}). "
                    "Check the bot user's username and password.",
                    status=error.status,
                    message=error.message,
                    request_id=error.request_id,
                    method="POST",
                    path=path,
                ) from None
            raise error
        try:
            answer = json_body(response)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("id_token"), str) or not answer["id_token"]:
            raise DataloopError(
                f"Dataloop's token endpoint answered {response.status_code} without an id_token "
                f"(x-request-id: {response.headers.get('x-request-id') or 'none'}); is the base URL a Dataloop gateway?",
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
                method="POST",
                path=path,
            )
        return answer

    def _store(self, answer: dict[str, Any], *, refresh: bool) -> None:
        token = answer["id_token"]
        register_secret(token)
        refresh_token = answer.get("refresh_token")
        if isinstance(refresh_token, str) and refresh_token:
            register_secret(refresh_token)
            self._refresh_token = refresh_token
        elif not refresh:
            self._refresh_token = None
        # (a refresh answer without a new refresh_token keeps the old one, as dtlpy does)
        self._token = token
        self._renew_at = renew_at(token, self._clock(), self._margin)
