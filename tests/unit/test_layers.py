"""What may import what: the deployed code never reaches into the local cloud, the tests or the benchmark.

Checked on the source (every import statement, at any depth, lazy ones included), so a
stray ``from localcloud import …`` fails here and not in a deployed function, where those
folders do not exist (deploy/stage.py ships functions/ and shared/ only).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NEVER_DEPLOYED = ("localcloud", "tests", "bench", "deploy")


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("folder", ["shared", "functions"])
def test_deployed_code_imports_nothing_that_is_not_deployed(folder: str) -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for module in imported_modules(path)
        if module.split(".")[0] in NEVER_DEPLOYED
    }
    assert not offenders, sorted(offenders)


def test_shared_never_imports_a_function_entry_point() -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / "shared").rglob("*.py"))
        for module in imported_modules(path)
        if module.split(".")[0] == "functions"
    }
    assert not offenders, sorted(offenders)


def test_the_check_sees_lazy_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from localcloud.stack import LocalCloud\n    import tests.fixtures\n")
    assert imported_modules(sample) == {"localcloud.stack", "tests.fixtures"}
