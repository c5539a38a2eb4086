"""The last push verdict: written only when it changes, and racing pushes settle on one record."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters.catalog import IntegrationCatalog
from shared.core.errors import PermanentError
from shared.model.events import PubSubMessage
from shared.model.integrations import Annotation, ManagedIntegration
from shared.model.push_verdict import PushVerdict, verdict_change
from shared.model.record import SecretRecord
from shared.workflows.last_push import LastPush
from shared.workflows.push import PushTester
from shared.workflows.reference_test import ReferenceTest
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
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def verdict(passed: bool, code: str | None = None, at: datetime = T0, image: str = f"{IMAGE}:v1") -> PushVerdict:
    return PushVerdict(passed, code, image, at, "" if passed else f"{code} happened")


def record_with(last: PushVerdict | None = None) -> SecretRecord:
    notes = integration_annotations()
    if last is not None:
        notes[Annotation.LAST_PUSH] = last.to_annotation()
    return SecretRecord(name=f"projects/p/secrets/{SECRET}", annotations=notes, etag='"1"')


# -- the decision ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recorded", "new", "writes"),
    [
        (None, verdict(True), False),  # nothing recorded reads as passing
        (None, verdict(False, "image-missing"), True),
        (verdict(True), verdict(True, at=T0 + timedelta(hours=1)), False),
        (verdict(True), verdict(False, "image-missing", T0 + timedelta(hours=1)), True),
        (verdict(False, "image-missing"), verdict(False, "image-missing", T0 + timedelta(hours=1)), False),
        (verdict(False, "image-missing"), verdict(False, "credentials-refused", T0 + timedelta(hours=1)), True),
        (verdict(False, "image-missing"), verdict(True, at=T0 + timedelta(hours=1)), True),
        (verdict(True, at=T0 + timedelta(hours=1)), verdict(False, "image-missing"), False),  # older news
    ],
)
def test_a_verdict_is_written_only_when_it_differs_from_the_recorded_one(recorded, new, writes):
    change = verdict_change(record_with(recorded), new)
    assert (change is not None) is writes
    if change is not None:
        written = PushVerdict.from_annotations(change["annotations"])
        assert written == new
        assert change["annotations"][Annotation.REGISTRY_HOST] == HOST  # the rest of the record is kept


def test_since_survives_repeated_failures_with_the_same_code():
    secrets = FakeSecrets()
    secrets.put(SECRET, integration_annotations())
    directory = FakeDirectory([ManagedIntegration.from_secret(secrets.record(SECRET))])
    last = LastPush(secrets, directory)
    for hour in range(3):
        (current,) = directory.integrations
        last.note(current, verdict(False, "image-missing", T0 + timedelta(hours=hour), image=f"{IMAGE}:v{hour}"))
    recorded = PushVerdict.from_annotations(secrets.annotations(SECRET))
    assert recorded is not None and recorded.since == T0 and recorded.image == f"{IMAGE}:v0"
    assert secrets.count("update_secret") == 1 and secrets.count("get_secret") == 0


def test_unreadable_annotation_reads_as_no_verdict():
    notes = {Annotation.LAST_PUSH: "{not json"}
    assert PushVerdict.from_annotations(notes) is None
    assert PushVerdict.from_annotations({Annotation.LAST_PUSH: json.dumps({"status": "maybe"})}) is None


# -- through the push workflow -------------------------------------------------------------------


@pytest.fixture
def world():
    registry = FakeRegistry(images={(HOST, "proj/images/app"): {"v1": DIGEST}}, valid_keys={"k1"})
    secrets = FakeSecrets()
    secrets.put(SECRET, integration_annotations())
    secrets.raw_add(SECRET, key_json("k1"), alias="current")
    directory = FakeDirectory([ManagedIntegration.from_secret(secrets.record(SECRET))])
    keys = FakeKeys({SECRET: {1: key_json("k1")}})
    clock = iter(T0 + timedelta(minutes=m) for m in range(1000))
    tester = PushTester(
        directory, keys, ReferenceTest(registry), last_push=LastPush(secrets, directory, clock=lambda: next(clock))
    )
    return tester, secrets, directory


def push(tester: PushTester, tag: str) -> str:
    payload = {"action": "INSERT", "tag": f"{IMAGE}:{tag}"}
    return str(tester.handle(PubSubMessage(data=json.dumps(payload).encode(), message_id=tag)).status)


def test_unchanged_verdicts_make_no_call_and_changes_make_one_write_each(world):
    tester, secrets, directory = world
    assert push(tester, "v1") == "passed" and secrets.calls == []
    for _ in range(3):
        assert push(tester, "gone") == "failed"  # image-missing, three times
    assert secrets.count("update_secret") == 1 and secrets.count("get_secret") == 0
    failing = PushVerdict.from_annotations(secrets.annotations(SECRET))
    assert failing is not None and not failing.passed and failing.code == "image-missing"
    assert failing.since == T0 + timedelta(minutes=1) and failing.image == f"{IMAGE}:gone"
    assert push(tester, "v1") == "passed"
    assert secrets.count("update_secret") == 2
    passing = PushVerdict.from_annotations(secrets.annotations(SECRET))
    assert passing is not None and passing.passed and passing.since == T0 + timedelta(minutes=4)
    assert directory.integrations[0].etag == secrets.record(SECRET).etag  # the write is this instance's view


def test_a_failed_write_leaves_the_outcome_alone_and_the_next_push_tries_again(world):
    tester, secrets, _ = world
    secrets.fail_next("update_secret", PermanentError("Secret Manager: permission denied", code="permission-denied"))
    assert push(tester, "gone") == "failed"
    assert PushVerdict.from_annotations(secrets.annotations(SECRET)) is None
    assert push(tester, "gone") == "failed"
    assert PushVerdict.from_annotations(secrets.annotations(SECRET)) is not None


# -- concurrency ------------------------------------------------------------------------------------


def test_a_push_that_loses_the_etag_race_to_the_same_verdict_changes_nothing():
    secrets = FakeSecrets()
    secrets.put(SECRET, integration_annotations())
    stale = ManagedIntegration.from_secret(secrets.record(SECRET))  # two instances listed the same record
    first, second = FakeDirectory([stale]), FakeDirectory([stale])
    assert LastPush(secrets, first).note(stale, verdict(False, "image-missing", T0))
    written = secrets.annotations(SECRET)[Annotation.LAST_PUSH]
    assert not LastPush(secrets, second).note(stale, verdict(False, "image-missing", T0 + timedelta(seconds=5)))
    assert secrets.annotations(SECRET)[Annotation.LAST_PUSH] == written  # since stays the first push's
    assert secrets.count("update_secret") == 2 and secrets.count("get_secret") == 1  # the lost race: one read
    assert second.integrations[0].etag == secrets.record(SECRET).etag  # and the loser now knows


def test_a_concurrent_rotation_write_is_kept_when_the_verdict_is_written():
    secrets = FakeSecrets()
    secrets.put(SECRET, integration_annotations())
    listed = ManagedIntegration.from_secret(secrets.record(SECRET))
    secrets.before_update = lambda _: secrets.touch(SECRET, **{Annotation.ROTATED_AT: "2026-12-01T12:00:01.000Z"})
    assert LastPush(secrets, FakeDirectory([listed])).note(listed, verdict(False, "image-missing"))
    notes = secrets.annotations(SECRET)
    assert notes[Annotation.ROTATED_AT] == "2026-12-01T12:00:01.000Z" and Annotation.LAST_PUSH in notes


def test_two_pushes_racing_with_different_verdicts_leave_the_later_test_recorded():
    secrets = FakeSecrets()
    secrets.put(SECRET, integration_annotations(), labels=None)
    listed = ManagedIntegration.from_secret(secrets.record(SECRET))
    later = verdict(False, "credentials-refused", T0 + timedelta(seconds=1))
    earlier = verdict(False, "image-missing", T0)
    barrier = threading.Barrier(2)
    results: dict[str, bool] = {}

    def run(name: str, found: PushVerdict) -> None:
        barrier.wait()
        results[name] = LastPush(secrets, FakeDirectory([listed])).note(listed, found)

    threads = [threading.Thread(target=run, args=a) for a in (("later", later), ("earlier", earlier))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recorded = PushVerdict.from_annotations(secrets.annotations(SECRET))
    assert recorded is not None and recorded.code == "credentials-refused"  # whichever wrote first
    assert results["later"] is True


# -- the catalog keeps what the push path wrote ----------------------------------------------------


def test_the_catalog_remembers_a_written_record_without_listing_again() -> None:
    secrets = FakeSecrets()
    secrets.put(SECRET, integration_annotations())
    catalog = IntegrationCatalog(secrets, clock=lambda: 0.0)  # type: ignore[arg-type]
    (listed,) = catalog.all()
    assert LastPush(secrets, catalog).note(listed, verdict(False, "image-missing"))
    (cached,) = catalog.all()
    assert cached.etag == secrets.record(SECRET).etag and cached.record is not None
    assert Annotation.LAST_PUSH in cached.record.annotations
    assert secrets.count("list_secrets") == 1
