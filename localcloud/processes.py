"""Child processes of the local cloud, started and stopped by code.

The Pub/Sub emulator (a shell script that ``exec``\\s a JVM) and functions-framework
(a gunicorn arbiter that forks a worker) each become a *tree* of processes. Killing only
the pid we started leaves the rest running, holding ports and writing to logs after the
test that owned them has finished. So every child starts in its own session, and stopping
it means signalling its whole process group: SIGTERM, a grace period, then SIGKILL, until
``/proc`` shows no live member of the group.

Three safety nets keep a failed test or a Ctrl-C from leaking processes:

* :class:`ManagedProcess` is a context manager, so an :class:`contextlib.ExitStack` stops
  everything it holds in reverse order however the block ends;
* the ``start_*`` helpers stop what they started if waiting for readiness fails;
* an ``atexit`` hook stops whatever is still running when the interpreter exits, and
  (when ``setpriv`` is available) the kernel sends SIGTERM to the child if the thread that
  started it dies without cleaning up (``PR_SET_PDEATHSIG``). The death signal is tied to
  the starting *thread*, so start long-lived processes from the main thread.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

#: How long a process gets to exit after SIGTERM before it is SIGKILLed.
DEFAULT_GRACE_SECONDS = 5.0
_POLL_SECONDS = 0.05


class ProcessStartError(RuntimeError):
    """A child process exited, or did not become ready, before its deadline."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now on ``host``.

    For servers we cannot hand a listening socket to (a JVM, gunicorn), asking the OS
    for a port and passing the number is the only option; another process could take it
    in between, which start-up then reports as a :class:`ProcessStartError`.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def live_group_members(pgid: int) -> list[int]:
    """Pids of the processes in group ``pgid`` that are still running.

    Read from ``/proc`` rather than ``os.killpg(pgid, 0)`` because zombies count as group
    members for ``kill`` and, in a container whose init does not reap orphans, a stopped
    child can stay a zombie indefinitely even though it holds no port and runs no code.
    """
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read_stat(int(entry))
        if stat is not None and stat[2] == pgid and stat[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def pid_running(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    stat = _read_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _read_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of ``pid`` from /proc, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may itself contain spaces or ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


class ManagedProcess:
    """One child process tree with its own log file, stopped as a unit.

    Output (stdout and stderr interleaved, in the order written) goes to ``log_path`` so
    that a test can read what a function logged and a failure report can show the tail.
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        popen: subprocess.Popen[bytes],
        log_path: Path,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.popen = popen
        self.log_path = log_path
        self.stop_signal = stop_signal
        self.pgid = popen.pid  # start_new_session makes the child the leader of a new group
        self._stopped = False
        self._lock = threading.Lock()
        _RUNNING.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        """Whether the process we started is still running (its children aside)."""
        return self.popen.poll() is None

    def group_members(self) -> list[int]:
        """Live pids in this process's group, the leader included."""
        return live_group_members(self.pgid)

    # -- output --------------------------------------------------------------------
    def log_text(self) -> str:
        """Everything the process has written so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self) -> list[str]:
        """Complete lines written so far; a line still being written is left out."""
        text = self.log_text()
        lines = text.split("\n")
        return lines[:-1]  # the last element is "" or a partial line

    def json_lines(self) -> list[dict[str, Any]]:
        """The log lines that are JSON objects (structured logs), parsed, in order.

        Other lines (tracebacks, server banners) are skipped rather than failing, because
        the same stream carries both.
        """
        records = []
        for line in self.log_lines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                records.append(value)
        return records

    def log_tail(self, lines: int = 40) -> str:
        """The last few lines, for error messages."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- stopping --------------------------------------------------------------------
    def stop(self, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> int | None:
        """Stop the whole process group: ``stop_signal`` (SIGTERM), wait, SIGKILL what is left.

        Idempotent and safe to call from ``finally`` blocks and ``atexit``. Returns the
        leader's exit status (negative: killed by that signal).

        Raises:
            RuntimeError: part of the group survived SIGKILL (e.g. stuck in an
                uninterruptible sleep); the caller should know it leaked.
        """
        with self._lock:
            if self._stopped:
                return self.popen.returncode
            self._stopped = True
        try:
            self._signal_group(self.stop_signal)
            if not self._wait_group_gone(grace_seconds):
                self._signal_group(signal.SIGKILL)
                if not self._wait_group_gone(DEFAULT_GRACE_SECONDS):
                    raise RuntimeError(
                        f"{self.name}: processes {self.group_members()} of group {self.pgid} survived SIGKILL"
                    )
            return self.popen.returncode
        finally:
            _RUNNING.discard(self)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def _wait_group_gone(self, seconds: float) -> bool:
        """Reap the leader and wait until no live process remains in the group."""
        deadline = time.monotonic() + seconds
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=_POLL_SECONDS)
            if self.popen.returncode is not None and not self.group_members():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_SECONDS)

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running() else f"exited({self.popen.returncode})"
        return f"<ManagedProcess {self.name} pid={self.pid} {state} log={self.log_path}>"


_RUNNING: set[ManagedProcess] = set()


@atexit.register
def stop_all() -> None:
    """Stop every process this interpreter started and has not stopped yet.

    Registered with ``atexit`` as the last resort; the demo can also call it from a
    signal handler.
    """
    for process in list(_RUNNING):
        with contextlib.suppress(Exception):
            process.stop(grace_seconds=2.0)


def start_process(
    args: Sequence[str],
    *,
    name: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = True,
    stop_signal: signal.Signals = signal.SIGTERM,
) -> ManagedProcess:
    """Start ``args`` as the leader of a new session with output appended to ``log_path``.

    Args:
        args: the command line; ``args[0]`` is looked up on PATH.
        name: a short label for logs and error messages.
        log_path: file receiving stdout and stderr (created, parents included).
        env: the complete environment for the child; None inherits ours.
        cwd: working directory for the child.
        die_with_parent: ask the kernel to SIGTERM the child if our starting thread dies.
        stop_signal: the polite signal :meth:`ManagedProcess.stop` sends the group first.

    Returns:
        The running process; stop it (or use it as a context manager) when done.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = list(args)
    setpriv = shutil.which("setpriv")
    if die_with_parent and setpriv:
        command = [setpriv, "--pdeathsig", "TERM", "--", *command]
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    process = ManagedProcess(name, args, popen, log_path, stop_signal)
    if command[0] == setpriv:
        _wait_past_launcher(process, setpriv)
    return process


def _wait_past_launcher(process: ManagedProcess, launcher: str) -> None:
    """Return once the child has exec'd past ``setpriv``, i.e. its death signal is armed.

    If we died in the few milliseconds before ``setpriv`` calls prctl, the kernel would
    never signal the child; waiting here closes that window for every caller.
    """
    # Popen returns only after the exec of ``launcher`` (it waits on a close-on-exec pipe),
    # so from here /proc/PID/exe is the launcher until it execs the real command.
    launcher_exe = os.path.realpath(launcher)
    deadline = time.monotonic() + 5.0
    while process.running() and time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{process.pid}/exe") != launcher_exe:
                return
        except OSError:
            return  # gone, or not ours to inspect: nothing left to wait for
        time.sleep(0.001)


def wait_for_port(host: str, port: int, *, timeout: float, process: ManagedProcess | None = None) -> float:
    """Wait until something accepts TCP connections on ``host:port``.

    Returns the seconds waited. Fails fast, with the log tail, if ``process`` exits.

    Raises:
        ProcessStartError: the deadline passed or the process died first.
    """

    def probe() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            return sock.connect_ex((host, port)) == 0

    return _wait(probe, f"{host}:{port} to accept connections", timeout, process)


def wait_for_http(url: str, *, timeout: float, process: ManagedProcess | None = None) -> float:
    """Wait until ``url`` gives any HTTP response (an error status counts as "up").

    An HTTP answer, unlike an open port, shows the application behind the socket is
    serving: gunicorn accepts connections before its worker has imported the code.
    Proxies from the environment are ignored; these URLs are always local.

    Raises:
        ProcessStartError: the deadline passed or the process died first.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def probe() -> bool:
        try:
            with opener.open(url, timeout=1.0) as response:
                response.read()
        except urllib.error.HTTPError:
            return True
        except (OSError, urllib.error.URLError):
            return False
        return True

    return _wait(probe, f"{url} to answer", timeout, process)


def _wait(probe: Callable[[], bool], what: str, timeout: float, process: ManagedProcess | None) -> float:
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if probe():
            return time.monotonic() - started
        if process is not None and not process.running():
            raise ProcessStartError(
                f"{process.name} exited with status {process.popen.returncode} while waiting for {what}; "
                f"log {process.log_path}:\n{process.log_tail()}"
            )
        if time.monotonic() >= deadline:
            tail = f"; log {process.log_path}:\n{process.log_tail()}" if process is not None else ""
            raise ProcessStartError(f"gave up after {timeout:.1f}s waiting for {what}{tail}")
        time.sleep(_POLL_SECONDS)


@contextlib.contextmanager
def stopping_on_error(process: ManagedProcess) -> Iterator[ManagedProcess]:
    """Stop ``process`` if the block raises (a failed readiness wait, a Ctrl-C), then re-raise.

    Used by the ``start_*`` helpers between starting a process and handing it to the
    caller, the one window where nobody else owns it yet.
    """
    try:
        yield process
    except BaseException:
        process.stop()
        raise
