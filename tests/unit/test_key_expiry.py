"""Keys that expire (an organisation's ``iam.serviceAccountKeyExpiryHours`` policy, docs/external-apis.md §3.3).

What is pinned down: the safety margin; that rotation is due at the earlier of the period and
the expiry less the margin; that rotation and provisioning record the new key's expiry where
the sweep can read it (annotations only); what the sweep and ``status`` say about it; and
provisioning's warning when the requested period is longer than a key lives.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from shared.adapters.pubsub import PubSubFanOut
from shared.core.config import load_settings
from shared.model.dataloop import DataloopUnavailable
from shared.model.integrations import Annotation
from shared.model.keys import expiry
from shared.model.record import SecretRecord, timestamp
from shared.model.request import parse_request
from shared.model.results import Status
from shared.model.schedule import due_at, due_by_expiry, expiry_margin, is_due
from shared.workflows.status import IntegrationStatus, StatusReport
from shared.workflows.sweep import Sweep
from tests.unit import test_provisioning as provisioning
from tests.unit.fakes import SECRET_ID, Clock, FakePublisher, FakeSecrets, integration_annotations
from tests.unit.test_rotation import World, make_world

DAY = 86400.0
HOUR = 3600.0
WEEK = timedelta(days=7)


# -- the margin and due-ness ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lifetime", "margin"),
    [
        (timedelta(hours=8), timedelta(hours=4)),  # the shortest the policy allows: half of it, not a day
        (timedelta(days=7), timedelta(days=1)),  # the floor
        (timedelta(days=90), timedelta(days=9)),  # a tenth, when that is more
        (timedelta(0), timedelta(0)),
    ],
)
def test_the_margin_is_a_day_or_a_tenth_of_the_lifetime_but_never_over_half(
    lifetime: timedelta, margin: timedelta
) -> None:
    assert expiry_margin(lifetime) == margin


def test_the_margin_floor_is_a_setting() -> None:
    assert load_settings({"GCP_PROJECT": "p"}).key_expiry_margin_seconds == DAY
    assert load_settings({"GCP_PROJECT": "p", "KEY_EXPIRY_MARGIN_SECONDS": "7200"}).key_expiry_margin_seconds == 7200
    assert expiry_margin(WEEK, 2 * HOUR) == timedelta(hours=16.8)  # a tenth beats a two-hour floor


def record_with(clock: Clock, *, rotated_days_ago: float, expires_in: timedelta | None, **notes: str) -> SecretRecord:
    secrets = FakeSecrets()
    annotations = {Annotation.ROTATED_AT: timestamp(clock() - timedelta(days=rotated_days_ago)), **notes}
    if expires_in is not None:
        annotations[Annotation.KEY_EXPIRES_AT] = timestamp(clock() + expires_in)
    secrets.put("s", annotations)
    return secrets.record("s")


def test_a_key_expiring_before_the_period_makes_rotation_due_a_margin_before_it_expires() -> None:
    clock = Clock()
    record = record_with(clock, rotated_days_ago=2, expires_in=timedelta(days=5))  # a 7-day key, 30-day period

    assert due_at(record, 30 * DAY) == clock() + timedelta(days=4)  # expiry less a day
    assert due_by_expiry(record, 30 * DAY)
    assert not is_due(record, clock(), 30 * DAY)
    assert is_due(record, clock() + timedelta(days=4), 30 * DAY)
    assert is_due(record, clock() + timedelta(days=3), 30 * DAY, margin_seconds=2 * DAY)


def test_the_period_still_rules_when_it_comes_first_and_keys_that_never_expire_change_nothing() -> None:
    clock = Clock()
    long_key = record_with(clock, rotated_days_ago=2, expires_in=timedelta(days=88))  # a 90-day key
    assert due_at(long_key, 30 * DAY) == clock() + timedelta(days=28) and not due_by_expiry(long_key, 30 * DAY)
    forever = record_with(clock, rotated_days_ago=2, expires_in=None)
    assert due_at(forever, 30 * DAY) == clock() + timedelta(days=28) and not due_by_expiry(forever, 30 * DAY)
    garbled = record_with(clock, rotated_days_ago=2, expires_in=None, **{Annotation.KEY_EXPIRES_AT: "soon"})
    assert due_at(garbled, 30 * DAY) == clock() + timedelta(days=28)
    expired = record_with(clock, rotated_days_ago=8, expires_in=timedelta(days=-1))
    assert is_due(expired, clock(), 30 * DAY)


def test_iams_far_future_valid_before_means_never() -> None:
    assert expiry(datetime.fromisoformat("9999-12-31T23:59:59+00:00")) is None
    assert expiry(None) is None
    moment = datetime.fromisoformat("2030-01-08T12:00:00+00:00")
    assert expiry(moment) == moment


# -- rotation records the new key's expiry --------------------------------------------------------------------


def expiring_world(lifetime: timedelta = WEEK, **options: object) -> World:
    world = make_world(default_period_seconds=30 * DAY, **options)
    world.accounts.key_lifetime = lifetime
    return world


def provision_expiring(world: World) -> None:
    key = world.provision(rotated_days_ago=0)
    assert key.expires_at is not None
    world.secrets.touch(SECRET_ID, **{Annotation.KEY_EXPIRES_AT: timestamp(key.expires_at)})


def test_a_key_is_rotated_before_it_expires_and_the_new_expiry_is_recorded() -> None:
    world = expiring_world()
    provision_expiring(world)
    world.clock.advance(5 * DAY)

    skipped = world.rotate()
    assert skipped.status is Status.SKIPPED and skipped.code == "not-due"
    assert "the key expires at" in skipped.reason

    world.clock.advance(1 * DAY + 1)  # a day before the 7-day key expires: due, though the period is 30 days
    outcome = world.rotate()

    assert outcome.status is Status.OK, outcome.reason
    new_expiry = world.annotations()[Annotation.KEY_EXPIRES_AT]
    assert new_expiry == timestamp((world.clock() + WEEK).replace(microsecond=0))
    assert world.annotations()[Annotation.ROTATED_AT] == timestamp(world.clock())
    world.assert_converged()


def test_a_resumed_rotation_reads_the_pending_keys_expiry_from_iam() -> None:
    world = expiring_world()
    provision_expiring(world)
    world.clock.advance(6 * DAY + 1)
    world.dataloop.fail_next("update_credentials", DataloopUnavailable("Dataloop 503"))  # stops with a key pending
    with pytest.raises(DataloopUnavailable):
        world.rotate()
    assert "pending" in world.aliases()
    pending_created = world.clock()
    world.clock.advance(3600)
    listed = world.accounts.count("list_keys")

    outcome = world.rotate()

    assert outcome.status is Status.OK, outcome.reason
    assert world.accounts.count("list_keys") == listed + 1  # the key was made by the run before
    recorded = world.annotations()[Annotation.KEY_EXPIRES_AT]
    assert recorded == timestamp((pending_created + WEEK).replace(microsecond=0))


def test_a_key_that_never_expires_leaves_no_expiry_on_the_record() -> None:
    world = make_world()
    world.provision(notes={Annotation.KEY_EXPIRES_AT: "2030-01-02T00:00:00.000Z"})  # left from an older key

    assert world.rotate().status is Status.OK
    assert Annotation.KEY_EXPIRES_AT not in world.annotations()


# -- the sweep and status show it -----------------------------------------------------------------------------


def test_the_sweep_rotates_keys_about_to_expire_and_names_them_and_the_expired_ones() -> None:
    secrets, clock = FakeSecrets(), Clock()

    def put(name: str, rotated_days_ago: float, expires_in: timedelta | None) -> None:
        notes = integration_annotations(
            **{Annotation.ROTATED_AT: timestamp(clock() - timedelta(days=rotated_days_ago))}
        )
        if expires_in is not None:
            notes[Annotation.KEY_EXPIRES_AT] = timestamp(clock() + expires_in)
        secrets.put(name, notes)

    put("dataloop-gar-fresh", 1, timedelta(days=6))
    put("dataloop-gar-expiring", 6, timedelta(hours=12))
    put("dataloop-gar-expired", 8, timedelta(days=-1))
    put("dataloop-gar-old", 40, None)
    publisher = FakePublisher()

    outcome = Sweep(secrets, PubSubFanOut("t", publisher=publisher), clock=clock).run()

    assert secrets.calls == ["list_secrets"]  # still one listing, no per-secret reads
    assert sorted(p["integration"] for p in publisher.payloads()) == [
        "dataloop-gar-expired",
        "dataloop-gar-expiring",
        "dataloop-gar-old",
    ]
    assert outcome.details["key_expiring"] == {
        "dataloop-gar-expiring": timestamp(clock() + timedelta(hours=12)),
        "dataloop-gar-expired": timestamp(clock() - timedelta(days=1)),
    }
    assert outcome.details["key_expired"] == ["dataloop-gar-expired"]
    assert "2 because their key expires soon" in outcome.reason and "1 with a key that has EXPIRED" in outcome.reason


def test_status_shows_the_expiry_and_the_rotation_it_brings_forward() -> None:
    clock = Clock()
    secrets = FakeSecrets()
    notes = integration_annotations(
        **{
            Annotation.ROTATED_AT: timestamp(clock() - timedelta(days=2)),
            Annotation.KEY_EXPIRES_AT: timestamp(clock() + timedelta(days=5)),
            Annotation.ROTATION_PERIOD: str(30 * DAY),
        }
    )
    secrets.put(SECRET_ID, notes)
    secrets.raw_add(SECRET_ID, "{}", "current")

    report = IntegrationStatus.from_record(secrets.record(SECRET_ID), clock(), 30.0)
    assert report.key_expires_at == timestamp(clock() + timedelta(days=5)) and report.key_expired is False
    assert report.next_rotation == timestamp(clock() + timedelta(days=4))  # not day 28
    assert report.rotation_overdue is False
    assert f"key expires {report.key_expires_at}" in report.summary()

    later = clock() + timedelta(days=6)
    expired = IntegrationStatus.from_record(secrets.record(SECRET_ID), later, 30.0)
    assert expired.key_expired is True and expired.rotation_overdue is True
    assert "key EXPIRED" in expired.summary()

    replied = StatusReport(secrets, default_rotation_period_days=30.0, expiry_margin_seconds=2 * DAY, clock=clock)
    outcome = replied.status(parse_request({"version": 1, "action": "status", "name": "team-a"}))  # type: ignore[arg-type]
    assert outcome.details["integrations"][0]["next_rotation"] == timestamp(clock() + timedelta(days=3))


# -- provisioning records the expiry, and warns ----------------------------------------------------------------


def test_provisioning_records_the_keys_expiry_and_warns_when_the_period_is_longer() -> None:
    world = provisioning.World()
    world.accounts.key_lifetime = WEEK

    outcome = world.provision(rotation_period_days=30)

    assert outcome.status is Status.OK, outcome.reason
    expires = timestamp((provisioning.NOW + WEEK).replace(microsecond=0))
    assert world.secret().annotations[Annotation.KEY_EXPIRES_AT] == expires
    assert outcome.details["key_expires_at"] == expires
    (warning,) = outcome.details["warnings"]
    assert "30 days" in warning and "iam.serviceAccountKeyExpiryHours" in warning
    assert "warning:" in outcome.reason


def test_provisioning_does_not_warn_when_the_key_outlives_the_period_or_never_expires() -> None:
    world = provisioning.World()
    world.accounts.key_lifetime = timedelta(days=90)
    outcome = world.provision(rotation_period_days=30)
    assert outcome.status is Status.OK and "warnings" not in outcome.details

    forever = provisioning.World()
    outcome = forever.provision(rotation_period_days=30)
    assert outcome.status is Status.OK and "warnings" not in outcome.details
    assert Annotation.KEY_EXPIRES_AT not in forever.secret().annotations


def test_a_resent_provision_records_the_expiry_of_a_key_made_before_it_was_recorded() -> None:
    world = provisioning.World()
    world.accounts.key_lifetime = WEEK
    assert world.provision().status is Status.OK
    del world.secret().annotations[Annotation.KEY_EXPIRES_AT]  # as a record written before this annotation

    outcome = world.provision()

    assert outcome.status is Status.OK, outcome.reason
    assert world.secret().annotations[Annotation.KEY_EXPIRES_AT] == timestamp(
        (provisioning.NOW + WEEK).replace(microsecond=0)
    )
