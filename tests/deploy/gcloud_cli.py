"""The installed gcloud, run offline: does it accept a command line?

gcloud parses and validates every flag and value before it looks for credentials. With an
empty configuration directory, prompts off and the GCE metadata server out of the
question, a command with a bad flag or value exits 2 (or 1 with a validation message),
while a well-formed one gets as far as "You do not currently have an active account
selected" and stops there, having sent nothing anywhere. No network is needed to get that
far; a proxy on a closed port makes sure nothing is sent even on a machine that has
credentials lying around (Cloud Build's metadata server, for one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

DRIVER = Path(__file__).with_name("gcloud_parse_driver.py")
#: The message of a command that parsed and then needed credentials.
NO_CREDENTIALS = "You do not currently have an active account selected"
PARSE_ERRORS = ("unrecognized arguments", "argument --", "Invalid value for", "is required but was not provided")


@dataclass(frozen=True)
class Installation:
    executable: str
    sdk_root: str
    python: str


@dataclass(frozen=True)
class Verdict:
    argv: tuple[str, ...]
    exit: int | str
    output: str

    @property
    def parsed(self) -> bool:
        """Parsed, validated, and stopped only for lack of credentials."""
        return self.exit == 1 and NO_CREDENTIALS in self.output and not any(e in self.output for e in PARSE_ERRORS)


def offline_env(config_dir: Path) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(config_dir),
        "LANG": "C.UTF-8",
        "CLOUDSDK_CONFIG": str(config_dir),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        # Nothing may leave the machine, whatever credentials it might find.
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
    }
    if "CLOUDSDK_PYTHON" in os.environ:
        env["CLOUDSDK_PYTHON"] = os.environ["CLOUDSDK_PYTHON"]
    return env


def installation(config_dir: Path) -> Installation:
    """Where gcloud lives and which Python it runs on (gcloud's own answer)."""
    executable = shutil.which("gcloud")
    if executable is None:
        raise AssertionError("gcloud is not installed: the deploy tests check commands against its parser")
    info = subprocess.run(
        [executable, "info", "--format=json(basic.python_location,installation.sdk_root)"],
        capture_output=True,
        text=True,
        env=offline_env(config_dir),
        timeout=60,
        check=True,
    )
    data = json.loads(info.stdout)
    return Installation(executable, data["installation"]["sdk_root"], data["basic"]["python_location"])


def run_one(install: Installation, argv: Sequence[str], config_dir: Path) -> Verdict:
    """One command through the real ``gcloud`` executable (slow: for calibration)."""
    result = subprocess.run(
        [install.executable, *argv],
        capture_output=True,
        text=True,
        env=offline_env(config_dir),
        timeout=60,
        check=False,
    )
    return Verdict(tuple(argv), result.returncode, result.stdout + result.stderr)


def run_many(install: Installation, commands: Sequence[Sequence[str]], *, workers: int = 2) -> list[Verdict]:
    """Every command through gcloud's CLI, a few processes each executing a share of them."""
    commands = [list(argv) for argv in commands]
    chunks = [commands[i::workers] for i in range(workers) if commands[i::workers]]

    def run_chunk(chunk: list[list[str]]) -> list[Verdict]:
        with tempfile.TemporaryDirectory(prefix="gcloud-offline-") as config_dir:
            result = subprocess.run(
                [install.python, str(DRIVER), install.sdk_root],
                input=json.dumps(chunk),
                capture_output=True,
                text=True,
                env=offline_env(Path(config_dir)),
                timeout=120,
                check=False,
            )
        if result.returncode != 0:
            raise AssertionError(f"the gcloud parse driver failed:\n{result.stderr[-3000:]}")
        return [Verdict(tuple(r["argv"]), r["exit"], r["output"]) for r in json.loads(result.stdout)]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = [verdict for chunk in pool.map(run_chunk, chunks) for verdict in chunk]
    order = {tuple(argv): i for i, argv in enumerate(commands)}
    return sorted(results, key=lambda v: order[v.argv])
