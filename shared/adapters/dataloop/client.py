"""The HTTP side of Dataloop's REST API: base URL, auth header, timeouts, retries, errors.

Retries come from :mod:`shared.adapters.http` (urllib3's ``Retry``: bounded exponential backoff
with jitter, ``Retry-After`` honoured up to a cap) on two sessions that differ in what is
safe to repeat:

* the main session repeats any call after a connection error, a 429 or a 5xx. Reads are
  safe; so are our writes, because each one states a final result (PATCH with the whole
  options, restart, delete) rather than adding something.
* creating an integration *adds* something, and the API is not known to reject a second
  integration of the same name. A create is therefore repeated only when Dataloop cannot
  have acted on it (a 429, or a connection that never opened); after a 5xx or a read
  timeout the caller gets :class:`DataloopUnavailable` and reconciles by name
  (:meth:`Integrations.ensure` does).

No 4xx is retried, except that a bot user's 401 is answered by logging in again, once.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from shared.adapters.dataloop.auth import DEFAULT_REFRESH_MARGIN_SECONDS, ApiKey, BotLogin, Credentials
from shared.adapters.dataloop.errors import error_from_response, unreachable
from shared.adapters.dataloop.integrations import Integrations
from shared.adapters.dataloop.services import Services
from shared.adapters.http import Timeout, TimeoutHTTPAdapter, build_retry, build_session, json_body
from shared.model.dataloop import DataloopError

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://gate.dataloop.ai/api/v1"
USER_AGENT = "dataloop-gar/0.1"

#: Everything our calls use; each is safe to repeat on the main session (see module doc).
_REPEATABLE = frozenset({"GET", "HEAD", "OPTIONS", "PATCH", "PUT", "DELETE", "POST"})
_SERVER_ERRORS = frozenset({429, 500, 502, 503, 504})


def gate_origin(base_url: str) -> str:
    """``scheme://host[:port]`` of the API base URL: where ``/token`` lives (dtlpy's ``gate_url``)."""
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


class DataloopClient:
    """A Dataloop REST API client for one gateway and one identity.

    Give either ``api_key`` or ``username`` and ``password`` (a bot user). ``retries`` is
    how many times a call is repeated after its first attempt.

    Raises:
        ValueError: no identity, or two.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        timeout: Timeout = 10.0,
        retries: int = 3,
        backoff_factor: float = 0.5,
        backoff_max: float = 10.0,
        backoff_jitter: float = 0.25,
        retry_after_cap: float = 30.0,
        refresh_margin_seconds: float = DEFAULT_REFRESH_MARGIN_SECONDS,
    ) -> None:
        if bool(api_key) == bool(username or password):
            raise ValueError("give the Dataloop client either an API key or a bot username and password")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"Dataloop base URL must be http(s)://HOST/..., got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.origin = gate_origin(self.base_url)
        self.timeout = timeout
        retry: dict[str, Any] = {
            "retries": retries,
            "backoff_factor": backoff_factor,
            "backoff_max": backoff_max,
            "backoff_jitter": backoff_jitter,
            "retry_after_cap": retry_after_cap,
        }
        self._session = build_session(
            timeout=timeout,
            status_forcelist=_SERVER_ERRORS,
            allowed_methods=_REPEATABLE,
            user_agent=USER_AGENT,
            **retry,
        )
        self._create_session = requests.Session()
        create_retry = build_retry(status_forcelist={429}, allowed_methods={"POST"}, **retry).new(read=0)
        adapter = TimeoutHTTPAdapter(timeout=timeout, max_retries=create_retry)
        self._create_session.mount("https://", adapter)
        self._create_session.mount("http://", adapter)
        self._create_session.headers["User-Agent"] = USER_AGENT
        self.credentials: Credentials
        if api_key:
            self.credentials = ApiKey(api_key)
        else:
            self.credentials = BotLogin(
                username or "",
                password or "",
                gate_origin=self.origin,
                session=self._session,
                timeout=timeout,
                refresh_margin_seconds=refresh_margin_seconds,
            )

    def __repr__(self) -> str:
        return f"DataloopClient({self.base_url!r}, {self.credentials!r})"

    def __enter__(self) -> DataloopClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()
        self._create_session.close()

    # -- repositories -----------------------------------------------------------------
    def integrations(self, org_id: str) -> Integrations:
        """The integrations of one organization (integrations are org-scoped)."""
        return Integrations(self, org_id)

    @property
    def services(self) -> Services:
        return Services(self)

    # -- the one place that talks HTTP ------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        repeatable: bool = True,
    ) -> Any:
        """Call ``{base_url}{path}`` and return the decoded JSON answer (None when empty).

        ``repeatable=False`` marks a call that adds something (see the module doc).

        Raises:
            DataloopRejected (and subclasses): a 4xx; permanent.
            DataloopUnavailable: no answer, 429 or 5xx after retries; transient.
        """
        method = method.upper()
        session = self._session if repeatable else self._create_session
        url = self.base_url + path
        for attempt in (1, 2):
            authorization = self.credentials.authorization()
            try:
                response = session.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers={"Authorization": authorization, "Accept": "application/json"},
                    timeout=self.timeout,
                )
            except requests.RequestException as exc:
                raise unreachable(method, path, self.origin, exc) from None
            logger.debug(
                "dataloop %s %s -> %s (x-request-id %s)",
                method,
                path,
                response.status_code,
                response.headers.get("x-request-id"),
            )
            if response.status_code == 401 and attempt == 1 and self.credentials.refused(authorization):
                continue
            break
        if not response.ok:
            raise error_from_response(method, path, response)
        if not response.content:
            return None
        try:
            return json_body(response)
        except ValueError:
            raise DataloopError(
                f"Dataloop {method} {path} answered {response.status_code} with a body that is not JSON "
                f"(x-request-id: {response.headers.get('x-request-id') or 'none'}); is the base URL a Dataloop gateway?",
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
                method=method,
                path=path,
            ) from None
