"""``python -m shared.cli history``: its arguments, its table and JSON, its exit codes; and
that reading history stays the operator's business, never a function's.

The client library is replaced by a recorder here; tests/wire/test_outcome_log.py drives
the real one against the local Logging API.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared import cli
from shared.adapters import cloud_logging
from shared.adapters.cloud_logging import PastOutcome, outcome_filter

ROOT = Path(__file__).resolve().parents[2]
AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
FOUND = [
    PastOutcome(
        AT,
        "on-push",
        {
            "kind": "reference-test",
            "status": "failed",
            "code": "credentials-refused",
            "reason": "team-a: the registry refused\n the key",
            "subject": {"integrations": ["team-a", "team-b"]},
        },
    ),
    PastOutcome(
        AT - timedelta(minutes=1),
        "requests",
        {"kind": "request", "status": "ok", "code": None, "reason": "provisioned", "subject": {"name": "team-c"}},
    ),
]


class Recorder:
    """Stands in for OutcomeLog: remembers how it was built and asked."""

    calls: list[dict[str, Any]] = []
    error: Exception | None = None

    def __init__(self, project: str, *, endpoint: str | None = None) -> None:
        self.calls.append({"project": project, "endpoint": endpoint})

    def recent(self, since: datetime, **asked: Any) -> list[PastOutcome]:
        self.calls.append({"since": since, **asked})
        if self.error is not None:
            raise self.error
        return FOUND


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> type[Recorder]:
    monkeypatch.setattr(cloud_logging, "OutcomeLog", Recorder)
    monkeypatch.setattr(Recorder, "calls", [])
    monkeypatch.setattr(Recorder, "error", None)
    monkeypatch.delenv("LOGGING_API_ENDPOINT", raising=False)
    return Recorder


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["history", *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_prints_a_table_of_time_kind_integration_status_code_reason(recorder: type[Recorder]) -> None:
    code, out, err = run("--project", "p1", "--name", "team-a", "--status", "failed", "--since", "7d")

    assert code == 0
    header, first, second = out.splitlines()
    assert header.split() == ["time", "kind", "integration", "status", "code", "reason"]
    assert first.split(None, 6) == [
        "2026-01-02",
        "03:04:05",
        "reference-test",
        "team-a,team-b",
        "failed",
        "credentials-refused",
        "team-a: the registry refused the key",
    ]
    assert second.split()[2:6] == ["request", "team-c", "ok", "-"]
    assert first.index("reference-test") == header.index("kind")  # columns line up
    assert "2 outcome(s)" in err
    built, asked = recorder.calls
    assert built == {"project": "p1", "endpoint": None}
    assert (asked["name"], asked["status"], asked["limit"]) == ("team-a", "failed", 50)
    assert abs((datetime.now(UTC) - asked["since"]) - timedelta(days=7)) < timedelta(minutes=1)


def test_json_prints_one_outcome_a_line(recorder: type[Recorder], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGGING_API_ENDPOINT", "http://127.0.0.1:9")
    code, out, _ = run("--project", "p1", "--json", "--limit", "5")

    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["kind"] for line in lines] == ["reference-test", "request"]
    assert lines[0]["at"] == AT.isoformat() and lines[0]["service"] == "on-push"
    assert recorder.calls[0]["endpoint"] == "http://127.0.0.1:9" and recorder.calls[1]["limit"] == 5


def test_an_api_failure_is_exit_4_and_no_project_is_exit_2(
    recorder: type[Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.api_core import exceptions

    recorder.error = exceptions.Forbidden("no logging.logEntries.list")
    code, out, err = run("--project", "p1")
    assert (code, out) == (4, "") and "Cloud Logging error: Forbidden" in err

    monkeypatch.delenv("GCP_PROJECT", raising=False)
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    code, out, err = run()
    assert (code, out) == (2, "") and "--project" in err


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("24h", 86400), ("7d", 604800)])
def test_since_takes_minutes_hours_and_days(text: str, seconds: int) -> None:
    assert cli.parse_since(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "h", "0h", "-1d", "1w", "1.5h", "24"])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        cli.parse_since(text)


def test_the_filter_names_the_outcome_fields_the_functions_log() -> None:
    query = outcome_filter(AT, name="team-a", status="failed")

    assert query == (
        'jsonPayload.outcome.schema="dataloop-gar.result/v1" AND timestamp>="2026-01-02T03:04:05Z"'
        ' AND jsonPayload.outcome.status="failed"'
        ' AND (jsonPayload.outcome.subject.name="team-a" OR jsonPayload.outcome.subject.integration="team-a"'
        ' OR jsonPayload.outcome.subject.integrations="team-a"'
        ' OR (jsonPayload.outcome.kind="reference-test" AND jsonPayload.outcome.details."team-a":*))'
    )


def _imports(path: Path) -> set[str]:
    """Modules named by ``path``'s imports; ``from a import b`` names ``a`` and, maybe, ``a.b``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _closure(start: Path) -> set[str]:
    """Every module ``start`` can import, following shared/ (lazy imports included)."""
    seen: set[str] = set()
    todo = list(_imports(start))
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        if parts[0] != "shared":
            continue
        for candidate in (ROOT.joinpath(*parts).with_suffix(".py"), ROOT.joinpath(*parts, "__init__.py")):
            if candidate.is_file():
                todo.extend(_imports(candidate))
    return seen


@pytest.mark.parametrize("function", ["on_push", "requests", "rotate"])
def test_no_function_can_reach_the_logging_client(function: str) -> None:
    reachable = _closure(ROOT / "functions" / function / "main.py")

    assert "shared.app.entrypoint" in reachable  # the walk follows shared/
    assert not [m for m in reachable if m.startswith(("google.cloud.logging", "shared.adapters.cloud_logging"))]
