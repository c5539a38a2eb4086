"""A Cloud Function run under functions-framework as a local subprocess.

The function runs the way Cloud Functions gen2 runs it: ``functions-framework`` (gunicorn,
one worker) serving the target on a port, configured only through its environment, and
writing structured logs as JSON lines on stdout. Running it in a separate process, rather
than calling the Python function in the test, is what lets an end-to-end test see the
real HTTP contract: a raw Pub/Sub push converted to a CloudEvent, an exception becoming a
500 that the emulator redelivers, module-level configuration read once at cold start.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from localcloud.processes import ManagedProcess, free_port, start_process, stopping_on_error, wait_for_http

#: The repository root, put on PYTHONPATH so entry points can ``import shared``.
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Importing google-cloud clients at cold start takes a second or two on a loaded machine.
DEFAULT_READY_TIMEOUT = 30.0
#: Variables a child needs to run at all when it does not inherit our environment.
_BASE_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


@dataclass
class FunctionProcess:
    """A function being served on 127.0.0.1, and what it has logged."""

    target: str
    source: Path
    port: int
    process: ManagedProcess
    startup_seconds: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def log_text(self) -> str:
        """Raw stdout and stderr so far (server messages and tracebacks included)."""
        return self.process.log_text()

    def json_lines(self) -> list[dict[str, Any]]:
        """The function's structured log records so far, parsed, in order."""
        return self.process.json_lines()

    def wait_for_log(self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 20.0) -> dict[str, Any]:
        """The first structured log record matching ``predicate``, waiting up to ``timeout``.

        Raises:
            TimeoutError: no record matched; the message shows the log tail.
        """
        deadline = time.monotonic() + timeout
        while True:
            for record in self.json_lines():
                if predicate(record):
                    return record
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.target}: no matching log record within {timeout:.1f}s; log tail:\n{self.process.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop gunicorn and its worker (the whole process group)."""
        self.process.stop()

    def __enter__(self) -> FunctionProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def function_environment(env: Mapping[str, str] | None = None, *, inherit: bool = True) -> dict[str, str]:
    """The environment a function subprocess gets.

    ``inherit=False`` keeps only what a process needs to run (PATH, HOME, locale...), so a
    test proves the function is configured by exactly the variables it passes.
    """
    kept = os.environ if inherit else {name: os.environ[name] for name in _BASE_VARIABLES if name in os.environ}
    base = dict(kept)
    pythonpath = [str(REPO_ROOT)]
    if base.get("PYTHONPATH"):
        pythonpath.append(base["PYTHONPATH"])
    base.update(
        {
            "PYTHONPATH": os.pathsep.join(pythonpath),
            # Logs must reach the file as they are written, not when a buffer fills.
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    base.update(env or {})
    return base


def start_function(
    target: str,
    source: Path,
    *,
    env: Mapping[str, str] | None = None,
    inherit_env: bool = True,
    port: int | None = None,
    signature_type: str = "cloudevent",
    log_path: Path | None = None,
    ready_timeout: float = DEFAULT_READY_TIMEOUT,
) -> FunctionProcess:
    """Serve ``target`` from ``source`` with functions-framework and wait until it answers.

    Args:
        target: the function's name in its module (``--target``).
        source: the module file, or a directory holding ``main.py`` (``--source``).
        env: variables for the function, on top of :func:`function_environment`.
        inherit_env: whether the child starts from this process's environment.
        port: a fixed port; None asks the OS for a free one.
        signature_type: ``cloudevent``, ``http``, ``event`` or ``typed``.
        log_path: where stdout/stderr go; None makes a temp file (see ``.log_path``).
        ready_timeout: seconds to wait for the server to answer HTTP.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ProcessStartError: the function failed to import or did not answer in time
            (the message carries the log tail, e.g. the import traceback).
    """
    source = Path(source).resolve()
    if source.is_dir():
        source = source / "main.py"
    if not source.is_file():
        raise FileNotFoundError(f"function source {source} does not exist")
    port = port or free_port()
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix=f"function-{target}-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    command = [
        sys.executable,
        "-m",
        "functions_framework",
        f"--target={target}",
        f"--source={source}",
        f"--signature-type={signature_type}",
        "--host=127.0.0.1",
        f"--port={port}",
    ]
    process = start_process(
        command,
        name=f"function:{target}:{port}",
        log_path=log_path,
        env=function_environment(env, inherit=inherit_env),
        cwd=source.parent,
        # SIGTERM makes gunicorn wait out idle keep-alive connections (the emulator keeps
        # one open), ~2 s per stop; SIGINT is its immediate shutdown.
        stop_signal=signal.SIGINT,
    )
    with stopping_on_error(process):
        # A route that never reaches the function (405 for event signatures, 404 for
        # HTTP ones) proves the worker has imported the code without invoking it.
        waited = wait_for_http(f"http://127.0.0.1:{port}/robots.txt", timeout=ready_timeout, process=process)
    return FunctionProcess(target=target, source=source, port=port, process=process, startup_seconds=waited)
