"""``make stack`` (``python -m localcloud up``): it stays up, its example commands work, and it stops clean.

The test reads what a person would read: the endpoints and the commands printed under
"Try". It runs the printed ``skopeo copy`` unchanged and waits for the verdict line the
console prints from the results topic, then sends SIGTERM (what a terminal's Ctrl-C or a
supervisor does) and checks that every printed endpoint is closed afterwards.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localcloud.functions import REPO_ROOT
from localcloud.stack import all_stopped

pytestmark = pytest.mark.e2e


def wait_for_text(path: Path, pattern: str, process: subprocess.Popen[bytes], timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace")
        found = re.search(pattern, text, flags=re.MULTILINE)
        if found:
            return found
        if process.poll() is not None or time.monotonic() >= deadline:
            raise AssertionError(f"no {pattern!r} in the output (exit {process.poll()}):\n{text}")
        time.sleep(0.1)


def run_printed(text: str, marker: str, variable: str) -> subprocess.CompletedProcess[str]:
    """The printed ``VARIABLE=value command …`` line holding ``marker``, run as a person pastes it."""
    line = next(line.strip() for line in text.splitlines() if marker in line)
    assignment, *command = shlex.split(line)
    name, _, value = assignment.partition("=")
    assert name == variable, line
    return subprocess.run(
        command, cwd=REPO_ROOT, env={**os.environ, name: value}, capture_output=True, text=True, timeout=60
    )


def test_up_prints_working_commands_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    output = tmp_path / "up.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "localcloud", "up", "--workdir", str(tmp_path / "cloud")],
            cwd=REPO_ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_text(output, r"Results appear below", process, timeout=60)
        text = output.read_text()
        ports = {f"port {n}": int(p) for n, p in enumerate(re.findall(r"127\.0\.0\.1:(\d+)", text.split("Seeded")[0]))}
        assert len(ports) >= 10, text
        push = next(line.strip() for line in text.splitlines() if line.strip().startswith("skopeo "))
        done = subprocess.run(shlex.split(push), capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        # Nothing is provisioned yet, so on_push reports the image as not covered.
        wait_for_text(output, r"^\d\d:\d\d:\d\d reference-test: uncovered: ", process, timeout=30)
        # The printed history command reads the same verdict back from the functions' logs.
        shown = run_printed(text, " -m shared.cli history ", "LOGGING_API_ENDPOINT")
        assert shown.returncode == 0, shown.stderr
        assert re.search(r"^\S+ \S+\s+reference-test\s+-\s+uncovered\s+-\s+", shown.stdout, re.MULTILINE), shown
        # The printed status command answers, with nothing provisioned yet: nothing needs anyone.
        shown = run_printed(text, " -m shared.cli status ", "PUBSUB_EMULATOR_HOST")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert shown.stdout.strip() == "no integrations are provisioned", shown.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=30)
    assert returncode == 0
    assert output.read_text().rstrip().endswith("Stopped.")
    assert all_stopped(ports, []) == []
