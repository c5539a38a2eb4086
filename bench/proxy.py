"""A pass-through front for ``docker-registry`` that counts what reaches the registry.

The registry is a Go process with its access log off, so the manifest ``HEAD``s a push
test makes cannot be counted where the Secret Manager and token calls are (the
``Instrumented`` stand-ins). This front forwards every request unchanged and is itself
``Instrumented``: images named by its host are tested through it, and its call log shows
each ``HEAD`` and each anonymous ``401`` the registry answered. It is used only where
calls are counted; throughput is measured against the registry directly.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterable
from typing import Any

from localcloud.wsgi import Instrumented, ServerThread

#: Headers that describe one hop, not the message (RFC 9110 7.6.1); never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
FORWARD_TIMEOUT = 10.0


class RegistryFront:
    """WSGI app forwarding every request to ``upstream`` (``HOST:PORT``, plain HTTP)."""

    def __init__(self, upstream: str, *, timeout: float = FORWARD_TIMEOUT) -> None:
        self.upstream = upstream
        self.timeout = timeout

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "") + (f"?{environ['QUERY_STRING']}" if environ.get("QUERY_STRING") else "")
        headers = {
            key[5:].replace("_", "-").title(): value
            for key, value in environ.items()
            if key.startswith("HTTP_") and key[5:].replace("_", "-").lower() not in HOP_BY_HOP | {"host"}
        }
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else None
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        connection = http.client.HTTPConnection(self.upstream, timeout=self.timeout)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            # The serving side adds its own Date and Server; a second copy would only confuse.
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP | {"date", "server"}]
            start_response(f"{response.status} {response.reason}", kept)
        finally:
            connection.close()
        return [] if method == "HEAD" else [payload]


def serve_front(upstream: str) -> tuple[Instrumented, ServerThread]:
    """Start a counting front for ``upstream`` on a free 127.0.0.1 port; stop the thread when done."""
    wire = Instrumented(RegistryFront(upstream), "registry-front")
    return wire, ServerThread(wire).start()
