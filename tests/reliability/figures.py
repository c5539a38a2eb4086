"""The figures behind the reliability table, gathered while the reliability tests run.

A claim such as "no pull was lost" is only as good as the number of pulls it rests on, so
every test here *records* what it tried, per scenario: how many inputs (generated
messages, redeliveries, concurrent requests, injected faults), how many pulls it made with
the credential Dataloop holds and how many of those failed, how many secrets its scanner
found. This module is a pytest plugin (loaded by ``tests/reliability/conftest.py``): it
attributes a failed test to the scenarios the test recorded, and at the end of the run
either prints the table (a normal ``pytest`` run) or writes the figures as JSON for
``python -m tests.reliability.report`` (when ``RELIABILITY_FIGURES`` names a file).

Tests call :func:`record` directly rather than through a fixture, because hypothesis runs
one test function many times and function-scoped fixtures do not reset between examples.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

#: Set by ``tests/reliability/report.py``: write the figures here instead of printing them.
FIGURES_ENV = "RELIABILITY_FIGURES"
COLUMNS = ("scenario", "tests", "inputs tried", "failures", "pulls made", "pulls lost", "leaks found")


@dataclass
class Row:
    """One scenario's figures."""

    scenario: str
    tests: int = 0
    inputs: int = 0
    failures: int = 0
    pulls: int = 0
    pulls_lost: int = 0
    leaks: int = 0

    def cells(self) -> tuple[str, ...]:
        return (
            self.scenario,
            str(self.tests),
            str(self.inputs),
            str(self.failures),
            str(self.pulls),
            str(self.pulls_lost),
            str(self.leaks),
        )


@dataclass
class Ledger:
    """Figures per scenario, and which scenarios each test touched (to charge its failure to)."""

    rows: dict[str, Row] = field(default_factory=dict)
    tests: set[str] = field(default_factory=set)
    current: str | None = None
    _touched: dict[str, set[str]] = field(default_factory=dict)
    _failed: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, scenario: str, *, inputs: int = 0, pulls: int = 0, pulls_lost: int = 0, leaks: int = 0) -> None:
        with self._lock:
            row = self.rows.setdefault(scenario, Row(scenario))
            row.inputs += inputs
            row.pulls += pulls
            row.pulls_lost += pulls_lost
            row.leaks += leaks
            if self.current is not None:
                self._touched.setdefault(self.current, set()).add(scenario)

    def begin(self, nodeid: str) -> None:
        self.current = nodeid

    def failed(self, nodeid: str) -> None:
        self._failed.add(nodeid)

    def finish(self, nodeid: str, fallback: str) -> None:
        """Charge the test to its scenarios (or to ``fallback`` if it failed before recording any)."""
        with self._lock:
            scenarios = self._touched.pop(nodeid, set())
            failed = nodeid in self._failed
            if not scenarios:
                if not failed:
                    self.current = None
                    return
                scenarios = {fallback}
            self.tests.add(nodeid)
            for scenario in scenarios:
                row = self.rows.setdefault(scenario, Row(scenario))
                row.tests += 1
                row.failures += int(failed)
            self.current = None

    def sorted_rows(self) -> list[Row]:
        return sorted(self.rows.values(), key=lambda r: r.scenario)


LEDGER = Ledger()


def record(scenario: str, *, inputs: int = 0, pulls: int = 0, pulls_lost: int = 0, leaks: int = 0) -> None:
    """Add figures to ``scenario`` (names read ``area: what``, e.g. ``faults: Dataloop 429``)."""
    LEDGER.record(scenario, inputs=inputs, pulls=pulls, pulls_lost=pulls_lost, leaks=leaks)


def totals(rows: Iterable[Row], tests: int | None = None) -> Row:
    """The sum of every column; ``tests`` counts each test once (a test can feed several rows)."""
    total = Row("total")
    for row in rows:
        total.tests += row.tests
        total.inputs += row.inputs
        total.failures += row.failures
        total.pulls += row.pulls
        total.pulls_lost += row.pulls_lost
        total.leaks += row.leaks
    if tests is not None:
        total.tests = tests
    return total


def render(rows: list[Row], *, tests: int | None = None, markdown: bool = False) -> str:
    """The table, as aligned text or as a Markdown table (for the README)."""
    body = [row.cells() for row in rows] + [totals(rows, tests).cells()]
    if markdown:
        lines = [
            "| " + " | ".join(COLUMNS) + " |",
            "|" + "|".join("---" if i == 0 else "---:" for i in range(len(COLUMNS))) + "|",
        ]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(c[i]) for c in [COLUMNS, *body]) for i in range(len(COLUMNS))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(COLUMNS), rule, *(line(c) for c in body[:-1]), rule, line(body[-1])])


def from_json(path: Path) -> tuple[list[Row], int]:
    """The rows and the number of distinct tests, as :func:`pytest_sessionfinish` wrote them."""
    document = json.loads(path.read_text())
    return [Row(**item) for item in document["rows"]], int(document["tests"])


# -- pytest hooks (re-exported by tests/reliability/conftest.py) ------------------------------------


def _fallback(item: pytest.Item) -> str:
    module = Path(str(item.fspath)).stem.removeprefix("test_")
    return f"{module}: {getattr(item, 'originalname', item.name)}"


def pytest_runtest_setup(item: pytest.Item) -> None:
    LEDGER.begin(item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        LEDGER.failed(item.nodeid)
    if report.when == "teardown":
        LEDGER.finish(item.nodeid, _fallback(item))


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get(FIGURES_ENV)
    if target:
        rows = [asdict(r) for r in LEDGER.sorted_rows()]
        Path(target).write_text(json.dumps({"rows": rows, "tests": len(LEDGER.tests)}, indent=1))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if os.environ.get(FIGURES_ENV) or not LEDGER.rows:
        return
    terminalreporter.section("reliability figures")
    terminalreporter.write_line(render(LEDGER.sorted_rows(), tests=len(LEDGER.tests)))
