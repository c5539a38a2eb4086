"""The local Logging API answers ``entries.list`` like Google does, for the queries ``history`` writes.

What ``history`` shows is only as good as what the stand-in matches: a filter it read
wrongly would show outcomes that are not there, or hide ones that are. So the query
language subset is pinned here (case-insensitive strings, OR binding tighter than AND,
repeated fields, timestamps), with paging, ordering and the 400 a filter outside the
subset gets; and the feed is pinned to turn a function's stdout line into the LogEntry
Cloud Run makes of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from localcloud.cloudlogging import CloudLoggingStandIn

pytestmark = pytest.mark.wire

PROJECT = "proj-1"
T0 = "2026-01-01T00:00:00Z"


@pytest.fixture
def standin() -> Iterator[CloudLoggingStandIn]:
    with CloudLoggingStandIn(project=PROJECT) as server:
        yield server


def outcome(status: str, **subject: Any) -> dict[str, Any]:
    return {
        "outcome": {"schema": "dataloop-gar.result/v1", "kind": "reference-test", "status": status, "subject": subject}
    }


def write(standin: CloudLoggingStandIn, minute: int, payload: dict[str, Any], severity: str = "INFO") -> None:
    standin.state.write(
        {
            "logName": f"projects/{PROJECT}/logs/run.googleapis.com%2Fstdout",
            "timestamp": f"2026-01-01T00:{minute:02d}:00Z",
            "severity": severity,
            "jsonPayload": payload,
        }
    )


def entries_list(standin: CloudLoggingStandIn, **body: Any) -> requests.Response:
    body.setdefault("resourceNames", [f"projects/{PROJECT}"])
    return requests.post(f"{standin.url}/v2/entries:list", json=body, timeout=5)


def minutes(answer: requests.Response) -> list[int]:
    assert answer.status_code == 200, answer.text
    return [int(e["timestamp"][14:16]) for e in answer.json().get("entries", [])]


def test_filters_on_payload_fields_case_insensitively_and_orders_by_timestamp(standin: CloudLoggingStandIn) -> None:
    write(standin, 1, outcome("passed", integrations=["team-a"]))
    write(standin, 2, outcome("failed", integrations=["team-a", "team-b"]))
    write(standin, 3, outcome("failed", name="team-b"))
    write(standin, 4, {"message": "not an outcome"})

    failed = 'jsonPayload.outcome.status="FAILED"'
    assert minutes(entries_list(standin, filter=failed)) == [2, 3]
    assert minutes(entries_list(standin, filter=failed, orderBy="timestamp desc")) == [3, 2]
    team_b = '(jsonPayload.outcome.subject.name="team-b" OR jsonPayload.outcome.subject.integrations="team-b")'
    assert minutes(entries_list(standin, filter=f'{team_b} AND timestamp>="2026-01-01T00:03:00Z"')) == [3]
    assert minutes(entries_list(standin, filter='jsonPayload.outcome.subject.integrations="team-b"')) == [2]
    # OR binds tighter than AND: a AND b OR c is a AND (b OR c)
    either = "jsonPayload.outcome.status=failed AND jsonPayload.outcome.subject.name=team-b OR severity>=ERROR"
    assert minutes(entries_list(standin, filter=either)) == [3]
    assert minutes(entries_list(standin, filter='NOT jsonPayload.outcome.status="failed"')) == [1, 4]
    assert minutes(entries_list(standin, filter="")) == [1, 2, 3, 4]


def test_has_presence_and_quoted_field_segments(standin: CloudLoggingStandIn) -> None:
    write(standin, 1, {"outcome": {"reason": "team-a: Pull refused", "details": {"team-a": {"ok": False}}}})
    write(standin, 2, {"outcome": {"reason": "team-b passed", "details": {"team-b": {"ok": True}}}})

    assert minutes(entries_list(standin, filter='jsonPayload.outcome.details."team-a":*')) == [1]
    assert minutes(entries_list(standin, filter='jsonPayload.outcome.details."team-a".ok=false')) == [1]
    assert minutes(entries_list(standin, filter='jsonPayload.outcome.reason:"pull REFUSED"')) == [1]
    assert minutes(entries_list(standin, filter="jsonPayload.outcome.details:*")) == [1, 2]
    assert minutes(entries_list(standin, filter="jsonPayload.outcome.code:*")) == []


def test_pages_follow_the_token_and_new_entries_do_not_shift_them(standin: CloudLoggingStandIn) -> None:
    for minute in range(1, 6):
        write(standin, minute, outcome("passed"))

    first = entries_list(standin, orderBy="timestamp desc", pageSize=2)
    assert minutes(first) == [5, 4]
    write(standin, 9, outcome("passed"))  # newer than the first page: not in the later pages
    second = entries_list(standin, orderBy="timestamp desc", pageSize=2, pageToken=first.json()["nextPageToken"])
    assert minutes(second) == [3, 2]
    third = entries_list(standin, orderBy="timestamp desc", pageSize=2, pageToken=second.json()["nextPageToken"])
    assert minutes(third) == [1]
    assert "nextPageToken" not in third.json()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"filter": 'jsonPayload.outcome.status="failed" AND ('}, "Invalid filter"),
        ({"filter": 'jsonPayload.outcome.status ~ "fail"'}, "Invalid filter"),
        ({"filter": 'timestamp>="yesterday"'}, "Invalid timestamp"),
        ({"filter": "timestamp>=2026-01-01T00:00:00Z"}, "Invalid filter"),  # unquoted text with ':'
        ({"filter": "jsonPayload.outcome.status=*"}, "Invalid filter"),
        ({"orderBy": "severity desc"}, "orderBy"),
        ({"pageSize": 1001}, "pageSize"),
        ({"pageToken": "not-a-token"}, "page token"),
        ({"resourceNames": []}, "resource"),
    ],
)
def test_refuses_what_it_cannot_answer_with_googles_error(
    standin: CloudLoggingStandIn, body: dict[str, Any], fragment: str
) -> None:
    answer = entries_list(standin, **body)

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert fragment in error["message"]


def test_a_function_log_line_becomes_the_entry_cloud_run_makes(standin: CloudLoggingStandIn, tmp_path: Path) -> None:
    log = tmp_path / "on_push.log"
    line = {
        "severity": "ERROR",
        "message": "reference-test failed: refused",
        "time": "2026-01-01T00:07:00.123456+00:00",
        "logger": "dataloop_gar",
        "logging.googleapis.com/labels": {"function": "reference-test"},
        "logging.googleapis.com/trace": "projects/proj-1/traces/abc",
        "outcome": {"schema": "dataloop-gar.result/v1", "status": "failed"},
    }
    log.write_text("[INFO] Booting worker with pid: 1\n" + json.dumps(line) + "\n" + '{"severity": "INFO", "mess')
    standin.state.follow(log, "on-push")

    entries = entries_list(standin, filter='jsonPayload.outcome.status="failed"').json()["entries"]

    assert len(entries) == 1
    entry = entries[0]
    assert entry["logName"] == "projects/proj-1/logs/run.googleapis.com%2Fstdout"
    assert entry["resource"] == {
        "type": "cloud_run_revision",
        "labels": {"project_id": PROJECT, "location": "us-central1", "service_name": "on-push"},
    }
    assert (entry["severity"], entry["timestamp"]) == ("ERROR", "2026-01-01T00:07:00.123456Z")
    assert entry["labels"] == {"function": "reference-test"}
    assert entry["trace"] == "projects/proj-1/traces/abc"
    assert entry["jsonPayload"] == {
        "message": "reference-test failed: refused",
        "logger": "dataloop_gar",
        "outcome": line["outcome"],
    }
    everything = entries_list(standin).json()["entries"]
    assert [e.get("textPayload") for e in everything] == [None, "[INFO] Booting worker with pid: 1"]  # no time: now

    with log.open("a") as handle:  # the half-written line is read once it is complete
        handle.write('age": "later", "time": "2026-01-01T00:08:00Z"}\n')
    assert len(entries_list(standin).json()["entries"]) == 3
