"""One way to build a ``requests.Session`` that retries politely and never hangs.

Every HTTP client in this project talks to a peer that is sometimes briefly away (a
registry restarting, Dataloop's gateway answering 503, a token endpoint rate limiting
with 429). urllib3's ``Retry`` already knows how to back off exponentially with jitter
and to honour ``Retry-After``; this module only picks safe defaults and adds the two
things ``requests`` lacks: a default timeout on every request, and a cap on how long a
peer may make us sleep through ``Retry-After``, so a Cloud Function never spends its
540 s waiting on one header.

It also bounds what a peer can make us hold: every response body is read through
:data:`MAX_RESPONSE_BYTES` (a broken proxy or a hostile token endpoint answering 50 MB
costs us at most that, and a :class:`ResponseTooLarge`), and :func:`json_body` refuses JSON
nested deeper than any honest answer with the ``ValueError`` callers already handle
(see :mod:`shared.core.json_text`).
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shared.core import json_text

#: Methods that are safe to repeat: they do not change anything on the peer.
IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS"})
#: Statuses that mean "not now" rather than "no".
TRANSIENT_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504})

Timeout = float | tuple[float, float]

#: Largest response body read from a peer. Our answers are a few KiB (a token, an
#: integration list); 4 MiB is far above any honest one and small next to a function's memory.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_CHUNK = 64 * 1024


class ResponseTooLarge(requests.RequestException):
    """A peer's answer was larger than the body limit; the rest was not read.

    A ``RequestException``, so every caller already treats it as "no usable answer from
    the peer" (transient: Pub/Sub redelivers, and a peer that keeps doing it ends in the
    dead-letter topic rather than in our memory).
    """


def read_bounded(response: requests.Response, limit: int = MAX_RESPONSE_BYTES) -> None:
    """Read ``response``'s body now, at most ``limit`` bytes (decoded), or drop the connection.

    Afterwards ``response.content``, ``.text`` and ``.json()`` work as usual on what was read.

    Raises:
        ResponseTooLarge: the declared ``Content-Length`` or the bytes actually sent exceed ``limit``.
    """
    if response._content is not False:  # already in memory (an answer built in-process)
        return
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(response.url or ""))
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        response.close()
        raise ResponseTooLarge(f"{origin} announced a {declared}-byte answer; the limit is {limit}", response=response)
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(_CHUNK):  # converts urllib3's errors to requests' own
        size += len(chunk)
        if size > limit:
            response.close()
            raise ResponseTooLarge(f"{origin} sent more than {limit} bytes in one answer", response=response)
        chunks.append(chunk)
    response._content = b"".join(chunks)  # what .content would have read, had it been bounded


def json_body(response: requests.Response) -> Any:
    """``response.json()``, except that every refusal, nesting too deep included, is a ``ValueError``."""
    return json_text.loads(response.content)


class CappedRetry(Retry):
    """A ``Retry`` whose honoured ``Retry-After`` never exceeds ``retry_after_cap`` seconds.

    A peer may legitimately ask for minutes; a caller with a deadline would rather fail
    now (as a transient error the platform redelivers) than sleep past it.
    """

    def __init__(self, *args: Any, retry_after_cap: float = 30.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after_cap = retry_after_cap

    def new(self, **kwargs: Any) -> CappedRetry:
        retry = super().new(**kwargs)
        retry.retry_after_cap = self.retry_after_cap
        return retry

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.retry_after_cap)


class TimeoutHTTPAdapter(HTTPAdapter):
    """An adapter that applies ``timeout`` to every request that did not name its own, and
    reads every (non-streamed) body through :func:`read_bounded`.

    ``requests`` waits forever by default; a forgotten ``timeout=`` at one call site
    would be enough to hang a function until the platform kills it. It also reads any
    body whole; bounding it here covers every call site, including error bodies.
    """

    def __init__(self, *, timeout: Timeout, max_body_bytes: int = MAX_RESPONSE_BYTES, **kwargs: Any) -> None:
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        super().__init__(**kwargs)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        response = super().send(
            request,
            stream=stream,
            timeout=self.timeout if timeout is None else timeout,
            verify=verify,
            cert=cert,
            proxies=proxies,
        )
        if not stream:
            read_bounded(response, self.max_body_bytes)
        return response


def build_retry(
    *,
    retries: int = 3,
    backoff_factor: float = 0.5,
    backoff_max: float = 10.0,
    backoff_jitter: float = 0.25,
    status_forcelist: Collection[int] = TRANSIENT_STATUSES,
    allowed_methods: Collection[str] = IDEMPOTENT_METHODS,
    retry_after_cap: float = 30.0,
) -> CappedRetry:
    """The retry policy: ``retries`` more attempts after the first, for connection errors,
    read errors and ``status_forcelist`` answers, on ``allowed_methods`` only.

    After the last attempt the final response is returned as it is (``raise_on_status``
    is off), so the caller can read the peer's status and error body and decide what it
    means in its own domain, instead of decoding urllib3's ``MaxRetryError``.
    """
    return CappedRetry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        redirect=5,
        backoff_factor=backoff_factor,
        backoff_max=backoff_max,
        backoff_jitter=backoff_jitter,
        status_forcelist=frozenset(status_forcelist),
        allowed_methods=frozenset(m.upper() for m in allowed_methods),
        respect_retry_after_header=True,
        raise_on_status=False,
        raise_on_redirect=False,
        retry_after_cap=retry_after_cap,
    )


def build_session(
    *,
    timeout: Timeout = 10.0,
    retries: int = 3,
    backoff_factor: float = 0.5,
    backoff_max: float = 10.0,
    backoff_jitter: float = 0.25,
    status_forcelist: Collection[int] = TRANSIENT_STATUSES,
    allowed_methods: Collection[str] = IDEMPOTENT_METHODS,
    retry_after_cap: float = 30.0,
    pool_maxsize: int = 16,
    user_agent: str | None = None,
) -> requests.Session:
    """A session whose every request has a timeout and retries per :func:`build_retry`.

    ``pool_maxsize`` bounds the connections kept per host; it should be at least the
    number of threads that share the session, or urllib3 discards (and logs about)
    the connections that did not fit.
    """
    session = requests.Session()
    adapter = TimeoutHTTPAdapter(
        timeout=timeout,
        max_retries=build_retry(
            retries=retries,
            backoff_factor=backoff_factor,
            backoff_max=backoff_max,
            backoff_jitter=backoff_jitter,
            status_forcelist=status_forcelist,
            allowed_methods=allowed_methods,
            retry_after_cap=retry_after_cap,
        ),
        pool_connections=pool_maxsize,
        pool_maxsize=pool_maxsize,
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if user_agent:
        session.headers["User-Agent"] = user_agent
    _read_environment_once(session)
    return session


def _read_environment_once(session: requests.Session) -> None:
    """Take the CA bundle from the environment now, instead of on every request.

    With ``trust_env`` (the default) requests re-reads every environment variable on every
    request to look for proxies: a quarter of a warm push's CPU, profiled. An instance's
    environment does not change, so when no proxy is configured the session reads the one
    setting that can matter (``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``) once and stops
    looking; it then also ignores ``~/.netrc``, so no request picks up credentials we did
    not give it. When a proxy *is* configured, requests keeps handling it (and ``NO_PROXY``)
    as usual.
    """
    if urllib.request.getproxies():
        return
    session.trust_env = False
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
