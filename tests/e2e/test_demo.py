"""The README's demo command, run as a newcomer runs it: ``python -m localcloud demo``.

It starts its own local cloud, so this test needs none of the session fixtures; it checks
the exit status, that every numbered step and the summary were printed, that the demo
says it left nothing running, and that no key material reached the screen. The last
steps are checked by what the operator's own commands printed once the current key was
deleted by hand: a ``status`` row saying the push failed, its exit 5, and the refusal
among the ``history`` lines. The demo runs once for the whole module: it takes a while.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from localcloud.functions import REPO_ROOT

pytestmark = pytest.mark.e2e

STEPS = 9


@pytest.fixture(scope="module")
def demo() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "localcloud", "demo"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )


def test_the_demo_passes_every_step_and_stops_everything(demo: subprocess.CompletedProcess[str]) -> None:
    output = demo.stdout + demo.stderr
    assert demo.returncode == 0, output
    for number in range(1, STEPS + 1):
        assert f"[{number}/{STEPS}]" in output
    summary = output[output.index("Summary") :]
    assert len(re.findall(r"^\s+\d+\s+.+\s+passed\s+\d+\.\d s$", summary, flags=re.MULTILINE)) == STEPS, summary
    assert "all steps passed" in summary
    assert re.search(r"stopped \d+ processes; all \d+ ports closed", output)
    assert "PRIVATE KEY" not in output and '"private_key"' not in output


def test_the_demo_ends_with_what_on_call_sees_of_a_deleted_key(demo: subprocess.CompletedProcess[str]) -> None:
    output = demo.stdout + demo.stderr
    on_call = output[output.index(f"[8/{STEPS}]") : output.index("Summary")]
    status, history = on_call.split(f"[9/{STEPS}]")
    assert re.search(r"^\s+\$ PUBSUB_EMULATOR_HOST=\S+ python -m shared\.cli status --wait ", status, re.MULTILINE)
    assert re.search(r"^\s+team-a\s+active\s.*\sFAILED credentials-refused since ", status, re.MULTILINE), status
    assert re.search(r"^\s+-> exit 5 after ", status, re.MULTILINE), status
    compliance = (
        r"^\s+CIS GCP Foundations Benchmark, recommendation 1\.7 .*: compliant; 1 account\(s\) checked, 1 key\(s\)"
    )
    assert re.search(compliance, status, re.MULTILINE), status  # the key left is the previous one, ours
    assert re.search(r"^\s+\$ python -m shared\.cli history --name team-a --since 1h ", history, re.MULTILINE)
    refused = r"^\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+reference-test\s+team-a\s+failed\s+credentials-refused\s"
    assert re.search(refused, history, re.MULTILINE), history
