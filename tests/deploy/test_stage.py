"""The staged upload of each function imports on its own, and holds nothing it should not.

The import runs in a separate interpreter started with ``-I`` (no current directory, no
user site, no PYTHON* variables), whose ``sys.path`` is trimmed to the standard library
and site-packages; the function is then loaded the way the Functions Framework loads it in
production (``create_app`` with the staged ``main.py``), which is what puts the staged
directory on the path. If the repository were still importable, the test would not prove
anything, so it checks that too.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import stage
from deploy.settings import FUNCTIONS

REPO_ROOT = Path(__file__).resolve().parents[2]
SPECS = {spec.key: spec for spec in FUNCTIONS}

ISOLATED_IMPORT = r"""
import json, os, sys, sysconfig
staged, repo = sys.argv[1], sys.argv[2]
keep = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
sys.path[:] = [p for p in sys.path if p and (p in keep or p.endswith(".zip") or "lib-dynload" in p)]
# The virtualenv may live inside the repository (make test creates .venv there): its
# site-packages is the installed runtime, not the repository's own packages.
def in_repo(p):
    return (p == repo or p.startswith(repo + os.sep)) and not p.startswith(sys.prefix + os.sep)
assert not any(in_repo(p) for p in sys.path), sys.path
import functions_framework
app = functions_framework.create_app(target=sys.argv[3], source=os.path.join(staged, "main.py"),
                                     signature_type="cloudevent")
import shared, main
print(json.dumps({
    "shared": shared.__file__,
    "main": main.__file__,
    "target_callable": callable(getattr(main, sys.argv[3])),
    "app": type(app).__name__,
    "forbidden": sorted(m for m in sys.modules if m.split(".")[0] in ("localcloud", "tests")),
    "path_has_repo": any(in_repo(p) for p in sys.path),
}))
"""


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return stage.stage_all(tmp_path_factory.mktemp("staged"))


def relative_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_the_stager_knows_every_function_and_its_entry_point() -> None:
    assert tuple(SPECS) == stage.FUNCTION_KEYS
    for key, spec in SPECS.items():
        tree = ast.parse((REPO_ROOT / spec.source / "main.py").read_text())
        cloud_event_functions = {
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef)
            and any(ast.unparse(d) == "functions_framework.cloud_event" for d in node.decorator_list)
        }
        assert cloud_event_functions == {spec.entry_point}, key


@pytest.mark.parametrize("key", list(SPECS))
def test_the_staged_source_is_main_shared_and_the_runtime_requirements(key: str, staged: dict[str, Path]) -> None:
    root = staged[key]
    files = relative_files(root)
    assert {"main.py", "requirements.txt", ".gcloudignore", "shared/__init__.py"} <= files
    assert (root / "main.py").read_bytes() == (REPO_ROOT / "functions" / key / "main.py").read_bytes()
    assert (root / "requirements.txt").read_text() == (REPO_ROOT / "requirements.txt").read_text()
    shared_sources = {
        f"shared/{p.relative_to(REPO_ROOT / 'shared')}"
        for p in (REPO_ROOT / "shared").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert shared_sources <= files
    for name in files:
        parts = Path(name).parts
        assert not {"tests", "localcloud", "__pycache__"} & set(parts), name
        assert not name.endswith(".pyc"), name
    assert "functions-framework" in (root / "requirements.txt").read_text()
    assert "__pycache__/" in (root / ".gcloudignore").read_text()


@pytest.mark.parametrize("key", list(SPECS))
def test_the_staged_function_imports_in_isolation(key: str, staged: dict[str, Path], tmp_path: Path) -> None:
    root = staged[key]
    result = subprocess.run(
        [sys.executable, "-I", "-c", ISOLATED_IMPORT, str(root), str(REPO_ROOT), SPECS[key].entry_point],
        cwd=root,
        env={"GCP_PROJECT": "stage-test-project", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["shared"].startswith(str(root) + "/")
    assert facts["main"] == str(root / "main.py")
    assert facts["target_callable"] is True
    assert facts["app"] == "Flask"
    assert facts["forbidden"] == []
    assert facts["path_has_repo"] is False


def test_the_isolated_import_would_notice_a_missing_module(tmp_path: Path) -> None:
    """The isolation is real: staged code needing the repository's other packages fails."""
    root = stage.stage_function("on_push", tmp_path / "on_push")
    (root / "main.py").write_text((root / "main.py").read_text() + "\nimport deploy.settings\n")
    result = subprocess.run(
        [sys.executable, "-I", "-c", ISOLATED_IMPORT, str(root), str(REPO_ROOT), "on_push"],
        cwd=root,
        env={"GCP_PROJECT": "stage-test-project", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "No module named 'deploy'" in result.stderr


def fake_repo(root: Path, main: str, requirements: str = "requests>=2\n") -> Path:
    (root / "functions" / "f").mkdir(parents=True)
    (root / "functions" / "f" / "main.py").write_text(main)
    (root / "shared").mkdir()
    (root / "shared" / "__init__.py").write_text("")
    (root / "requirements.txt").write_text(requirements)
    return root


def test_staging_refuses_code_that_imports_the_local_cloud_or_the_tests(tmp_path: Path) -> None:
    repo = fake_repo(tmp_path / "repo", "from localcloud import wsgi\nimport tests.fixtures\n")
    with pytest.raises(stage.StageError, match=r"main.py: localcloud[\s\S]*main.py: tests.fixtures"):
        stage.stage_function("f", tmp_path / "out", root=repo)


def test_staging_refuses_requirements_that_point_at_files(tmp_path: Path) -> None:
    repo = fake_repo(tmp_path / "repo", "x = 1\n", requirements="requests\n-r requirements-dev.txt\n")
    with pytest.raises(stage.StageError, match=r"requirements.txt:2: '-r requirements-dev.txt'"):
        stage.stage_function("f", tmp_path / "out", root=repo)


def test_restaging_replaces_its_own_output_but_never_a_foreign_directory(tmp_path: Path) -> None:
    repo = fake_repo(tmp_path / "repo", "x = 1\n")
    out = stage.stage_function("f", tmp_path / "out", root=repo)
    (out / "stale.py").write_text("left over from an earlier staging")
    stage.stage_function("f", out, root=repo)
    assert not (out / "stale.py").exists()
    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(stage.StageError, match=r"was not made by deploy/stage\.py"):
        stage.stage_function("f", foreign, root=repo)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_stage_command_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "deploy/stage.py", "--out", str(tmp_path), "rotate"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"rotate: {tmp_path / 'rotate'}"
    assert (tmp_path / "rotate" / "main.py").is_file()
