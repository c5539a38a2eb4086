"""``shared.adapters.cloud_logging.OutcomeLog`` drives the real google-cloud-logging client
against the local Logging API, so what the operator's ``history`` sends and reads is the
library's own request and parsing, not our idea of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from localcloud.cloudlogging import CloudLoggingStandIn
from localcloud.wsgi import Fault
from shared.adapters.cloud_logging import OutcomeLog
from shared.model.results import Outcome, Status

pytestmark = pytest.mark.wire

PROJECT = "proj-1"
#: A push's details, keyed by integration as shared.workflows.push writes them.
PASSED = {"team-a": {"registry": {"passed": True}}}


@pytest.fixture
def standin() -> Iterator[CloudLoggingStandIn]:
    with CloudLoggingStandIn(project=PROJECT) as server:
        yield server


def log_line(outcome: Outcome, at: datetime, severity: str = "INFO") -> str:
    """The line shared.app.entrypoint prints for an outcome (CloudLoggingFormatter's shape)."""
    return json.dumps(
        {
            "severity": severity,
            "message": f"{outcome.kind} {outcome.status.value}: {outcome.reason}",
            "time": at.isoformat(),
            "logger": "dataloop_gar",
            "logging.googleapis.com/labels": {"function": outcome.kind},
            "outcome": outcome.to_message(),
        }
    )


def test_reads_outcomes_newest_first_narrowed_by_name_status_and_time(
    standin: CloudLoggingStandIn, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    lines = [
        log_line(
            Outcome("reference-test", Status.PASSED, "old", subject={"integrations": ["team-a"]}, details=PASSED),
            now - timedelta(hours=3),
        ),
        log_line(
            Outcome("reference-test", Status.PASSED, "ok", subject={"integrations": ["team-a"]}, details=PASSED),
            now - timedelta(minutes=9),
        ),
        log_line(
            Outcome(
                "reference-test",
                Status.FAILED,
                "refused",
                code="credentials-refused",
                subject={"integrations": ["team-a", "team-b"]},
                details={**PASSED, "team-b": {"registry": {"passed": False}}},
            ),
            now - timedelta(minutes=8),
            "ERROR",
        ),
        log_line(
            Outcome("rotation", Status.OK, "rotated", subject={"integration": "team-b"}), now - timedelta(minutes=7)
        ),
        log_line(
            Outcome("request", Status.OK, "provisioned", subject={"action": "provision", "name": "team-c"}),
            now - timedelta(minutes=6),
        ),
        json.dumps({"severity": "INFO", "message": "cold start", "time": now.isoformat()}),
    ]
    log = tmp_path / "functions.log"
    log.write_text("\n".join(lines) + "\n")
    standin.state.follow(log, "on-push")
    history = OutcomeLog(PROJECT, endpoint=standin.url, page_size=2)
    hour_ago = now - timedelta(hours=1)

    every = history.recent(hour_ago)
    assert [p.outcome["reason"] for p in every] == ["provisioned", "rotated", "refused", "ok"]
    assert every[0].integrations == ("team-c",) and every[2].integrations == ("team-a", "team-b")
    assert every[0].service == "on-push" and every[0].at is not None and every[0].at.tzinfo is not None
    assert [p.outcome["reason"] for p in history.recent(hour_ago, name="team-b")] == ["rotated", "refused"]
    assert [p.outcome["reason"] for p in history.recent(hour_ago, status="failed")] == ["refused"]
    assert [p.outcome["reason"] for p in history.recent(now - timedelta(days=1), limit=5)][-1] == "old"
    assert len(history.recent(hour_ago, limit=3)) == 3

    sent: list[Any] = standin.api.received
    assert all(call["path"] == "/v2/entries:list" and call["method"] == "POST" for call in standin.app.call_log())
    named = sent[2]  # recent(name="team-b"): its first page
    assert set(named) == {"resourceNames", "filter", "orderBy", "pageSize"}
    assert named["resourceNames"] == [f"projects/{PROJECT}"]
    assert named["orderBy"] == "timestamp desc" and named["pageSize"] == 2
    assert named["filter"].startswith('jsonPayload.outcome.schema="dataloop-gar.result/v1" AND timestamp>="')
    assert 'jsonPayload.outcome.subject.integrations="team-b"' in named["filter"]
    assert 'jsonPayload.outcome.details."team-b":*' in named["filter"]
    assert any("pageToken" in body for body in sent)  # four outcomes at two a page


def test_a_name_with_quotes_stays_one_string_of_the_query(standin: CloudLoggingStandIn) -> None:
    history = OutcomeLog(PROJECT, endpoint=standin.url)

    assert history.recent(datetime.now(UTC) - timedelta(hours=1), name='team-a" OR (') == []
    assert '"team-a\\" OR ("' in standin.api.received[0]["filter"]


def test_a_refusal_is_the_clients_exception(standin: CloudLoggingStandIn) -> None:
    from google.api_core import exceptions

    refusal = {"error": {"code": 403, "message": "Permission denied", "status": "PERMISSION_DENIED"}}
    standin.app.inject(Fault(path="entries:list", status=403, body=refusal))

    with pytest.raises(exceptions.Forbidden, match="Permission denied"):
        OutcomeLog(PROJECT, endpoint=standin.url).recent(datetime.now(UTC))
