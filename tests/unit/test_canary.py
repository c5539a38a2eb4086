"""The platform tier's lock: one run per canary service, the original image recorded once.

Two pushes tested at once on one canary service used to race: the second read the
first one's test image as "the original" and restored it. These tests drive exactly that
overlap with threads and the fakes, and the lock's other paths: a lease held past the
wait, a missing lock secret, an expired lease, a bad service id; and the watch, which
must not count what the run before it left behind.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from shared.core.errors import TransientError
from shared.model.integrations import MANAGED_LABEL
from shared.model.lease import Lease
from shared.workflows.canary import CanaryTest
from shared.workflows.canary_lock import (
    LEASE,
    LOCK_LABEL,
    ORIGINAL,
    CanaryLock,
    ensure_lock,
    lock_secret_id,
)
from tests.unit.fakes import FakeSecrets, FakeServices

SERVICE = "6543abcd"
LOCK = f"dataloop-gar_canary-{SERVICE}"
BASE = "gcr.io/team/runner@sha256:" + "0" * 64
FIRST = "us-central1-docker.pkg.dev/proj/images/app@sha256:" + "1" * 64
SECOND = "us-central1-docker.pkg.dev/proj/images/app@sha256:" + "2" * 64
WAIT = 5.0  # seconds: how long any thread of these tests may block before the test fails


def world() -> tuple[FakeSecrets, FakeServices]:
    secrets = FakeSecrets()
    assert ensure_lock(secrets, SERVICE) == "created"
    return secrets, FakeServices(images={SERVICE: BASE})


def canary(
    secrets: FakeSecrets,
    services: FakeServices,
    *,
    wait: float = WAIT,
    timeout: float = WAIT,
    **lock_options: object,
) -> CanaryTest:
    lock = CanaryLock(secrets, lease_seconds=60, wait_seconds=wait, poll_seconds=0.01, **lock_options)  # type: ignore[arg-type]
    return CanaryTest(services, lock, timeout=timeout, poll_interval=0.01)


def test_two_overlapping_runs_on_one_service_never_restore_a_test_image() -> None:
    """The second run starts while the first is mid-watch, on FIRST; neither may restore FIRST."""
    secrets, services = world()
    first_watching = threading.Event()  # the first run has pointed the service at FIRST
    second_tried = threading.Event()  # the second run has read the service, or is waiting for the lease
    first_done = threading.Event()

    def hook(method: str, service_id: str) -> None:
        me = threading.current_thread().name
        if me == "first" and method == "status":
            first_watching.set()
            assert second_tried.wait(WAIT), "the second run never started"
        if me == "second" and method == "get":
            second_tried.set()
        if me == "second" and method == "status":
            first_done.wait(WAIT)  # so that the second run restores last

    services.hook = hook

    def second_sleep(seconds: float) -> None:
        second_tried.set()  # waiting for the first run's lease
        time.sleep(seconds)

    verdicts = {}

    def run(name: str, image: str, test: CanaryTest) -> None:
        verdicts[name] = test.run(SERVICE, image)
        if name == "first":
            first_done.set()

    first = threading.Thread(target=run, args=("first", FIRST, canary(secrets, services)), name="first")
    second = threading.Thread(
        target=run, args=("second", SECOND, canary(secrets, services, sleep=second_sleep)), name="second"
    )
    first.start()
    assert first_watching.wait(WAIT)
    second.start()
    first.join(WAIT * 3)
    second.join(WAIT * 3)

    assert verdicts["first"].passed and verdicts["second"].passed, verdicts
    assert services.images[SERVICE] == BASE, "the canary was left on a test image"
    # Each run changes the service and puts BASE back before the other one starts.
    assert [image for _, image in services.set_calls] == [FIRST, BASE, SECOND, BASE]
    notes = secrets.annotations(LOCK)
    assert notes[ORIGINAL] == BASE and LEASE not in notes


def test_a_lease_held_past_the_wait_is_a_transient_error_and_the_service_is_untouched() -> None:
    secrets, services = world()
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    held = Lease("canary-other-run", now + timedelta(minutes=5))
    secrets.secrets[LOCK].annotations[LEASE] = held.to_annotation()
    elapsed = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        elapsed[0] += seconds

    lock = CanaryLock(
        secrets,
        lease_seconds=60,
        wait_seconds=3,
        poll_seconds=1,
        clock=lambda: now,
        monotonic=lambda: elapsed[0],
        sleep=sleep,
    )
    with pytest.raises(TransientError) as raised:
        CanaryTest(services, lock, timeout=1).run(SERVICE, FIRST)

    assert raised.value.code == "canary-busy"
    assert "canary-other-run" in raised.value.reason and LEASE in raised.value.reason
    assert sum(sleeps) == 3, "the wait is bounded by wait_seconds"
    assert services.calls == [], "nothing may touch a service another run is testing"
    assert secrets.annotations(LOCK)[LEASE] == held.to_annotation()


def test_a_missing_lock_secret_is_canary_misconfigured_and_says_to_re_provision() -> None:
    services = FakeServices(images={SERVICE: BASE})
    verdict = canary(FakeSecrets(), services).run(SERVICE, FIRST)

    assert not verdict.passed and verdict.code == "canary-misconfigured"
    assert LOCK in verdict.reason and "provision request" in verdict.reason
    assert services.calls == []


def test_an_expired_lease_is_taken_over_and_the_recorded_original_restored() -> None:
    """A run died mid-test: its lease expired, the service still runs its test image."""
    secrets, services = world()
    dead = Lease("canary-dead-run", datetime.now(UTC) - timedelta(minutes=1))
    secrets.secrets[LOCK].annotations.update({LEASE: dead.to_annotation(), ORIGINAL: BASE})
    services.images[SERVICE] = FIRST  # what the dead run left behind

    verdict = canary(secrets, services).run(SERVICE, SECOND)

    assert verdict.passed, verdict.reason
    assert services.set_calls == [(SERVICE, SECOND), (SERVICE, BASE)]
    assert services.images[SERVICE] == BASE
    assert LEASE not in secrets.annotations(LOCK) and secrets.annotations(LOCK)[ORIGINAL] == BASE


def test_the_original_is_recorded_once_before_the_service_changes() -> None:
    secrets, services = world()
    seen: list[str | None] = []
    services.hook = lambda method, _: seen.append(secrets.annotations(LOCK).get(ORIGINAL)) if method == "set_runner_image" else None  # fmt: skip

    assert canary(secrets, services).run(SERVICE, FIRST).passed
    assert secrets.count("update_secret") == 3, "take the lease, record the original, drop the lease: nothing retried"
    services.images[SERVICE] = "someone/else:edited"  # the service changed outside any test
    assert canary(secrets, services).run(SERVICE, SECOND).passed

    assert seen[0] == BASE, "the original must be on record before the service is pointed elsewhere"
    assert services.images[SERVICE] == BASE, "later runs restore the record, not what the service runs"
    assert [c for c in services.calls if c[0] == "get"] == [("get", SERVICE)]


def test_the_lease_is_released_when_the_test_breaks_off() -> None:
    from shared.model.dataloop import DataloopError

    secrets, services = world()

    def hook(method: str, _: str) -> None:
        if method == "restart":
            raise DataloopError("Dataloop answered 500")

    services.hook = hook
    verdict = canary(secrets, services).run(SERVICE, FIRST)

    assert not verdict.passed and "broke off" in verdict.reason
    assert services.images[SERVICE] == BASE
    assert LEASE not in secrets.annotations(LOCK)


@pytest.mark.parametrize("service_id", ["", "../x", "a/b", "svc 1", "-lead", "x" * 65, "svc_1"])
def test_a_service_id_that_is_not_one_builds_no_secret_name(service_id: str) -> None:
    secrets, services = FakeSecrets(), FakeServices()
    verdict = canary(secrets, services).run(service_id, FIRST)

    assert not verdict.passed and verdict.code == "canary-misconfigured"
    assert secrets.calls == [] and services.calls == []


def test_the_lock_secret_is_ensured_once_and_is_no_managed_integration() -> None:
    secrets = FakeSecrets()
    assert ensure_lock(secrets, SERVICE) == "created"
    secrets.secrets[LOCK].annotations[LEASE] = Lease("canary-run", datetime.now(UTC)).to_annotation()
    assert ensure_lock(secrets, SERVICE) == "exists"

    record = secrets.get_secret(LOCK)
    assert record.labels == dict([LOCK_LABEL]) and MANAGED_LABEL[0] not in record.labels
    assert LEASE in record.annotations, "an existing lock is left as it is"
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,255}", lock_secret_id("a" * 64))


def test_entries_from_before_the_restart_do_not_count_even_within_the_skew_second() -> None:
    """A run right before this one left a running replica; this restart's pull never finishes."""
    secrets, services = world()
    services.restart_entry = None
    services.report(SERVICE, status=True, message="the previous test's replica runs")

    verdict = canary(secrets, services, timeout=0.2).run(SERVICE, FIRST)

    assert not verdict.passed and verdict.code == "canary-timeout", verdict.reason
    assert services.images[SERVICE] == BASE


def test_a_runner_image_from_dataloop_that_is_no_image_is_neither_recorded_nor_replaced() -> None:
    secrets, services = world()
    services.images[SERVICE] = "two words\n" + "x" * 4000  # an answer that must not reach an annotation

    verdict = canary(secrets, services).run(SERVICE, FIRST)

    assert not verdict.passed and verdict.code == "canary-misconfigured", verdict.reason
    assert services.set_calls == [] and ORIGINAL not in secrets.annotations(LOCK)
    assert LEASE not in secrets.annotations(LOCK)
