"""``status`` reports the last push verdict and since when, and the CLI turns it into a table and an exit code."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from shared import cli
from shared.model.events import PubSubMessage
from shared.model.integrations import Annotation, ManagedIntegration
from shared.model.record import timestamp
from shared.model.request import StatusRequest
from shared.workflows.last_push import LastPush
from shared.workflows.push import PushTester
from shared.workflows.reference_test import ReferenceTest
from shared.workflows.status import StatusReport
from tests.unit.fakes import (
    DIGEST,
    FakeDirectory,
    FakeKeys,
    FakeRegistry,
    FakeSecrets,
    integration_annotations,
    key_json,
)

HOST = "us-central1-docker.pkg.dev"
IMAGE = f"{HOST}/proj/images/app"
SECRET = "dataloop-gar-team-a"
NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
PASSED_TEST = json.dumps({"passed": True, "code": None, "at": "2026-11-01T00:00:00.000Z"})


def provisioned(secrets: FakeSecrets, **notes: str) -> None:
    secrets.put(
        SECRET,
        integration_annotations(
            **{Annotation.ROTATED_AT: timestamp(NOW - timedelta(days=3)), Annotation.LAST_TEST: PASSED_TEST, **notes}
        ),
    )
    secrets.raw_add(SECRET, key_json("k1"), alias="current")


def report(secrets: FakeSecrets) -> tuple[str, dict[str, Any]]:
    outcome = StatusReport(secrets, default_rotation_period_days=30, clock=lambda: NOW).status(StatusRequest())
    return outcome.reason, outcome.details["integrations"][0]


def test_after_three_failed_pushes_status_says_the_push_failed_and_since_when():
    secrets = FakeSecrets()
    provisioned(secrets)
    registry = FakeRegistry(images={(HOST, "proj/images/app"): {"v1": DIGEST}}, valid_keys={"k1"})
    directory = FakeDirectory([ManagedIntegration.from_secret(secrets.record(SECRET))])
    moments = iter(NOW - timedelta(hours=3 - n) for n in range(3))
    tester = PushTester(
        directory,
        FakeKeys({SECRET: {1: key_json("k1")}}),
        ReferenceTest(registry),
        last_push=LastPush(secrets, directory, clock=lambda: next(moments)),
    )
    for n in range(3):
        payload = json.dumps({"action": "INSERT", "tag": f"{IMAGE}:missing-{n}"}).encode()
        assert tester.handle(PubSubMessage(data=payload, message_id=str(n))).status == "failed"

    reason, item = report(secrets)

    first = timestamp(NOW - timedelta(hours=3))
    assert item["last_push"] == {
        "status": "failed",
        "code": "image-missing",
        "image": f"{IMAGE}:missing-0",
        "since": first,
        "reason": item["last_push"]["reason"],
    }
    assert "image-missing" in item["last_push"]["reason"] or "not found" in item["last_push"]["reason"]
    assert f"last push FAILED image-missing since {first} ({IMAGE}:missing-0)" in reason
    assert "last test passed" not in reason
    assert item["last_test"]["passed"] is True  # provisioning's test is still there, for what it is


def test_without_a_recorded_push_status_says_what_provisioning_tested():
    secrets = FakeSecrets()
    provisioned(secrets)
    reason, item = report(secrets)
    assert item["last_push"] is None and item["last_rotation"] is None
    assert "last test passed, no push failed" in reason


def test_the_document_carries_the_last_rotation_and_whether_the_key_is_expiring():
    secrets = FakeSecrets()
    ended = {"status": "failed", "code": "key-never-worked", "at": "2026-12-02T01:00:00.000Z"}
    provisioned(
        secrets,
        **{
            Annotation.LAST_ROTATION: json.dumps(ended),
            Annotation.KEY_EXPIRES_AT: timestamp(NOW + timedelta(hours=1)),
        },
    )
    _, item = report(secrets)
    assert item["last_rotation"] == ended
    assert item["key_expiring"] is True and item["key_expired"] is False
    secrets.touch(SECRET, **{Annotation.KEY_EXPIRES_AT: timestamp(NOW + timedelta(days=60))})
    assert report(secrets)[1]["key_expiring"] is False


# -- the CLI ---------------------------------------------------------------------------------------------


def entry(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "name": "team-a",
        "state": "active",
        "key_age_days": 3.25,
        "key_expires_at": None,
        "key_expired": False,
        "key_expiring": False,
        "next_rotation": "2026-12-30T09:00:00.000Z",
        "rotation_overdue": False,
        "last_push": None,
        "last_rotation": {"status": "ok", "code": None, "at": "2026-11-30T09:00:00.000Z"},
    }
    item.update(overrides)
    return item


class FakeChannel:
    """The Pub/Sub round trip, answered with ``reply``."""

    reply: dict[str, Any] | None = None
    #: the last request published, set by ``publish``
    sent: ClassVar[dict[str, Any]]

    def __init__(self, project: str, requests_topic: str, results_topic: str) -> None:
        pass

    def publish(self, data: bytes, request_id: str) -> str:
        FakeChannel.sent = json.loads(data)
        return "m-1"

    @contextlib.contextmanager
    def reply_subscription(self) -> Iterator[str]:
        yield "sub"

    def await_reply(self, subscription: str, request_id: str, timeout: float) -> dict[str, Any] | None:
        return None if self.reply is None else {**self.reply, "request_id": request_id}


def run_status(monkeypatch: pytest.MonkeyPatch, reply: dict[str, Any] | None, *extra: str) -> tuple[int, str, str]:
    monkeypatch.setattr(cli, "RequestChannel", FakeChannel)
    monkeypatch.setattr(FakeChannel, "reply", reply)
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["status", "--wait", "--pubsub-project", "p", *extra], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def ok(*items: dict[str, Any]) -> dict[str, Any]:
    return {"status": "ok", "reason": "…", "details": {"integrations": list(items)}}


def test_status_prints_a_table_and_exits_0_when_all_is_well(monkeypatch):
    code, out, err = run_status(monkeypatch, ok(entry(), entry(name="team-b", key_age_days=0.5)))
    lines = out.splitlines()
    assert code == 0 and err.startswith("published status request")
    assert lines[0].split() == ["name", "state", "key", "age", "key", "expiry", "next", "rotation", "last", "push",
                                "last", "rotation"]  # fmt: skip
    assert lines[1].split() == ["team-a", "active", "3.2", "d", "never", "2026-12-30", "09:00Z", "passed", "(no",
                                "failure", "recorded)", "ok", "2026-11-30", "09:00Z"]  # fmt: skip
    assert lines[2].startswith("team-b ") and "0.5 d" in lines[2]
    header = lines[0]
    for line in lines[1:]:  # columns line up
        assert line[header.index("state")] != " " and line[header.index("state") - 1] == " "


@pytest.mark.parametrize(
    ("item", "cell", "why"),
    [
        (
            entry(last_push={"status": "failed", "code": "image-missing", "since": "2026-12-03T06:00:00.000Z"}),
            "FAILED image-missing since 2026-12-03 06:00Z",
            "last push failed (image-missing) since 2026-12-03T06:00:00.000Z",
        ),
        (
            entry(last_rotation={"status": "failed", "code": "key-never-worked", "at": "2026-12-02T01:00:00.000Z"}),
            "FAILED key-never-worked 2026-12-02 01:00Z",
            "last rotation failed (key-never-worked)",
        ),
        (entry(rotation_overdue=True), "2026-12-30 09:00Z OVERDUE", "rotation overdue"),
        (
            entry(key_expires_at="2026-12-03T10:00:00.000Z", key_expiring=True),
            "2026-12-03 10:00Z (soon)",
            "key expires at 2026-12-03T10:00:00.000Z",
        ),
        (
            entry(key_expires_at="2026-12-03T08:00:00.000Z", key_expired=True, key_expiring=True),
            "EXPIRED 2026-12-03 08:00Z",
            "key expired at",
        ),
    ],
)
def test_anything_failing_overdue_or_expiring_shows_in_the_table_and_exits_5(monkeypatch, item, cell, why):
    code, out, err = run_status(monkeypatch, ok(entry(name="fine"), item))
    assert code == cli.EXIT_ATTENTION == 5
    assert cell in out.splitlines()[2]
    (flagged,) = [line for line in err.splitlines() if not line.startswith("published")]
    assert flagged.startswith("team-a: ") and why in flagged


def test_a_recovered_push_is_shown_with_since_and_is_not_flagged(monkeypatch):
    item = entry(last_push={"status": "passed", "code": None, "since": "2026-12-03T07:00:00.000Z"})
    code, out, _ = run_status(monkeypatch, ok(item))
    assert code == 0 and "passed since 2026-12-03 07:00Z" in out


def test_an_integration_that_is_not_active_is_listed_but_not_flagged(monkeypatch):
    code, out, _ = run_status(monkeypatch, ok(entry(state="deprovisioned", rotation_overdue=True, key_age_days=None)))
    assert code == 0 and "deprovisioned" in out


def test_json_prints_the_reply_document_with_the_same_exit_code(monkeypatch):
    reply = ok(entry(rotation_overdue=True))
    code, out, _ = run_status(monkeypatch, reply, "--json")
    assert code == 5 and json.loads(out)["details"] == reply["details"]
    code, out, _ = run_status(monkeypatch, ok(entry()), "--json")
    assert code == 0 and json.loads(out)["status"] == "ok"


def test_a_failed_or_missing_reply_keeps_its_exit_code(monkeypatch):
    failed = {"status": "failed", "reason": "no integration named x is provisioned", "details": {}}
    code, out, _ = run_status(monkeypatch, failed)
    assert code == 1 and "no integration named x" in out
    assert run_status(monkeypatch, None)[0] == 3
    code, out, _ = run_status(monkeypatch, ok())
    assert code == 0 and out.strip() == "no integrations are provisioned"


def test_status_sends_and_waits_without_being_told_and_request_only_prints_the_request(monkeypatch):
    monkeypatch.setattr(cli, "RequestChannel", FakeChannel)
    monkeypatch.setattr(FakeChannel, "reply", ok(entry()))
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["status", "--pubsub-project", "p"], stdout=out, stderr=err) == 0
    assert out.getvalue().startswith("name ") and "waiting" in err.getvalue()

    monkeypatch.setattr(cli, "RequestChannel", None)  # nothing may be sent
    out = io.StringIO()
    assert cli.main(["status", "--request-only"], stdout=out, stderr=io.StringIO()) == 0
    assert json.loads(out.getvalue())["action"] == "status"


def test_an_unreachable_pubsub_is_reported_within_the_rpc_timeout_with_what_to_check(monkeypatch):
    """The real client, pointed at a port nothing listens on: exit 4 soon, not after its own 60 s of retries."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", closed)
    monkeypatch.setattr(cli, "RPC_TIMEOUT", 2.0)
    out, err = io.StringIO(), io.StringIO()
    begun = time.monotonic()
    code = cli.main(["status", "--pubsub-project", "p", "--timeout", "1"], stdout=out, stderr=err)
    assert code == cli.EXIT_PUBSUB == 4
    assert time.monotonic() - begun < 15
    assert f"is the emulator at {closed} (PUBSUB_EMULATOR_HOST) reachable" in err.getvalue()
