"""Start a function the way Cloud Functions does and time it to its first answered event.

A cold start, as a caller feels it, runs from the moment the instance's process starts to
the moment the first event's response arrives: interpreter, functions-framework, the
function's imports, its clients, and the first event's remote calls. So the clock starts
just before ``exec`` and the first event is sent as soon as the port accepts it, polling
every few milliseconds (``localcloud.functions.start_function`` polls every 50 ms, too
coarse for a hello-world that is up in a few hundred).

The command line and environment are those of :func:`localcloud.functions.start_function`;
``-X importtime`` can be added to record every import (on the command line: setting
``PYTHONIMPORTTIME`` had no effect with the interpreter this was written on; gunicorn's
worker is forked, not executed, so it inherits the flag).
"""

from __future__ import annotations

import compileall
import contextlib
import http.client
import re
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.notifications import Delivery
from localcloud.functions import function_environment
from localcloud.processes import ManagedProcess, ProcessStartError, free_port, start_process

BENCH_ROOT = Path(__file__).resolve().parent
FIRST_EVENT_TIMEOUT = 60.0
POLL_SECONDS = 0.002
#: Per request; the slowest first event (a provisioning) takes a few seconds locally.
REQUEST_TIMEOUT = 60.0


@dataclass
class Answer:
    """A function's HTTP response, reduced to what the bench checks."""

    status: int
    seconds: float
    body: bytes = field(repr=False, default=b"")


@dataclass
class RunningFunction:
    """A function process, its port, and how long its first event took from process start."""

    name: str
    process: ManagedProcess
    port: int
    cold_start_seconds: float
    first: Answer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def send(self, message: Delivery, *, timeout: float = REQUEST_TIMEOUT) -> Answer:
        """POST one event and wait for the answer (a fresh connection: no keep-alive state carried over)."""
        return post(self.port, message, timeout=timeout)

    def worker_pids(self) -> list[int]:
        """gunicorn's worker(s): the arbiter's children (not a helper some library ran for a moment)."""
        return [pid for pid in self.process.group_members() if parent_of(pid) == self.process.pid]

    def rss_bytes(self) -> tuple[int, int]:
        """(worker RSS, RSS summed over the whole instance: arbiter and workers).

        The sum counts pages shared by fork twice, so it over-estimates what the instance
        uses: a safe figure to hold against the function's memory size.
        """
        workers = sum(rss_of(pid) for pid in self.worker_pids())
        return workers, workers + rss_of(self.process.pid)

    def imports(self) -> list[ImportRecord]:
        """Every import recorded so far (started with ``importtime=True``), in order."""
        return parse_importtime(self.process.log_text())

    def stop(self) -> None:
        self.process.stop()


@dataclass(frozen=True)
class ImportRecord:
    """One ``-X importtime`` line: module, its own and cumulative microseconds, nesting depth."""

    module: str
    self_us: int
    cumulative_us: int
    depth: int


_IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


def parse_importtime(text: str) -> list[ImportRecord]:
    """The import records in a process's stderr (other lines ignored)."""
    records = []
    for line in text.splitlines():
        found = _IMPORTTIME.match(line)
        if found:
            records.append(
                ImportRecord(found.group(4), int(found.group(1)), int(found.group(2)), (len(found.group(3)) - 1) // 2)
            )
    return records


def parent_of(pid: int) -> int | None:
    """The parent pid of ``pid``, None if it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def rss_of(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (0 if it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def post(port: int, message: Delivery, *, timeout: float = REQUEST_TIMEOUT) -> Answer:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/", body=message.body.encode(), headers=message.headers)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    return Answer(response.status, time.perf_counter() - started, body)


def start(
    name: str,
    source: Path,
    target: str,
    env: Mapping[str, str],
    first: Delivery,
    *,
    log_dir: Path,
    importtime: bool = False,
    timeout: float = FIRST_EVENT_TIMEOUT,
) -> RunningFunction:
    """Start ``target`` from ``source`` under functions-framework and deliver ``first`` as soon as it listens.

    The function sees only ``env`` (plus PATH, locale and PYTHONPATH), as when deployed.

    Raises:
        ProcessStartError: the process exited, or did not answer within ``timeout``.
    """
    port = free_port()
    command = [
        sys.executable,
        *(["-X", "importtime"] if importtime else []),
        "-m",
        "functions_framework",
        f"--target={target}",
        f"--source={source}",
        "--signature-type=cloudevent",
        "--host=127.0.0.1",
        f"--port={port}",
    ]
    environment = function_environment(env, inherit=False)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    started = time.perf_counter()
    process = start_process(
        command,
        name=f"bench:{name}:{port}",
        log_path=log_path,
        env=environment,
        cwd=source.parent,
        stop_signal=signal.SIGINT,  # gunicorn's immediate shutdown, as start_function uses
    )
    try:
        answer = _first_answer(process, port, first, started + timeout)
    except BaseException:
        process.stop()
        raise
    return RunningFunction(name, process, port, time.perf_counter() - started, answer)


def compile_sources() -> bool:
    """Byte-compile the functions and ``shared/``, as Google's buildpack does when it builds a function.

    The Python functions buildpack runs ``python3 -m compileall -f -q .`` over the uploaded
    source (GoogleCloudPlatform/buildpacks, ``cmd/python/functions_framework/lib/lib.go``), so
    a deployed instance loads bytecode; functions here run with ``PYTHONDONTWRITEBYTECODE=1``
    and would otherwise compile every project module at every cold start. The bytecode goes
    to the usual (git-ignored) ``__pycache__`` directories. Returns whether all compiled.
    """
    root = BENCH_ROOT.parent
    return all(compileall.compile_dir(root / name, quiet=1) for name in ("functions", "shared", "bench"))


def _first_answer(process: ManagedProcess, port: int, first: Delivery, deadline: float) -> Answer:
    while True:
        try:
            return post(port, first)
        except ConnectionRefusedError:
            pass
        if not process.running():
            raise ProcessStartError(f"{process.name} exited before answering; log:\n{process.log_tail()}")
        if time.perf_counter() >= deadline:
            raise ProcessStartError(f"{process.name} did not answer in time; log:\n{process.log_tail()}")
        time.sleep(POLL_SECONDS)


@contextlib.contextmanager
def running(
    name: str, source: Path, target: str, env: Mapping[str, str], first: Delivery, **options: Any
) -> Iterator[RunningFunction]:
    """:func:`start` as a context manager that always stops the process."""
    function = start(name, source, target, env, first, **options)
    try:
        yield function
    finally:
        function.stop()


def source_of(name: str) -> Path:
    """``functions/NAME/main.py`` of the project, or ``bench/NAME/main.py`` for the bench's own functions."""
    project = BENCH_ROOT.parent / "functions" / name / "main.py"
    return project if project.is_file() else BENCH_ROOT / name / "main.py"
