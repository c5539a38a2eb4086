"""The platform tier against the Dataloop stand-in, whose restart really pulls from docker-registry,
and the Secret Manager stand-in, which keeps each canary service's lock."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters.secrets import SecretManager
from shared.core.errors import TransientError
from shared.model.dataloop import gar_options, runner_image
from shared.model.lease import Lease
from shared.workflows.canary import CanaryTest
from shared.workflows.canary_lock import LEASE, ORIGINAL, CanaryLock, ensure_lock, lock_secret_id
from tests.fixtures.secretmanager import PROJECT_ID

pytestmark = pytest.mark.wire


@pytest.fixture
def secrets(secretmanager):
    """The project's Secret Manager adapter on the stand-in."""
    return SecretManager(PROJECT_ID, endpoint=secretmanager.url, timeout=5.0)


def canary(client, secrets, *, timeout: float = 10, wait: float = 10) -> CanaryTest:
    lock = CanaryLock(secrets, lease_seconds=timeout + 30, wait_seconds=wait, poll_seconds=0.05)
    return CanaryTest(client.services, lock, timeout=timeout, poll_interval=0.05)


@pytest.fixture
def platform(make_dataloop, local_registry, registry_keys, secrets):
    sandbox = make_dataloop(
        insecure_registries=[local_registry.host], pull_delay_seconds=0.05, pull_backoff_seconds=0.05
    )
    key = registry_keys.new_key()
    client = sandbox.client()
    client.integrations(sandbox.org_id).ensure("gar", gar_options(key.json_text, local_registry.host))
    base = local_registry.push("canary", "base")
    service_id = sandbox.gateway.add_service(sandbox.org_id, "canary", str(base.by_digest))
    assert ensure_lock(secrets, service_id) == "created"  # what provisioning does
    return sandbox, client, key, base, service_id


def test_canary_passes_with_a_good_key_and_is_restored(platform, local_registry, secrets):
    _, client, _, base, service_id = platform
    pushed = local_registry.push("app", "v1")
    verdict = canary(client, secrets).run(service_id, str(pushed.by_digest))
    assert verdict.passed and verdict.tier == "platform", verdict.reason
    assert runner_image(client.services.get(service_id)) == str(base.by_digest)


def test_canary_reports_image_pull_backoff_with_a_revoked_key_and_is_restored(
    platform, local_registry, registry_keys, secrets
):
    _, client, key, base, service_id = platform
    pushed = local_registry.push("app", "v2")
    registry_keys.revoke(key)
    verdict = canary(client, secrets).run(service_id, str(pushed.by_digest))
    assert not verdict.passed and verdict.code == "image-pull-failed"
    assert "ImagePullBackOff" in verdict.reason or "ErrImagePull" in verdict.reason
    assert runner_image(client.services.get(service_id)) == str(base.by_digest)


def test_canary_times_out_and_is_still_restored(make_dataloop, local_registry, registry_keys, secrets):
    sandbox = make_dataloop(insecure_registries=[local_registry.host], pull_delay_seconds=30)
    client = sandbox.client()
    client.integrations(sandbox.org_id).ensure(
        "gar", gar_options(registry_keys.new_key().json_text, local_registry.host)
    )
    base = local_registry.push("canary", "slow")
    service_id = sandbox.gateway.add_service(sandbox.org_id, "canary", str(base.by_digest))
    ensure_lock(secrets, service_id)
    verdict = canary(client, secrets, timeout=0.5).run(service_id, str(base.by_tag))
    assert not verdict.passed and verdict.code == "canary-timeout"
    assert runner_image(client.services.get(service_id)) == str(base.by_digest)


def test_two_overlapping_runs_on_one_service_leave_it_on_its_own_image(
    make_dataloop, local_registry, registry_keys, secrets
):
    """The second push arrives while the first is watching its test image: it waits, then tests."""
    sandbox = make_dataloop(insecure_registries=[local_registry.host], pull_delay_seconds=1.0)
    client = sandbox.client()
    client.integrations(sandbox.org_id).ensure(
        "gar", gar_options(registry_keys.new_key().json_text, local_registry.host)
    )
    base = local_registry.push("canary", "own")
    service_id = sandbox.gateway.add_service(sandbox.org_id, "canary", str(base.by_digest))
    ensure_lock(secrets, service_id)
    first, second = local_registry.push("app", "first"), local_registry.push("app", "second")
    verdicts = {}

    def run(name: str, image: str) -> None:
        verdicts[name] = canary(client, secrets).run(service_id, image)

    threads = {name: threading.Thread(target=run, args=(name, str(p.by_digest)), name=name) for name, p in
               (("first", first), ("second", second))}  # fmt: skip
    threads["first"].start()
    deadline = time.monotonic() + 10
    while runner_image(client.services.get(service_id)) != str(first.by_digest):  # the first run is mid-test
        assert time.monotonic() < deadline, "the first run never changed the service"
        time.sleep(0.02)
    threads["second"].start()
    for thread in threads.values():
        thread.join(30)

    assert verdicts["first"].passed and verdicts["second"].passed, verdicts
    assert runner_image(client.services.get(service_id)) == str(base.by_digest), "left on a test image"
    pulled = [p.image for p in sandbox.gateway.pulls if p.service_id == service_id]
    assert str(second.by_digest) in pulled, "the second push was tested too, after the first"
    notes = secrets.get_secret(lock_secret_id(service_id)).annotations
    assert notes[ORIGINAL] == str(base.by_digest) and LEASE not in notes


