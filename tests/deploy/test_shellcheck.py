"""Shell scripts pass shellcheck; cloudbuild.yaml parses and refers only to what exists.

The shell in cloudbuild.yaml is checked as Cloud Build will run it: with the build's
substitutions applied (``$$`` becoming ``$``). The deploy step is checked end to end
offline: its arguments, substituted, are given to the deploy entry as a dry run.
"""

from __future__ import annotations

import io
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.deploy import main as deploy_main
from deploy.settings import load

REPO_ROOT = Path(__file__).resolve().parents[2]
CLOUDBUILD = REPO_ROOT / "cloudbuild.yaml"
SKIPPED_DIRS = {
    ".git",
    ".venv",
    "build",
    "node_modules",
    "__pycache__",
    ".localcloud",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
}
#: Cloud Build's built-in substitutions, as a build in project "ci-project-1" would see them.
BUILT_INS = {
    "PROJECT_ID": "ci-project-1",
    "PROJECT_NUMBER": "123456789012",
    "BUILD_ID": "0000",
    "LOCATION": "global",
    "COMMIT_SHA": "0" * 40,
    "SHORT_SHA": "0000000",
    "BRANCH_NAME": "main",
    "REPO_NAME": "dataloop-gar",
}
SUBSTITUTION = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def shellcheck() -> str:
    executable = shutil.which("shellcheck")
    if executable is None:
        raise AssertionError("shellcheck is not installed: apt-get install -y shellcheck")
    return executable


def shell_scripts() -> list[Path]:
    found = []
    for path in sorted(REPO_ROOT.rglob("*")):
        if not path.is_file() or SKIPPED_DIRS & set(path.relative_to(REPO_ROOT).parts):
            continue
        if path.suffix == ".sh":
            found.append(path)
            continue
        try:
            first = path.open("rb").readline()
        except OSError:
            continue
        if re.match(rb"#!\s*/(usr/)?bin/(env\s+)?(ba|da|k)?sh\b", first):
            found.append(path)
    return found


@pytest.fixture(scope="module")
def build() -> dict[str, Any]:
    return yaml.safe_load(CLOUDBUILD.read_text())


def substitute(text: str, values: dict[str, str]) -> str:
    """Cloud Build's substitution: ``$VAR``/``${VAR}`` by value, then ``$$`` to ``$``."""
    escaped = text.replace("$$", "\0")

    def value(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        if name not in values:
            raise AssertionError(f"cloudbuild.yaml uses ${name}, which no substitution defines")
        return values[name]

    return SUBSTITUTION.sub(value, escaped).replace("\0", "$")


def test_every_shell_script_passes_shellcheck() -> None:
    scripts = shell_scripts()
    assert REPO_ROOT / "deploy" / "local" / "system-packages.sh" in scripts
    assert REPO_ROOT / ".ci" / "run" in scripts
    result = subprocess.run(
        [shellcheck(), "--severity=style", *map(str, scripts)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_shell_in_cloudbuild_passes_shellcheck(build: dict[str, Any]) -> None:
    values = {**BUILT_INS, **build["substitutions"]}
    scripts = [
        step["args"][1] for step in build["steps"] if step.get("entrypoint") == "bash" and step["args"][0] == "-c"
    ]
    assert scripts, "the test step runs a bash script"
    for script in scripts:
        text = "#!/usr/bin/env bash\n" + substitute(script, values)
        result = subprocess.run(
            [shellcheck(), "--severity=style", "-"], input=text, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + text


def test_shellcheck_is_not_a_rubber_stamp() -> None:
    result = subprocess.run(
        [shellcheck(), "-"], input="#!/usr/bin/env bash\nrm -rf $1/\n", capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "SC2086" in result.stdout


def test_cloudbuild_parses_and_its_steps_test_then_deploy(build: dict[str, Any]) -> None:
    assert [step["id"] for step in build["steps"]] == ["test", "deploy"]
    assert all(not step.get("waitFor") for step in build["steps"])  # in order: no deploy without green tests
    assert set(build["substitutions"]) == {"_REGION", "_CONFIG"}
    assert all(key.startswith("_") for key in build["substitutions"])
    assert re.fullmatch(r"\d+s", build["timeout"])
    test_script = build["steps"][0]["args"][1]
    assert "make lint test" in test_script
    makefile = (REPO_ROOT / "Makefile").read_text()
    for target in ("lint", "test"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target


def test_every_step_installs_gcloud_alpha_before_anything_uses_it(build: dict[str, Any]) -> None:
    """The image has `beta` but not `alpha`, and the policies' commands and their parse tests need it."""
    for step in build["steps"]:
        lines = [line.strip() for line in step["args"][1].splitlines()]
        assert step["entrypoint"] == "bash" and lines[0] == "set -euo pipefail", step["id"]
        assert lines[1] == "gcloud components install alpha --quiet", step["id"]


def test_the_deploy_step_runs_the_deploy_entry_with_files_that_exist(build: dict[str, Any]) -> None:
    step = build["steps"][1]
    values = {**BUILT_INS, **build["substitutions"]}
    (command,) = [line for line in step["args"][1].splitlines() if "deploy/deploy.py" in line]
    words = shlex.split(substitute(command, values))
    assert words[:2] == ["exec", "python3"]
    args = words[2:]
    assert (REPO_ROOT / args[0]).is_file() and args[0] == "deploy/deploy.py"
    config = REPO_ROOT / args[args.index("--config") + 1]
    assert config.is_file()
    settings = load(config, project=BUILT_INS["PROJECT_ID"], region=build["substitutions"]["_REGION"])
    assert settings.project == "ci-project-1"
    out = io.StringIO()
    assert deploy_main([*args[1:], "--dry-run"], out=out) == 0
    assert "gcloud functions deploy dataloop-gar-on-push" in out.getvalue()
    assert "--project=ci-project-1" in out.getvalue()
