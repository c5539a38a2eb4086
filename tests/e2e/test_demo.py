"""The README's demo command, run as a newcomer runs it: ``python -m localcloud demo``.

It starts its own local cloud, so this test needs none of the session fixtures; it checks
the exit status, that every numbered step and the summary were printed, that the demo
says it left nothing running, and that no key material reached the screen.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from localcloud.functions import REPO_ROOT

pytestmark = pytest.mark.e2e


def test_the_demo_passes_every_step_and_stops_everything() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "localcloud", "demo"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    for number in range(1, 7):
        assert f"[{number}/6]" in output
    summary = output[output.index("Summary") :]
    assert len(re.findall(r"^\s+\d\s+.+\s+passed\s+\d+\.\d s$", summary, flags=re.MULTILINE)) == 6, summary
    assert "all steps passed" in summary
    assert re.search(r"stopped \d+ processes; all \d+ ports closed", output)
    assert "PRIVATE KEY" not in output and '"private_key"' not in output
