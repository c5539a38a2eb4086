"""What may import what: the layers of ``shared/``, and deployed code never reaching into the rest.

Checked on the source (every import statement, at any depth, lazy and ``TYPE_CHECKING``
ones included), so a stray ``from localcloud import …`` fails here and not in a deployed
function, where those folders do not exist (deploy/stage.py ships functions/ and shared/
only), and a workflow that reaches for an adapter fails here and not in review.

The layers, each importing only from those listed for it:

- ``shared.core``: errors, configuration, logging, redaction;
- ``shared.model``: the domain's values and rules, on top of core;
- ``shared.ports``: the interfaces workflows call, typed with the model;
- ``shared.workflows``: what the system does, through the ports;
- ``shared.adapters``: the outside world's clients, producing model values;
- ``shared.app`` and ``shared.cli``: the composition root, which may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NEVER_DEPLOYED = ("localcloud", "tests", "bench", "deploy")
MAY_IMPORT = {
    "core": {"core"},
    "model": {"core", "model"},
    "ports": {"core", "model"},
    "workflows": {"core", "model", "ports", "workflows"},
    "adapters": {"core", "model", "ports", "adapters"},
}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "shared":  # ``from shared import x`` imports the module shared.x
                found.update(f"shared.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
    return found


def layer(module: str) -> str | None:
    """``shared.model.keys`` → ``model``; ``shared.ports`` → ``ports``; outside shared → None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "shared" and len(parts) > 1 else None


def shared_modules() -> list[tuple[Path, str]]:
    return [
        (path, ".".join(path.relative_to(ROOT).with_suffix("").parts))
        for path in sorted((ROOT / "shared").rglob("*.py"))
    ]


def test_every_module_of_shared_sits_in_a_layer() -> None:
    known = set(MAY_IMPORT) | {"app", "cli", "__init__"}
    assert not [name for _, name in shared_modules() if layer(name) not in known]


@pytest.mark.parametrize("own", sorted(MAY_IMPORT))
def test_each_layer_imports_only_the_layers_below_it(own: str) -> None:
    offenders = sorted(
        f"{path.relative_to(ROOT)}: {module}"
        for path, name in shared_modules()
        if layer(name) == own
        for module in imported_modules(path)
        if layer(module) is not None and layer(module) not in MAY_IMPORT[own]
    )
    assert not offenders, offenders


def test_the_layer_check_sees_a_workflow_reaching_for_an_adapter(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from shared.adapters.registry import X\n"
        "from shared import legacy\n"
    )
    found = imported_modules(sample)
    assert found == {"typing", "shared.adapters.registry", "shared.legacy"}
    assert {layer(m) for m in found if layer(m)} - MAY_IMPORT["workflows"] == {"adapters", "legacy"}


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


def test_no_package_of_shared_imports_anything_on_its_own() -> None:
    """A package's ``__init__`` runs on import of any module in it: one that imported its
    modules would make every cold start pay for all of them."""
    busy = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "shared").rglob("__init__.py")
        if any(not isinstance(node, ast.Expr) for node in ast.parse(path.read_text(encoding="utf-8")).body)
    )
    assert not busy, busy