def test_a_held_lease_is_waited_for_then_redelivered_and_the_service_is_untouched(platform, local_registry, secrets):
    _, client, _, base, service_id = platform
    lock = lock_secret_id(service_id)
    record = secrets.get_secret(lock)
    held = Lease("canary-other-run", datetime.now(UTC) + timedelta(minutes=5)).to_annotation()
    secrets.update_secret(lock, etag=record.etag, annotations={**record.annotations, LEASE: held})

    started = time.monotonic()
    with pytest.raises(TransientError) as raised:
        canary(client, secrets, wait=0.5).run(service_id, str(local_registry.push("app", "v3").by_digest))

    assert raised.value.code == "canary-busy" and "canary-other-run" in raised.value.reason
    assert 0.5 <= time.monotonic() - started < 5
    assert runner_image(client.services.get(service_id)) == str(base.by_digest)
    assert secrets.get_secret(lock).annotations[LEASE] == held


def test_an_expired_lease_is_taken_over_and_the_recorded_original_restored(platform, local_registry, secrets):
    """A run that died mid-test left the service on its image; the record knows the real one."""
    _, client, _, base, service_id = platform
    stale = local_registry.push("app", "left-behind")
    client.services.set_runner_image(service_id, str(stale.by_digest))
    lock = lock_secret_id(service_id)
    record = secrets.get_secret(lock)
    dead = Lease("canary-dead-run", datetime.now(UTC) - timedelta(seconds=1)).to_annotation()
    notes = {**record.annotations, LEASE: dead, ORIGINAL: str(base.by_digest)}
    secrets.update_secret(lock, etag=record.etag, annotations=notes)

    verdict = canary(client, secrets).run(service_id, str(local_registry.push("app", "v4").by_digest))

    assert verdict.passed, verdict.reason
    assert runner_image(client.services.get(service_id)) == str(base.by_digest)
    assert LEASE not in secrets.get_secret(lock).annotations


def test_a_service_without_a_lock_secret_is_misconfigured_and_untouched(make_dataloop, local_registry, secrets):
    sandbox = make_dataloop(insecure_registries=[local_registry.host])
    client = sandbox.client()
    base = local_registry.push("canary", "unlocked")
    service_id = sandbox.gateway.add_service(sandbox.org_id, "canary", str(base.by_digest))

    verdict = canary(client, secrets).run(service_id, str(local_registry.push("app", "v5").by_digest))

    assert not verdict.passed and verdict.code == "canary-misconfigured"
    assert lock_secret_id(service_id) in verdict.reason and "provision" in verdict.reason
    assert [p for p in sandbox.gateway.pulls if p.service_id == service_id] == []


def test_one_multi_platform_push_runs_the_canary_once(platform, local_registry, secrets):
    """The notifications of ``skopeo copy --all``: each platform's manifest by digest, then the index with
    its tag (what distribution reports, localcloud/bridge.py; GAR may do the same, docs/external-apis.md §1.1).
    The registry tier checks each against docker-registry; the canary runs once, on the index."""
    from shared.model.events import PubSubMessage
    from shared.model.keys import ServiceAccountKey
    from shared.model.results import Status
    from shared.workflows.push import PushTester
    from shared.workflows.reference_test import ReferenceTest
    from tests.fixtures.registry import TEST_SCOPE
    from tests.unit.fakes import FakeDirectory, integration

    sandbox, client, key, _, service_id = platform
    index, children = local_registry.push_multi_platform("app", "multi")
    runs: list[str] = []
    real = canary(client, secrets)

    class Counted:
        def run(self, service: str, image: str):
            runs.append(image)
            return real.run(service, image)

    class Keys:
        def key(self, _integration, alias: str = "current") -> ServiceAccountKey:
            return ServiceAccountKey.from_json(key.json_text)

    managed = integration(registry_host=local_registry.host, repositories=(TEST_SCOPE,), canary_service=service_id)
    registry = ReferenceTest(local_registry.client())
    tester = PushTester(FakeDirectory([managed]), Keys(), registry, canary=Counted)
    base = f"{local_registry.host}/{index.image.name}"
    burst = [{"action": "INSERT", "digest": f"{base}@{child}"} for child in children]
    burst.append({"action": "INSERT", "digest": f"{base}@{index.digest}", "tag": f"{base}:multi"})

    outcomes = [
        tester.handle(PubSubMessage(data=json.dumps(n).encode(), message_id=str(i))) for i, n in enumerate(burst)
    ]

    assert [o.status for o in outcomes] == [Status.PASSED] * (len(children) + 1), [o.reason for o in outcomes]
    assert [o.details["team-a"]["digest"] for o in outcomes] == [*children, index.digest]
    assert runs == [f"{base}@{index.digest}"]
    assert outcomes[-1].details["team-a"]["platform"]["passed"] is True
    assert all(o.details["team-a"]["platform"]["ran"] is False for o in outcomes[:-1])
    pulled = [p.image for p in sandbox.gateway.pulls if p.service_id == service_id]
    assert pulled[-1] == f"{base}@{index.digest}"
