"""Building Google's generated API clients once per instance, the same way in every adapter.

A client pools connections (REST) or holds a channel (gRPC) and costs an import and some
setup, so each adapter builds its client on first use and every thread then shares it.
Against the local cloud (an explicit endpoint) the REST clients use anonymous credentials.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def rest_client_kwargs(endpoint: str | None) -> dict[str, Any]:
    """Keyword arguments for a generated client on the REST transport.

    ``endpoint`` ("http://HOST:PORT", scheme included) points it at a local stand-in,
    anonymously; without it the client uses Google's endpoint and default credentials.
    """
    kwargs: dict[str, Any] = {"transport": "rest"}
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        kwargs["credentials"] = AnonymousCredentials()
        kwargs["client_options"] = {"api_endpoint": endpoint}
    return kwargs


class LazyClient:
    """A client built by ``build`` on first use, then shared by every thread."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._client: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._build()
                client = self._client
        return client

    def close(self) -> None:
        """Release the pool or channel (a long-lived function never needs to; tests do)."""
        with self._lock:
            if self._client is not None:
                self._client.transport.close()
                self._client = None
