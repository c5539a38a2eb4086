"""The key rotation (shared.workflows.rotation), the sweep (shared.workflows.sweep) and the rotation topic's messages,
against in-memory fakes: every step, every crash point, every safety rule."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import pytest

from shared.adapters.pubsub import PubSubFanOut
from shared.core.errors import (
    PermanentError,
    RegistryUnavailable,
    RejectedMessage,
    ServiceUnavailable,
    TransientError,
)
from shared.model.dataloop import DataloopNotFound, DataloopUnavailable
from shared.model.events import PubSubMessage
from shared.model.integrations import Annotation
from shared.model.key_ledger import created_keys
from shared.model.keys import ServiceAccountKey
from shared.model.lease import Lease
from shared.model.record import RETIRED_KEYS, parse_timestamp, retired_keys, timestamp
from shared.model.results import Status
from shared.model.schedule import due_at, is_due
from shared.workflows.key_probe import PROBE_IMAGE, KeyProbe, probe_target
from shared.workflows.rotation.messages import RotationMessages
from shared.workflows.rotation.workflow import KeyRotation
from shared.workflows.sweep import Sweep
from tests.fixtures.policy import allowing_records
from tests.unit.fakes import (
    DIGEST,
    EMAIL,
    HOST,
    INTEGRATION_ID,
    ORG,
    SECRET_ID,
    Clock,
    FakeAccounts,
    FakeDataloop,
    FakePublisher,
    FakeRegistry,
    FakeSecrets,
    Sleeper,
    integration_annotations,
)

DAY = 86400.0


@dataclass
class World:
    clock: Clock
    secrets: FakeSecrets
    accounts: FakeAccounts
    dataloop: FakeDataloop
    registry: FakeRegistry
    sleeper: Sleeper
    rotation: KeyRotation

    def provision(
        self, secret_id: str = SECRET_ID, *, rotated_days_ago: float = 40, notes: Mapping[str, str] = {}
    ) -> ServiceAccountKey:
        """A managed integration as provisioning leaves it: one key, aliased current, held by Dataloop.

        ``notes`` are annotations set over the usual ones."""
        key = self.accounts.add(notes.get(Annotation.SERVICE_ACCOUNT) or EMAIL)
        annotations = integration_annotations(
            **{Annotation.ROTATED_AT: timestamp(self.clock() - timedelta(days=rotated_days_ago))}
        )
        annotations.update(notes)
        self.secrets.put(secret_id, annotations)
        self.secrets.raw_add(secret_id, key.json_text, "current")
        self.dataloop.holds[(ORG, annotations[Annotation.INTEGRATION_ID])] = key.key_id
        return key

    def aliases(self, secret_id: str = SECRET_ID) -> dict[str, int]:
        return dict(self.secrets.secrets[secret_id].aliases)

    def annotations(self, secret_id: str = SECRET_ID) -> dict[str, str]:
        return dict(self.secrets.secrets[secret_id].annotations)

    def key_of(self, alias: str, secret_id: str = SECRET_ID) -> str:
        return self.secrets.key_id_of(secret_id, self.aliases(secret_id)[alias])

    def rotate(self, **options: object):
        return self.rotation.rotate(SECRET_ID, **options)  # type: ignore[arg-type]

    def assert_converged(self) -> None:
        """The steady state: current and previous keys only, Dataloop holds current, no lease, no strays."""
        aliases = self.aliases()
        assert "pending" not in aliases
        live = set(self.accounts.live())
        recorded = {self.key_of(a) for a in ("current", "previous") if a in aliases}
        recorded |= {r.key_id for r in retired_keys(self.annotations()).values() if r.key_id}
        assert live == recorded, f"orphan keys {live - recorded}"
        assert self.dataloop.held() == self.key_of("current")
        assert Annotation.ROTATION_LEASE not in self.annotations()
        waiting = set(retired_keys(self.annotations()))
        enabled = {n for n, s in self.secrets.list_versions(SECRET_ID).items() if s == "ENABLED"}
        assert enabled == set(aliases.values()) | waiting


def make_world(**options: object) -> World:
    clock = Clock()
    secrets = FakeSecrets()
    accounts = FakeAccounts(clock)
    dataloop = FakeDataloop()
    registry = FakeRegistry(accounts)
    sleeper = Sleeper()
    probe = KeyProbe(
        registry,
        initial_backoff=1.0,
        max_backoff=8.0,
        confirmations=2,
        confirm_interval=1.0,
        sleep=sleeper.sleep,
        monotonic=sleeper.monotonic,
    )
    settings: dict[str, object] = {
        "grace_period_seconds": 0.0,
        "test_timeout_seconds": 60.0,
        "lease_seconds": 900.0,
        "policy": allowing_records(ORG, EMAIL),
    }
    settings.update(options)
    rotation = KeyRotation(
        secrets,
        accounts,
        lambda: dataloop,
        probe,
        clock=clock,
        monotonic=sleeper.monotonic,
        **settings,  # type: ignore[arg-type]
    )
    return World(clock, secrets, accounts, dataloop, registry, sleeper, rotation)


@pytest.fixture
def world() -> World:
    return make_world()


# -- the happy path ----------------------------------------------------------------------------------


def test_a_rotation_creates_tests_sets_and_finishes_in_that_order(world: World) -> None:
    old = world.provision()

    outcome = world.rotate()

    assert outcome.status is Status.OK, outcome.reason
    assert outcome.kind == "rotation"
    new_id = world.key_of("current")
    assert new_id != old.key_id
    assert world.aliases() == {"previous": 1, "current": 2}
    assert outcome.details["old_key_id"] == old.key_id and outcome.details["new_key_id"] == new_id
    assert [s["step"] for s in outcome.details["steps"]] == ["create", "test", "set", "finish"]
    assert all(s["outcome"] == "done" for s in outcome.details["steps"])
    assert set(outcome.durations_ms) >= {"create", "test", "set", "finish", "total"}
    # Dataloop was given the key only after the registry took it, once.
    assert world.dataloop.updates == [(ORG, INTEGRATION_ID, new_id)]
    assert world.registry.resolved and world.registry.forgotten >= 2
    assert parse_timestamp(world.annotations()[Annotation.ROTATED_AT]) == world.clock()
    assert created_keys(world.annotations()) == {new_id}  # the ledger names the key it made
    # The challenge the test step met is recorded, so cold on_push instances skip asking for it.
    assert (
        world.annotations()[Annotation.REGISTRY_CHALLENGE] == f'Bearer realm="https://{HOST}/v2/token",service="{HOST}"'
    )
    assert outcome.subject == {"secret_id": SECRET_ID, "integration": "team-a", "service_account": EMAIL}
    world.assert_converged()


def test_a_redelivered_rotate_request_rotates_once(world: World) -> None:
    world.provision()

    first = world.rotate(force=True, request_id="req-7")
    key = world.key_of("current")
    again = world.rotate(force=True, request_id="req-7")

    assert first.status is Status.OK
    assert (again.status, again.code, again.request_id) == (Status.SKIPPED, "already-rotated", "req-7")
    assert world.key_of("current") == key and len(world.dataloop.updates) == 1
    assert world.rotate(force=True, request_id="req-8").status is Status.OK  # another request rotates
    assert world.key_of("current") != key
    assert world.rotate(force=True).status is Status.OK  # and so does a scheduled or SECRET_ROTATE run
    assert Annotation.ROTATED_FOR_REQUEST not in world.annotations()


def test_the_old_previous_key_is_deleted_when_its_grace_period_has_passed(world: World) -> None:
    first = world.provision()
    world.rotate()
    world.clock.advance(31 * DAY)

    outcome = world.rotate()

    assert outcome.status is Status.OK
    assert world.aliases() == {"previous": 2, "current": 3}
    assert first.key_id not in world.accounts.live()
    assert outcome.details["retired_keys_deleted"] == [first.key_id]
    assert world.secrets.state_of(SECRET_ID, 1) == "DISABLED"
    assert len(world.accounts.live()) == 2
    world.assert_converged()


def test_within_the_grace_period_a_retired_key_is_kept_and_deleted_by_a_later_run() -> None:
    world = make_world(grace_period_seconds=2 * 3600)
    first = world.provision(rotated_days_ago=0)  # provisioned just now
    world.rotate(force=True)
    world.clock.advance(600)
    world.rotate(force=True)

    assert first.key_id in world.accounts.live()  # stopped being current 10 minutes ago
    assert set(retired_keys(world.annotations())) == {1}
    assert world.secrets.state_of(SECRET_ID, 1) == "ENABLED"
    world.assert_converged()

    world.clock.advance(3 * 3600)
    outcome = world.rotate(force=True)

    assert first.key_id not in world.accounts.live()
    assert first.key_id in outcome.details["retired_keys_deleted"]
    assert world.secrets.state_of(SECRET_ID, 1) == "DISABLED"
    world.assert_converged()


def test_twenty_back_to_back_rotations_never_hold_more_than_three_keys(world: World) -> None:
    world.provision()
    held_before = []
    original = world.accounts.create_key

    def counting(email: str) -> ServiceAccountKey:
        key = original(email)
        held_before.append(len(world.accounts.live()))
        return key

    world.accounts.create_key = counting  # type: ignore[method-assign]
    for _ in range(20):
        assert world.rotate(force=True).status is Status.OK
        assert len(world.accounts.live()) == 2
    assert max(held_before) == 3
    world.assert_converged()


# -- due-ness, dry runs, the lease ------------------------------------------------------------------


def test_a_rotation_that_is_not_due_is_skipped_without_a_write_and_force_overrides(world: World) -> None:
    world.provision(rotated_days_ago=3)

    outcome = world.rotate()

    assert outcome.status is Status.SKIPPED and outcome.code == "not-due"
    assert world.secrets.write_calls == 0 and world.accounts.calls == []
    assert world.rotate(force=True).status is Status.OK


def test_the_rotation_period_annotation_overrides_the_default(world: World) -> None:
    world.provision(rotated_days_ago=3, notes={Annotation.ROTATION_PERIOD: str(2 * DAY)})
    assert world.rotate().status is Status.OK


def test_due_is_computed_from_rotated_at_and_the_period() -> None:
    secrets, clock = FakeSecrets(), Clock()
    secrets.put("s", {Annotation.ROTATED_AT: timestamp(clock() - timedelta(days=10))})
    record = secrets.record("s")
    assert due_at(record, 30 * DAY) == clock() + timedelta(days=20)
    assert not is_due(record, clock(), 30 * DAY) and is_due(record, clock(), 10 * DAY)
    secrets.touch("s", **{Annotation.ROTATION_PERIOD: "nonsense"})
    assert not is_due(secrets.record("s"), clock(), 30 * DAY)
    secrets.touch("s", **{Annotation.ROTATION_PERIOD: "0"})  # never "rotate on every sweep"
    assert not is_due(secrets.record("s"), clock(), 30 * DAY)
    secrets.put("never", {})
    assert due_at(secrets.record("never"), DAY) is None and is_due(secrets.record("never"), clock(), DAY)


def test_a_dry_run_reports_the_plan_and_writes_nothing(world: World) -> None:
    old = world.provision()
    orphan = world.accounts.add()
    world.secrets.touch(SECRET_ID, **{Annotation.CREATED_KEYS: orphan.key_id})  # made, never stored

    outcome = world.rotate(dry_run=True)

    assert outcome.status is Status.SKIPPED and outcome.code == "dry-run"
    assert outcome.details["old_key_id"] == old.key_id and outcome.details["orphans"] == [orphan.key_id]
    plan = " | ".join(outcome.details["plan"])
    assert "delete orphan keys" in plan and "create a key" in plan and PROBE_IMAGE in plan and INTEGRATION_ID in plan
    assert world.secrets.write_calls == 0
    assert world.accounts.count("create_key") == 0 and world.accounts.count("delete_key") == 0
    assert world.dataloop.calls == [] and world.registry.calls == []


def test_the_dry_run_setting_makes_every_run_a_dry_run() -> None:
    world = make_world(dry_run=True)
    world.provision()
    assert world.rotate().code == "dry-run"
    assert world.secrets.write_calls == 0


def test_a_live_lease_of_another_run_skips_without_writing(world: World) -> None:
    world.provision()
    lease = Lease("someone-else", world.clock() + timedelta(minutes=5))
    world.secrets.touch(SECRET_ID, **{Annotation.ROTATION_LEASE: lease.to_annotation()})

    outcome = world.rotate(force=True)

    assert outcome.status is Status.SKIPPED and outcome.code == "rotation-in-progress"
    assert "someone-else" in outcome.reason
    assert world.secrets.write_calls == 0 and world.accounts.calls == []


def test_an_expired_lease_is_taken_over(world: World) -> None:
    world.provision()
    lease = Lease("crashed-run", world.clock() - timedelta(seconds=1))
    world.secrets.touch(SECRET_ID, **{Annotation.ROTATION_LEASE: lease.to_annotation()})

    assert world.rotate().status is Status.OK
    world.assert_converged()


def test_a_run_that_loses_the_race_for_the_lease_is_skipped(world: World) -> None:
    world.provision()
    rival = Lease("rival", world.clock() + timedelta(minutes=5)).to_annotation()
    world.secrets.before_update = lambda sid: world.secrets.touch(sid, **{Annotation.ROTATION_LEASE: rival})

    outcome = world.rotate()

    assert outcome.status is Status.SKIPPED and outcome.code == "rotation-in-progress"
    assert world.accounts.count("create_key") == 0
    assert world.annotations()[Annotation.ROTATION_LEASE] == rival  # not released: not ours


def test_an_unrelated_write_during_the_run_is_merged_not_lost(world: World) -> None:
    world.provision()
    # Someone records a reference test result just before our finish (the 4th update).
    updates = 0
    original = world.secrets.update_secret

    def racing(secret_id: str, **kwargs: object):
        nonlocal updates
        updates += 1
        if updates == 3:
            world.secrets.touch(secret_id, **{Annotation.LAST_TEST: '{"status":"passed"}'})
        return original(secret_id, **kwargs)  # type: ignore[arg-type]

    world.secrets.update_secret = racing  # type: ignore[method-assign]
    assert world.rotate().status is Status.OK
    assert world.annotations()[Annotation.LAST_TEST] == '{"status":"passed"}'
    world.assert_converged()


def test_a_run_whose_lease_was_taken_over_stops_writing(world: World) -> None:
    world.provision()
    original = world.dataloop.integrations

    def steal(org_id: str):
        thief = Lease("thief", world.clock() + timedelta(minutes=5)).to_annotation()
        world.secrets.touch(SECRET_ID, **{Annotation.ROTATION_LEASE: thief})
        return original(org_id)

    world.dataloop.integrations = steal  # type: ignore[method-assign]
    outcome = world.rotate()

    assert outcome.status is Status.FAILED and outcome.code == "lease-lost"
    assert "pending" in world.aliases()  # the thief resumes from here
    assert "thief" in world.annotations()[Annotation.ROTATION_LEASE]


# -- crashes at every point, then a re-run ---------------------------------------------------------

CRASHES = [
    ("secrets", "add_version", 1, "between creating the key and storing it"),
    ("secrets", "update_secret", 2, "between storing the key and aliasing it pending"),
    ("registry", "resolve", 0, "during the test"),
    ("dataloop", "update_credentials", 1, "during set"),
    ("secrets", "update_secret", 3, "at finish"),
]


@pytest.mark.parametrize(("fake", "method", "nth", "where"), CRASHES, ids=[c[3] for c in CRASHES])
def test_a_run_interrupted_anywhere_is_finished_by_the_next_run(
    world: World, fake: str, method: str, nth: int, where: str
) -> None:
    old = world.provision()
    if fake == "registry":
        world.registry.down = True  # through the whole test step
    else:
        error = DataloopUnavailable("Dataloop 503") if fake == "dataloop" else ServiceUnavailable("unavailable")
        getattr(world, fake).fail_at(method, nth, error)

    with pytest.raises(TransientError):
        world.rotate()

    assert Annotation.ROTATION_LEASE not in world.annotations()  # released on the way out
    assert world.key_of("current") == old.key_id and old.key_id in world.accounts.live()
    held = world.dataloop.held()
    assert held == old.key_id or (where == "at finish" and held == world.key_of("pending"))
    world.registry.down = False

    outcome = world.rotate()

    assert outcome.status is Status.OK, outcome.reason
    assert outcome.details["old_key_id"] == old.key_id
    assert world.aliases()["previous"] == 1
    world.assert_converged()


def test_an_orphan_from_a_crash_is_deleted_and_the_stray_version_disabled(world: World) -> None:
    world.provision()
    # updates: take the lease, record the new key in the ledger, alias it pending (fails)
    world.secrets.fail_at("update_secret", 3, ServiceUnavailable("Secret Manager unavailable"))
    with pytest.raises(ServiceUnavailable):
        world.rotate()
    orphan = world.secrets.key_id_of(SECRET_ID, 2)
    assert orphan in world.accounts.live() and world.aliases() == {"current": 1}

    outcome = world.rotate()

    assert outcome.details["orphan_keys_deleted"] == [orphan]
    assert outcome.details["stray_versions_disabled"] == [2]
    assert world.secrets.state_of(SECRET_ID, 2) == "DISABLED"
    assert world.aliases() == {"previous": 1, "current": 3}
    world.assert_converged()


def test_a_resumed_run_says_so(world: World) -> None:
    world.provision()
    world.dataloop.fail_next("update_credentials", DataloopUnavailable("Dataloop 503"))
    with pytest.raises(DataloopUnavailable):
        world.rotate()
    assert "pending" in world.aliases()

    outcome = world.rotate()

    assert outcome.status is Status.OK and outcome.details["resumed"] is True
    assert outcome.details["steps"][0] == {
        "step": "create",
        "outcome": "resumed",
        "duration_ms": outcome.details["steps"][0]["duration_ms"],
        "note": "version 2 is pending from an earlier run",
    }
    assert world.accounts.count("create_key") == 1


def test_retiring_a_key_is_best_effort_after_a_successful_rotation(world: World) -> None:
    first = world.provision()
    world.rotate()
    world.clock.advance(31 * DAY)
    world.accounts.fail_next("delete_key", ServiceUnavailable("IAM unavailable"))

    outcome = world.rotate()

    assert outcome.status is Status.OK
    assert first.key_id in world.accounts.live()
    assert set(retired_keys(world.annotations())) == {1}  # kept for the next run
    world.clock.advance(31 * DAY)
    world.rotate()
    assert first.key_id not in world.accounts.live()
    world.assert_converged()


def test_a_failed_lease_release_is_reported_and_the_lease_expires_by_itself(world: World) -> None:
    world.provision()
    # updates: take the lease, record the new key, alias pending, finish, release
    world.secrets.fail_at("update_secret", 5, ServiceUnavailable("Secret Manager unavailable"))

    outcome = world.rotate()

    assert outcome.status is Status.OK and outcome.details["lease"].startswith("not released")
    assert world.rotate(force=True).code == "rotation-in-progress"
    world.clock.advance(901)
    assert world.rotate(force=True).status is Status.OK


# -- the test step -----------------------------------------------------------------------------------


def test_a_key_that_works_only_after_propagation_is_waited_for(world: World) -> None:
    world.provision()
    world.registry.delay_tries = 4

    outcome = world.rotate()

    assert outcome.status is Status.OK
    test = outcome.details["steps"][1]
    assert test["step"] == "test" and "6 tries" in test["note"]
    assert world.sleeper.slept == [1.0, 2.0, 4.0, 8.0, 1.0]  # backoff, then one confirmation


def test_a_key_that_never_works_is_rolled_back_and_dataloop_never_sees_it(world: World) -> None:
    old = world.provision()
    world.registry.never = {f"{n:040x}" for n in range(0xA000, 0xA100)} - {old.key_id}

    outcome = world.rotate()

    assert outcome.status is Status.FAILED and outcome.code == "key-never-worked"
    assert [(s["step"], s["outcome"]) for s in outcome.details["steps"]] == [
        ("create", "done"),
        ("test", "failed"),
        ("rollback", "done"),
    ]
    assert "Dataloop was never touched" in outcome.reason
    assert world.dataloop.updates == []
    assert world.dataloop.held() == old.key_id
    assert world.aliases() == {"current": 1}
    assert world.accounts.live() == [old.key_id]
    assert world.secrets.state_of(SECRET_ID, 2) == "DISABLED"
    assert Annotation.ROTATION_LEASE not in world.annotations()
    assert sum(world.sleeper.slept) <= 60  # bounded by the test timeout


def test_the_test_step_never_outlives_the_lease() -> None:
    world = make_world(test_timeout_seconds=420.0, lease_seconds=60.0)
    world.provision()
    world.registry.never = {f"{n:040x}" for n in range(0xA001, 0xA100)}

    assert world.rotate().code == "key-never-worked"
    assert sum(world.sleeper.slept) <= 60 - 30


def test_a_registry_that_stays_down_keeps_the_key_pending(world: World) -> None:
    world.provision()
    world.registry.down = True

    with pytest.raises(RegistryUnavailable):
        world.rotate()

    assert "pending" in world.aliases() and len(world.accounts.live()) == 2
    world.registry.down = False
    assert world.rotate().status is Status.OK
    world.assert_converged()


def test_a_resumed_run_that_must_roll_back_gives_dataloop_the_current_key_first(world: World) -> None:
    old = world.provision()
    # An earlier run reached set (Dataloop holds the pending key), then stopped before finish.
    world.secrets.fail_at("update_secret", 4, ServiceUnavailable("Secret Manager unavailable"))
    with pytest.raises(ServiceUnavailable):
        world.rotate()
    pending = world.key_of("pending")
    assert world.dataloop.held() == pending
    del world.accounts.keys[pending]  # someone deleted the pending key meanwhile

    outcome = world.rotate()

    assert outcome.status is Status.FAILED and outcome.code == "key-never-worked"
    assert "Dataloop given the current key again" in outcome.reason
    assert world.dataloop.held() == old.key_id
    world.assert_converged()


def test_a_resumed_rollback_keeps_the_pending_key_when_dataloop_refuses_the_current_one(world: World) -> None:
    world.provision()
    world.dataloop.fail_next("update_credentials", DataloopUnavailable("Dataloop 503"))
    with pytest.raises(DataloopUnavailable):
        world.rotate()
    pending = world.key_of("pending")
    world.registry.never = {pending}
    world.dataloop.fail_next("update_credentials", DataloopNotFound("integration deleted", status=404))

    outcome = world.rotate()

    assert outcome.status is Status.FAILED
    assert "kept the pending version 2" in outcome.reason
    assert pending in world.accounts.live() and world.aliases()["pending"] == 2


def test_the_probe_prefers_the_canary_image_and_falls_back_to_a_probe_name() -> None:
    from shared.model.integrations import ManagedIntegration

    secrets = FakeSecrets()
    secrets.put("s", integration_annotations(**{Annotation.CANARY_IMAGE: f"{HOST}/proj/images/canary:v1"}))
    image, why = probe_target(ManagedIntegration.from_secret(secrets.record("s")))
    assert (str(image), why) == (f"{HOST}/proj/images/canary:v1", "canary image")

    for canary in ("not an image", "other-docker.pkg.dev/proj/images/canary:v1"):
        secrets.put("s", integration_annotations(**{Annotation.CANARY_IMAGE: canary}))
        image, why = probe_target(ManagedIntegration.from_secret(secrets.record("s")))
        assert (str(image), why) == (f"{HOST}/proj/images/{PROBE_IMAGE}:latest", "probe name")


def test_the_canary_image_is_resolved_when_annotated(world: World) -> None:
    world.provision(notes={Annotation.CANARY_IMAGE: f"{HOST}/proj/images/canary:v1"})
    world.registry.images[(HOST, "proj/images/canary")] = {"v1": DIGEST}

    outcome = world.rotate()

    assert outcome.status is Status.OK
    assert {image for image, _ in world.registry.resolved} == {f"{HOST}/proj/images/canary:v1"}
    assert "resolved canary image" in outcome.details["steps"][1]["note"]


def test_an_unexpected_registry_answer_fails_the_probe_at_once(world: World) -> None:
    world.provision()
    world.registry.fail_next("resolve", PermanentError("HTTP 400 from the registry", code="registry-error"))

    outcome = world.rotate()

    assert outcome.status is Status.FAILED and outcome.code == "key-never-worked"
    assert world.sleeper.slept == [] and world.aliases() == {"current": 1}


# -- set -----------------------------------------------------------------------------------------------


def test_dataloop_refusing_the_new_key_rolls_back_and_revokes_nothing(world: World) -> None:
    old = world.provision()
    world.dataloop.fail_next("update_credentials", DataloopNotFound("integration not found", status=404))

    outcome = world.rotate()

    assert outcome.status is Status.FAILED and outcome.code == "dataloop-not-found"
    assert [(s["step"], s["outcome"]) for s in outcome.details["steps"]][-2:] == [
        ("set", "failed"),
        ("rollback", "done"),
    ]
    assert world.dataloop.held() == old.key_id
    assert world.accounts.live() == [old.key_id]
    world.assert_converged()


def test_dataloop_unavailable_during_set_leaves_the_key_pending_and_revokes_nothing(world: World) -> None:
    old = world.provision()
    world.dataloop.fail_next("update_credentials", DataloopUnavailable("Dataloop 503"))

    with pytest.raises(DataloopUnavailable):
        world.rotate()

    assert old.key_id in world.accounts.live() and world.dataloop.held() == old.key_id
    assert world.aliases()["current"] == 1 and "pending" in world.aliases()
    assert world.accounts.count("delete_key") == 0


# -- the key limit and orphans -----------------------------------------------------------------------


def test_the_key_limit_is_refused_before_creating_a_key(world: World) -> None:
    for _ in range(8):
        world.accounts.add(at=world.clock() - timedelta(days=100))  # a person's keys, older than ours
    world.provision()

    outcome = world.rotate()

    assert outcome.status is Status.FAILED and outcome.code == "key-limit"
    assert "9 user-managed keys" in outcome.reason and "--managed-by=user" in outcome.reason
    assert world.accounts.count("create_key") == 0 and len(world.accounts.live()) == 9
    assert [(s["step"], s["outcome"]) for s in outcome.details["steps"]] == [("create", "failed")]
    assert Annotation.ROTATION_LEASE not in world.annotations()


@pytest.mark.parametrize("theirs", [7, 8])
def test_a_dry_run_foresees_the_key_limit_exactly_as_the_run_meets_it(world: World, theirs: int) -> None:
    for _ in range(theirs):
        world.accounts.add(at=world.clock() - timedelta(days=100))
    world.provision()

    plan = " | ".join(world.rotate(dry_run=True).details["plan"])
    outcome = world.rotate()

    assert ("fail: " in plan) is (outcome.code == "key-limit")
    assert ("create a key" in plan) is (outcome.status is Status.OK)


def test_orphans_are_cleaned_first_so_the_limit_is_not_reached(world: World) -> None:
    world.provision()
    orphans = [world.accounts.add().key_id for _ in range(8)]
    world.secrets.touch(SECRET_ID, **{Annotation.CREATED_KEYS: ",".join(orphans)})  # made by crashed runs

    outcome = world.rotate()

    assert outcome.status is Status.OK
    assert sorted(outcome.details["orphan_keys_deleted"]) == sorted(orphans)
    world.assert_converged()


def test_keys_the_ledger_does_not_list_and_keys_of_other_integrations_are_not_orphans(world: World) -> None:
    world.provision()
    person = world.accounts.add()  # new and stored nowhere, but not made by this system
    in_flight = world.accounts.add()  # a sibling's provisioning made it; its record is not managed yet
    world.secrets.put(
        "dataloop-gar-team-c",
        {Annotation.SERVICE_ACCOUNT: EMAIL, Annotation.CREATED_KEYS: in_flight.key_id},
        labels={},
    )
    sibling = world.provision("dataloop-gar-team-b", notes={Annotation.INTEGRATION_ID: "integration-2"})
    retired_elsewhere = world.accounts.add()
    world.secrets.touch(
        "dataloop-gar-team-b",
        **{
            RETIRED_KEYS: json.dumps(
                {"9": {"key_id": retired_elsewhere.key_id, "retired_at": timestamp(world.clock())}}
            )
        },
    )
    # Even a (hand-edited) ledger entry does not make a key another managed record stores an orphan.
    world.secrets.touch(SECRET_ID, **{Annotation.CREATED_KEYS: f"{sibling.key_id},{retired_elsewhere.key_id}"})

    outcome = world.rotate()

    assert outcome.status is Status.OK and "orphan_keys_deleted" not in outcome.details
    assert {person.key_id, in_flight.key_id, sibling.key_id, retired_elsewhere.key_id} <= set(world.accounts.live())


def test_no_key_is_called_an_orphan_when_a_version_cannot_be_read(world: World) -> None:
    world.provision()
    world.rotate()
    world.clock.advance(31 * DAY)
    stranger = world.accounts.add()
    world.secrets.touch(SECRET_ID, **{Annotation.CREATED_KEYS: stranger.key_id})
    world.secrets.set_version_state(SECRET_ID, 1, "disable")  # previous unreadable

    outcome = world.rotate()

    assert outcome.status is Status.OK
    assert stranger.key_id in world.accounts.live()


def test_key_creation_refused_by_org_policy_is_reported(world: World) -> None:
    world.provision()
    world.accounts.creation_disabled = True

    outcome = world.rotate()

    assert outcome.status is Status.FAILED and outcome.code == "key-creation-disabled"
    assert world.aliases() == {"current": 1}


def test_a_key_refused_by_secret_manager_is_not_left_behind(world: World) -> None:
    old = world.provision()
    world.secrets.fail_next("add_version", PermanentError("payload too large", code="invalid-argument"))

    outcome = world.rotate()

    assert outcome.status is Status.FAILED and outcome.code == "invalid-argument"
    assert world.accounts.live() == [old.key_id]


def test_the_current_key_is_never_deleted_even_when_the_record_says_so(world: World) -> None:
    old = world.provision()
    world.rotate()
    world.clock.advance(31 * DAY)
    bogus = {"7": {"key_id": world.key_of("current"), "retired_at": timestamp(world.clock() - timedelta(days=90))}}
    world.secrets.touch(SECRET_ID, **{RETIRED_KEYS: json.dumps(bogus)})
    current_before = world.key_of("current")

    world.rotate()

    assert current_before in world.accounts.live()  # now previous: kept
    assert old.key_id not in world.accounts.live()


# -- what is not a rotation ------------------------------------------------------------------------


def test_an_integration_name_finds_its_secret_without_a_call_on_the_bare_name(world: World) -> None:
    world.provision()
    outcome = world.rotation.rotate("team-a")
    assert outcome.status is Status.OK and outcome.subject["secret_id"] == SECRET_ID
    assert "team-a" not in world.secrets.named  # Google would refuse it: outside the deployment's grant


def test_a_name_or_an_id_is_told_by_the_prefix_alone_in_one_read(world: World) -> None:
    assert world.rotation.rotate("nope").code == "not-found"
    assert world.secrets.named == ["dataloop-gar-nope"]
    # A name that itself starts with the prefix is reached by its full id, never by the name.
    world.provision("dataloop-gar-dataloop-gar-x")
    world.secrets.named.clear()
    assert world.rotation.rotate("dataloop-gar-x").code == "not-found"
    assert world.secrets.named == ["dataloop-gar-x"]
    assert world.rotation.rotate("dataloop-gar-dataloop-gar-x", force=True).status is Status.OK


def test_unknown_unmanaged_and_incomplete_secrets_fail_clearly(world: World) -> None:
    assert world.rotation.rotate("nope").code == "not-found"
    world.secrets.put("dataloop-gar-plain", integration_annotations(), labels={})
    assert world.rotation.rotate("plain").code == "not-managed"
    world.provision("dataloop-gar-broken", notes={Annotation.SERVICE_ACCOUNT: ""})
    outcome = world.rotation.rotate("dataloop-gar-broken")
    assert outcome.code == "bad-integration" and "service-account" in outcome.reason
    assert world.secrets.write_calls == 0


def test_a_loopback_host_in_production_is_refused_before_any_key_is_made(world: World) -> None:
    """Well-formed (the local cloud uses such hosts), but the deployed registry client lists
    no insecure hosts: the key could never be tested there, so it is not made."""
    world.provision(notes={Annotation.REGISTRY_HOST: "127.0.0.1:5000"})

    outcome = world.rotate()

    assert (outcome.status, outcome.code) == (Status.FAILED, "registry-host-refused"), outcome.reason
    assert world.accounts.count("create_key") == 0 and world.dataloop.updates == []


@pytest.mark.parametrize(
    "host",
    [
        "https://us-central1-docker.pkg.dev/",
        "evil.example",  # edited: the new key would be probed there, and written into Dataloop for it
        "evil.example\\@us-central1-docker.pkg.dev",
        "us-central1-docker.pkg.dev:8443",
        "user@us-central1-docker.pkg.dev",
    ],
)
def test_a_bad_registry_host_is_reported_before_any_key_is_made(world: World, host: str) -> None:
    world.provision(notes={Annotation.REGISTRY_HOST: host})
    outcome = world.rotate()
    assert outcome.code == "bad-integration" and "registry-host" in outcome.reason
    assert world.accounts.count("create_key") == 0
    assert world.dataloop.updates == [] and world.registry.calls == []


def test_a_dry_run_on_an_unreadable_current_key_fails_cleanly(world: World) -> None:
    world.provision()
    world.secrets.set_version_state(SECRET_ID, 1, "disable")
    outcome = world.rotate(dry_run=True)
    assert outcome.status is Status.FAILED and outcome.code == "failed-precondition"


def test_an_unreadable_pending_version_is_rolled_back_rather_than_retried_forever(world: World) -> None:
    old = world.provision()
    world.dataloop.fail_next("update_credentials", DataloopUnavailable("Dataloop 503"))
    with pytest.raises(DataloopUnavailable):
        world.rotate()
    world.secrets.set_version_state(SECRET_ID, 2, "disable")  # someone disabled the pending version

    outcome = world.rotate()

    assert outcome.status is Status.FAILED and outcome.code == "failed-precondition"
    assert [s["step"] for s in outcome.details["steps"]] == ["create", "rollback"]
    assert world.aliases() == {"current": 1} and world.dataloop.held() == old.key_id
    # Its key is an orphan now, and the next rotation removes it.
    assert world.rotate(force=True).details["orphan_keys_deleted"] == [world.secrets.key_id_of(SECRET_ID, 2)]
    world.assert_converged()


def test_a_pending_key_of_another_account_is_never_used(world: World) -> None:
    world.provision()
    stranger = world.accounts.add("someone@else.iam.gserviceaccount.com")
    version = world.secrets.raw_add(SECRET_ID, stranger.json_text, "pending")

    outcome = world.rotate()

    assert outcome.status is Status.FAILED and outcome.code == "bad-key"
    assert world.dataloop.updates[-1][2] != stranger.key_id
    assert stranger.key_id in world.accounts.live("someone@else.iam.gserviceaccount.com")  # not ours to delete
    assert world.secrets.state_of(SECRET_ID, version) == "DISABLED" and "pending" not in world.aliases()


def test_orphan_deletions_are_logged_with_ids_only(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.provision()
    orphan = world.accounts.add()
    world.secrets.touch(SECRET_ID, **{Annotation.CREATED_KEYS: orphan.key_id})
    caplog.set_level(logging.INFO, logger="shared.workflows.rotation.workflow")

    world.rotate()

    (record,) = [r for r in caplog.records if "orphan" in r.getMessage()]
    assert record.key_ids == [orphan.key_id] and record.secret_id == SECRET_ID  # type: ignore[attr-defined]


def test_no_key_material_reaches_the_outcome_or_the_logs(world: World, caplog: pytest.LogCaptureFixture) -> None:
    old = world.provision()
    caplog.set_level(logging.DEBUG)
    world.registry.delay_tries = 1
    outcome = world.rotate()
    world.dataloop.fail_next("update_credentials", DataloopNotFound("gone", status=404))
    failed = world.rotate(force=True)

    texts = [json.dumps(o.to_message()) for o in (outcome, failed)] + [caplog.text]
    keys = [old.json_text] + [world.secrets.secrets[SECRET_ID].versions[v].payload.decode() for v in (2, 3)]
    for text in texts:
        assert "PRIVATE KEY" not in text
        for key in keys:
            private = json.loads(key)["private_key"]
            body = private.split("\n")[1]
            assert body not in text and base64.b64encode(key.encode()).decode()[:40] not in text


# -- the sweep ----------------------------------------------------------------------------------------


def sweep_world(count: int = 50) -> tuple[FakeSecrets, Clock, list[str]]:
    secrets, clock = FakeSecrets(), Clock()
    due = []
    for n in range(count):
        secret_id = f"dataloop-gar-team-{n:02d}"
        days = 40 if n % 5 == 0 else 3
        notes = integration_annotations(
            **{
                Annotation.INTEGRATION_NAME: f"team-{n:02d}",
                Annotation.ROTATED_AT: timestamp(clock() - timedelta(days=days)),
            }
        )
        if n == 7:
            notes.pop(Annotation.ROTATED_AT)  # never rotated: due
        secrets.put(secret_id, notes)
        if days == 40 or n == 7:
            due.append(secret_id)
    secrets.put("unmanaged", integration_annotations(), labels={})
    return secrets, clock, due


def test_the_sweep_lists_once_and_fans_out_one_message_per_due_integration() -> None:
    secrets, clock, due = sweep_world()
    publisher = FakePublisher()
    sweep = Sweep(secrets, PubSubFanOut("projects/p/topics/rotation", publisher=publisher), clock=clock)

    outcome = sweep.run()

    assert secrets.calls == ["list_secrets"]
    assert sorted(p["integration"] for p in publisher.payloads()) == sorted(due)
    assert all(p == {"kind": "rotate", "integration": p["integration"]} for p in publisher.payloads())
    assert {t for t, _, _ in publisher.published} == {"projects/p/topics/rotation"}
    assert publisher.published[0][2] == {"kind": "rotate", "integration": publisher.payloads()[0]["integration"]}
    assert publisher.awaited == len(due)
    assert outcome.status is Status.OK and outcome.kind == "rotation-sweep"
    assert outcome.details["managed"] == 50 and outcome.details["due_count"] == len(due) == 11
    assert outcome.details["published"] == 11


def test_the_sweep_leaves_out_running_rotations_and_includes_interrupted_ones() -> None:
    secrets, clock, due = sweep_world(10)
    lease = Lease("r", clock() + timedelta(minutes=5)).to_annotation()
    secrets.touch(due[0], **{Annotation.ROTATION_LEASE: lease})
    secrets.raw_add("dataloop-gar-team-01", "{}", "pending")  # not due by time, but interrupted
    secrets.put("dataloop-gar-bad", {})  # managed but malformed
    publisher = FakePublisher()

    outcome = Sweep(secrets, PubSubFanOut("t", publisher=publisher), clock=clock).run()

    published = {p["integration"] for p in publisher.payloads()}
    assert published == (set(due) - {due[0]}) | {"dataloop-gar-team-01"}
    assert outcome.details["in_progress"] == [due[0]]
    assert list(outcome.details["invalid"]) == ["dataloop-gar-bad"]


def test_a_dry_sweep_publishes_nothing() -> None:
    secrets, clock, due = sweep_world(10)
    publisher = FakePublisher()
    outcome = Sweep(secrets, PubSubFanOut("t", publisher=publisher), clock=clock).run(dry_run=True)
    assert publisher.published == [] and outcome.status is Status.SKIPPED and outcome.details["due"] == due


def test_a_failed_publish_raises_so_the_sweep_is_redelivered() -> None:
    secrets, clock, due = sweep_world(10)
    publisher = FakePublisher(fail_integrations={due[1]})

    with pytest.raises(ServiceUnavailable, match="1 of 3 rotation messages"):
        Sweep(secrets, PubSubFanOut("t", publisher=publisher), clock=clock).run()
    assert publisher.awaited == 3  # every future awaited, not just up to the first failure


def key_age_lines(caplog: pytest.LogCaptureFixture) -> dict[str, dict[str, object]]:
    lines: dict[str, dict[str, object]] = {}
    for record in caplog.records:
        if hasattr(record, "key_age"):
            assert record.name == "dataloop_gar" and record.levelno == logging.INFO
            assert record.key_age["secret"] not in lines, "one line per integration"
            lines[record.key_age["secret"]] = record.key_age
    return lines


def test_the_sweep_logs_each_keys_age_once_and_names_the_oldest(caplog: pytest.LogCaptureFixture) -> None:
    secrets, clock, _ = sweep_world(10)  # team-00 and team-05 rotated 40 days ago, team-07 never
    secrets.touch("dataloop-gar-team-03", **{Annotation.KEY_EXPIRES_AT: timestamp(clock() + timedelta(days=2))})
    secrets.touch("dataloop-gar-team-05", **{Annotation.ROTATED_AT: timestamp(clock() - timedelta(days=40.5))})
    secrets.put("dataloop-gar-bad", {})  # managed but malformed: no age of a record that is not an integration
    caplog.set_level(logging.INFO, logger="dataloop_gar")

    outcome = Sweep(secrets, PubSubFanOut("t", publisher=FakePublisher()), clock=clock).run()

    lines = key_age_lines(caplog)
    assert set(lines) == {f"dataloop-gar-team-{n:02d}" for n in range(10)} - {"dataloop-gar-team-07"}
    assert lines["dataloop-gar-team-00"] == {
        "integration": "team-00",  # the name, as every other metric's integration label
        "secret": "dataloop-gar-team-00",
        "age_days": 40.0,
        "expires_at": None,
    }
    assert lines["dataloop-gar-team-05"]["age_days"] == 40.5
    assert lines["dataloop-gar-team-01"]["age_days"] == 3.0
    assert lines["dataloop-gar-team-03"]["expires_at"] == timestamp(clock() + timedelta(days=2))
    assert outcome.details["oldest_key_age_days"] == 40.5
    assert outcome.details["oldest_key_integration"] == "dataloop-gar-team-05"
    assert secrets.calls == ["list_secrets"]  # the ages come with the listing


def test_a_dry_sweep_logs_no_key_ages(caplog: pytest.LogCaptureFixture) -> None:
    secrets, clock, _ = sweep_world(10)
    caplog.set_level(logging.INFO, logger="dataloop_gar")
    outcome = Sweep(secrets, PubSubFanOut("t", publisher=FakePublisher()), clock=clock).run(dry_run=True)
    assert key_age_lines(caplog) == {} and outcome.details["oldest_key_age_days"] == 40.0


def test_a_sweep_that_finds_no_rotated_key_names_no_oldest(caplog: pytest.LogCaptureFixture) -> None:
    secrets, clock = FakeSecrets(), Clock()
    secrets.put("dataloop-gar-new", integration_annotations())  # provisioned, never rotated
    caplog.set_level(logging.INFO, logger="dataloop_gar")

    outcome = Sweep(secrets, PubSubFanOut("t", publisher=FakePublisher()), clock=clock).run(dry_run=True)

    assert key_age_lines(caplog) == {}
    assert "oldest_key_age_days" not in outcome.details and "oldest_key_integration" not in outcome.details
    assert outcome.details["due"] == ["dataloop-gar-new"]


# -- the rotation topic's messages ---------------------------------------------------------------------


@dataclass
class Recorder:
    calls: list[tuple[str, dict[str, object]]]

    def rotate(self, secret_id: str, **options: object):
        from shared.model.results import Outcome

        self.calls.append((secret_id, options))
        return Outcome("rotation", Status.OK, "rotated")

    def run(self, **options: object):
        from shared.model.results import Outcome

        self.calls.append(("sweep", options))
        return Outcome("rotation-sweep", Status.OK, "swept")


@pytest.fixture
def routed() -> tuple[RotationMessages, Recorder, FakeSecrets]:
    secrets = FakeSecrets()
    secrets.put(SECRET_ID, integration_annotations())
    secrets.put("someone-elses", {}, labels={})
    secrets.put("dataloop-gar-unlabelled", {}, labels={})
    recorder = Recorder([])
    return RotationMessages(recorder, recorder, secrets), recorder, secrets


def data(payload: object) -> PubSubMessage:
    return PubSubMessage(data=json.dumps(payload).encode(), message_id="m1")


def event(event_type: str, secret: str) -> PubSubMessage:
    return PubSubMessage(data=b'{"name": "x"}', attributes={"eventType": event_type, "secretId": secret})


def test_a_sweep_message_runs_the_sweep(routed) -> None:
    handler, recorder, _ = routed
    assert handler.handle(data({"kind": "sweep"})).kind == "rotation-sweep"
    handler.handle(data({"kind": "sweep", "dry_run": True}))
    assert recorder.calls == [("sweep", {"dry_run": False}), ("sweep", {"dry_run": True})]


def test_a_rotate_message_rotates_one_integration(routed) -> None:
    handler, recorder, _ = routed
    handler.handle(data({"kind": "rotate", "integration": "team-a"}))
    handler.handle(
        data({"kind": "rotate", "integration": SECRET_ID, "force": True, "dry_run": True, "request_id": "r1"})
    )
    assert recorder.calls == [
        ("team-a", {"force": False, "dry_run": False, "request_id": None}),
        (SECRET_ID, {"force": True, "dry_run": True, "request_id": "r1"}),
    ]


def test_a_rejection_quotes_a_huge_value_only_in_part(routed) -> None:
    handler, recorder, _ = routed
    huge = "x" * 20_000  # under the 64 KiB message limit
    payloads = [
        {"kind": huge},
        {"kind": "rotate", "integration": huge},
        {"kind": "rotate", "integration": "x", "force": huge},
        {"kind": "sweep", **{f"field-{n}-{huge[:1000]}": 1 for n in range(50)}},
    ]
    for payload in payloads:
        with pytest.raises(RejectedMessage) as caught:
            handler.handle(data(payload))
        assert len(caught.value.reason) < 2_000 and "..." in caught.value.reason
    assert "and 40 more" in caught.value.reason
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ([1, 2], "must be a JSON object"),
        ({"kind": "rotat"}, "unknown message kind 'rotat'"),
        ({}, "unknown message kind None"),
        ({"kind": "rotate"}, "needs 'integration'"),
        ({"kind": "rotate", "integration": "a/b"}, "needs 'integration'"),
        ({"kind": "rotate", "integration": "x", "force": "yes"}, "'force' must be true or false"),
        ({"kind": "rotate", "integration": "x", "forse": True}, "unknown field(s) 'forse'"),
        ({"kind": "rotate", "integration": "x", "request_id": 7}, "'request_id' must be a string"),
        ({"kind": "sweep", "integration": "x"}, "sweep message has unknown field(s) 'integration'"),
    ],
)
def test_malformed_messages_are_rejected_precisely(routed, payload: object, fragment: str) -> None:
    handler, recorder, _ = routed
    with pytest.raises(RejectedMessage) as caught:
        handler.handle(data(payload))
    assert fragment in caught.value.reason
    assert recorder.calls == []


def test_secret_rotate_rotates_a_managed_secret_and_forces_it(routed) -> None:
    handler, recorder, _ = routed
    handler.handle(event("SECRET_ROTATE", f"projects/123456/secrets/{SECRET_ID}"))
    assert recorder.calls == [(SECRET_ID, {"force": True})]


@pytest.mark.parametrize(
    ("event_type", "secret", "fragment"),
    [
        ("SECRET_VERSION_ADD", f"projects/1/secrets/{SECRET_ID}", "not a rotation signal"),
        ("TOPIC_CONFIGURED", f"projects/1/secrets/{SECRET_ID}", "not a rotation signal"),
        ("SECRET_ROTATE", "projects/1/secrets/someone-elses", "not an integration record"),
        ("SECRET_ROTATE", "projects/1/secrets/dataloop-gar-unlabelled", "not a managed integration"),
        ("SECRET_ROTATE", "projects/1/secrets/dataloop-gar-gone", "no longer exists"),
    ],
)
def test_other_secret_manager_events_are_ignored(routed, event_type: str, secret: str, fragment: str) -> None:
    handler, recorder, secrets = routed
    outcome = handler.handle(event(event_type, secret))
    assert outcome.status is Status.IGNORED and fragment in outcome.reason
    assert recorder.calls == []
    # Outside the prefix, the deployed function may not read it: so it does not try.
    assert all(name.startswith("dataloop-gar-") for name in secrets.named)


def test_a_rotate_notification_without_a_secret_name_is_rejected(routed) -> None:
    handler, _, _ = routed
    with pytest.raises(RejectedMessage, match="secretId=projects/NUMBER/secrets/ID"):
        handler.handle(event("SECRET_ROTATE", "dataloop-gar-team-a"))


# -- the access policy: a record is untrusted --------------------------------------------------------

ROTATE_FUNCTION = "dataloop-gar-rotate@proj-123.iam.gserviceaccount.com"


def policy_world() -> World:
    from shared.model.policy import AccessPolicy

    policy = AccessPolicy(
        org_ids=frozenset(["org-1"]),
        account_projects=frozenset(["proj-123"]),
        service_accounts=("*@proj-123.iam.gserviceaccount.com",),
        deployment_accounts=frozenset([ROTATE_FUNCTION]),
    )
    return make_world(policy=policy)


PULLER = "puller@proj-123.iam.gserviceaccount.com"


def test_a_record_within_the_policy_rotates() -> None:
    world = policy_world()
    world.provision(notes={Annotation.SERVICE_ACCOUNT: PULLER})

    assert world.rotate(force=True).status is Status.OK


@pytest.mark.parametrize(
    "edited, field",
    [
        ({Annotation.SERVICE_ACCOUNT: ROTATE_FUNCTION}, "service-account"),
        ({Annotation.SERVICE_ACCOUNT: "123456789012-compute@developer.gserviceaccount.com"}, "service-account"),
        ({Annotation.SERVICE_ACCOUNT: "puller@evil-proj-1.iam.gserviceaccount.com"}, "service-account"),
        ({Annotation.ORG: "someone-elses-org"}, "dataloop-org"),
    ],
)
def test_a_record_edited_to_target_what_the_policy_refuses_is_not_rotated(edited: dict[str, str], field: str) -> None:
    world = policy_world()
    world.provision(notes={Annotation.SERVICE_ACCOUNT: PULLER, **edited})
    account = edited.get(Annotation.SERVICE_ACCOUNT, PULLER)
    keys_before = list(world.accounts.live(account))

    outcome = world.rotate(force=True)

    assert (outcome.status, outcome.code) == (Status.FAILED, "not-allowed"), outcome.reason
    assert f"annotation {field}" in outcome.reason
    assert world.accounts.live(account) == keys_before, "no key may be made for an account outside the policy"
    assert Annotation.ROTATION_LEASE not in world.annotations()


# -- how the last run ended, for ``status`` -------------------------------------------------------------


def test_how_a_rotation_ended_is_recorded_in_the_write_that_drops_the_lease(world: World) -> None:
    world.provision()
    assert world.rotate().status is Status.OK
    ok = json.loads(world.annotations()[Annotation.LAST_ROTATION])
    assert ok == {"status": "ok", "code": None, "at": timestamp(world.clock())}
    again = make_world()
    again.provision()
    again.registry.never = {f"{n:040x}" for n in range(0xA000, 0xA100)}
    assert again.rotate().status is Status.FAILED
    failed = json.loads(again.annotations()[Annotation.LAST_ROTATION])
    assert failed["status"] == "failed" and failed["code"] == "key-never-worked"


def test_the_end_is_recorded_by_the_write_that_drops_the_lease_not_by_one_more(world: World) -> None:
    world.provision()
    world.rotate()
    secret_id, fields = world.secrets.writes[-1]
    assert secret_id == SECRET_ID and Annotation.ROTATION_LEASE not in fields["annotations"]
    assert Annotation.LAST_ROTATION in fields["annotations"]
    before = [f["annotations"] for s, f in world.secrets.writes[:-1] if s == SECRET_ID and f.get("annotations")]
    assert all(Annotation.LAST_ROTATION not in notes for notes in before)
