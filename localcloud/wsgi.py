"""Serving stand-ins on 127.0.0.1, with fault injection and call counting.

Every stand-in is a WSGI app wrapped by :class:`Instrumented`, which adds two things the
tests need from any peer: injected faults (a status such as 429 with ``Retry-After`` or
503, or added latency, for the next N matching requests) and a log of the calls received,
so tests can count remote calls. Both are driven over HTTP under ``/_localcloud/`` so a
test in another process can use them as easily as one in this process.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
CONTROL_PREFIX = "/_localcloud/"


@dataclass
class Fault:
    """Answer (or delay) the next ``count`` requests matching method and path regex."""

    path: str = ".*"
    method: str = "*"
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    latency_seconds: float = 0.0
    count: int = 1

    def matches(self, method: str, path: str) -> bool:
        return (self.method in ("*", method)) and re.search(self.path, path) is not None


class Instrumented:
    """WSGI middleware: control endpoints, faults, and a log of calls."""

    def __init__(self, app: WSGIApp, name: str) -> None:
        self.app = app
        self.name = name
        self.faults: list[Fault] = []
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    # -- used in-process by tests ------------------------------------------------
    def inject(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def reset(self) -> None:
        with self._lock:
            self.faults.clear()
            self.calls.clear()

    def call_log(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.calls)

    # -- WSGI ----------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path.startswith(CONTROL_PREFIX):
            return self._control(environ, start_response, path[len(CONTROL_PREFIX) :], method)
        with self._lock:
            self.calls.append(
                {"method": method, "path": path, "query": environ.get("QUERY_STRING", ""), "at": time.time()}
            )
            fault = next((f for f in self.faults if f.matches(method, path)), None)
            if fault is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
        if fault is not None:
            if fault.latency_seconds:
                time.sleep(fault.latency_seconds)
            if fault.status is not None:
                body = (
                    fault.body
                    if fault.body is not None
                    else {"error": {"code": fault.status, "message": "injected fault", "status": "INJECTED"}}
                )
                payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
                headers += list(fault.headers.items())
                start_response(f"{fault.status} Injected", headers)
                return [payload]
        return self.app(environ, start_response)

    def _control(
        self, environ: dict[str, Any], start_response: Callable[..., Any], action: str, method: str
    ) -> Iterable[bytes]:
        result: Any = {"ok": True}
        if action == "faults" and method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            spec = json.loads(environ["wsgi.input"].read(length) or b"{}")
            for item in spec if isinstance(spec, list) else [spec]:
                self.inject(Fault(**item))
        elif action == "reset" and method == "POST":
            self.reset()
        elif action == "calls" and method == "GET":
            result = self.call_log()
        else:
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"error": "unknown control endpoint"}']
        payload = json.dumps(result).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]


class ServerThread:
    """A threaded WSGI server on 127.0.0.1 (port 0 picks a free one), started and stopped by code."""

    def __init__(self, app: WSGIApp, port: int = 0, host: str = "127.0.0.1") -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request drowns test output
        self.server: BaseWSGIServer = make_server(host, port, app, threaded=True)
        self.host = host
        self.port = self.server.server_port
        self._thread = threading.Thread(target=self.server.serve_forever, name=f"wsgi:{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
