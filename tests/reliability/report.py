"""``python -m tests.reliability.report``: run the reliability suite, then print its table.

The table is the reliability evidence in figures, from this very run: per scenario, the
tests, the inputs tried (generated messages, deliveries, requests, injected faults, lines
scanned), the failures, the pulls made with the credential Dataloop holds and how many of
those were lost, and the secrets found in what the system wrote. ``--markdown`` prints it
for the README; ``--with-wire-and-e2e`` runs the wire and end-to-end suites in the same
session first, so that the final scan of every function log covers their functions too.
Anything after ``--`` goes to pytest (e.g. ``-- -x -k faults``). The exit code is pytest's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.reliability.figures import FIGURES_ENV, from_json, render

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.report", description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "--with-wire-and-e2e",
        action="store_true",
        help="also run tests/wire and tests/e2e in the same session (the log scan then covers them)",
    )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)

    suites = [REPO_ROOT / "tests" / "wire", REPO_ROOT / "tests" / "e2e"] if args.with_wire_and_e2e else []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        figures = Path(tmp) / "figures.json"
        os.environ[FIGURES_ENV] = str(figures)
        try:
            code = pytest.main(
                [
                    *map(str, suites),
                    str(HERE),
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "--rootdir",
                    str(REPO_ROOT),
                    *args.pytest_args,
                ]
            )
        finally:
            del os.environ[FIGURES_ENV]
        rows, tests = from_json(figures) if figures.exists() else ([], 0)
    print()
    print(render(rows, tests=tests, markdown=args.markdown))
    print(f"\n{len(rows)} scenarios in {time.monotonic() - started:.0f} s; pytest exit code {int(code)}")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
