"""Stage each function's upload: its ``main.py``, a copy of ``shared/``, the runtime requirements.

A gen2 Python function is built from one uploaded directory whose root holds ``main.py``
and ``requirements.txt``, and everything it imports must be in that upload. Google's
Python buildpack can also be pointed at a file deeper in a bigger upload
(``GOOGLE_FUNCTION_SOURCE``), but whether ``shared/`` is then importable depends on how the
framework sets ``sys.path`` — not something a deployment should find out in production.
A staged directory per function is certain: it is exactly what runs, and a test imports it
in isolation (tests/deploy/test_stage.py).

Nothing from the local cloud or the tests is copied, and staging fails if the staged code
imports either, so a stand-in can never end up deployed.

    python deploy/stage.py [--out build/functions] [on_push requests rotate]
"""

from __future__ import annotations

import argparse
import ast
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "build" / "functions"
FUNCTION_KEYS = ("on_push", "requests", "rotate")
#: Directories and files never uploaded, wherever they appear.
EXCLUDED_NAMES = frozenset({"__pycache__", "tests", "localcloud", ".pytest_cache", ".ruff_cache"})
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
#: Top-level packages of this repository that must never be imported by deployed code.
FORBIDDEN_IMPORTS = frozenset({"localcloud", "tests"})
#: Marks a directory as ours, so that re-staging may delete it (and nothing else).
MARKER = ".dataloop-gar-staged"
GCLOUDIGNORE = """\
# Written by deploy/stage.py. This directory is uploaded as it is; only bytecode stays behind.
# (With this file present, gcloud does not fall back to .gitignore.)
.gcloudignore
.dataloop-gar-staged
__pycache__/
*.pyc
"""


class StageError(RuntimeError):
    """The function cannot be staged as it stands; the message says why."""


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in EXCLUDED_NAMES or n.endswith(EXCLUDED_SUFFIXES)}


def _check_requirements(path: Path) -> str:
    """The requirements text, if it can be installed from the upload alone."""
    text = path.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if entry.startswith(("-r", "-c", "-e", "--requirement", "--constraint", "--editable")) or entry.startswith(
            (".", "/", "file:")
        ):
            raise StageError(f"{path}:{number}: {entry!r} refers to a file that is not uploaded; list packages only")
    return text


def _forbidden_imports(root: Path) -> list[str]:
    """``file: module`` for every import of the local cloud or the tests in ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            found += [f"{path.relative_to(root)}: {m}" for m in modules if m.split(".", 1)[0] in FORBIDDEN_IMPORTS]
    return found


def _clear(destination: Path) -> None:
    if not destination.exists():
        return
    if not (destination / MARKER).exists() and any(destination.iterdir()):
        raise StageError(f"{destination} exists and was not made by deploy/stage.py; refusing to delete it")
    shutil.rmtree(destination)


def stage_function(key: str, destination: Path, *, root: Path = REPO_ROOT) -> Path:
    """Write the upload of function ``key`` to ``destination`` (replacing an earlier staging).

    Raises:
        StageError: the function has no ``main.py``, the requirements point at files, or
            the staged code imports the local cloud or the tests.
    """
    source = root / "functions" / key
    if not (source / "main.py").is_file():
        raise StageError(f"{source}/main.py not found: is {key!r} a function of this repository?")
    requirements = _check_requirements(root / "requirements.txt")
    _clear(destination)
    shutil.copytree(source, destination, ignore=_ignore)
    if (destination / "shared").exists():
        raise StageError(f"{source} has its own shared/; it would be overwritten")
    shutil.copytree(root / "shared", destination / "shared", ignore=_ignore)
    (destination / "requirements.txt").write_text(requirements, encoding="utf-8")
    (destination / ".gcloudignore").write_text(GCLOUDIGNORE, encoding="utf-8")
    (destination / MARKER).write_text(f"staged from {root} for {key}\n", encoding="utf-8")
    forbidden = _forbidden_imports(destination)
    if forbidden:
        raise StageError("staged code imports what is never deployed:\n  " + "\n  ".join(forbidden))
    return destination


def stage_all(
    out: Path = DEFAULT_OUT, keys: Iterable[str] = FUNCTION_KEYS, *, root: Path = REPO_ROOT
) -> dict[str, Path]:
    """Stage every function in ``keys`` under ``out/<key>``."""
    return {key: stage_function(key, out / key, root=root) for key in keys}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python deploy/stage.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where to stage (default {DEFAULT_OUT})")
    parser.add_argument("keys", nargs="*", default=list(FUNCTION_KEYS), choices=FUNCTION_KEYS, metavar="FUNCTION")
    args = parser.parse_args(argv)
    try:
        for key, path in stage_all(args.out, args.keys).items():
            print(f"{key}: {path}")
    except StageError as exc:
        print(f"stage: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
