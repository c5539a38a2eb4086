"""The platform tier against the Dataloop stand-in, whose restart really pulls from docker-registry."""

from __future__ import annotations

import pytest

from shared.canary import CanaryTest
from shared.dataloop import gar_options, runner_image

pytestmark = pytest.mark.wire


@pytest.fixture
def platform(make_dataloop, local_registry, registry_keys):
    sandbox = make_dataloop(
        insecure_registries=[local_registry.host], pull_delay_seconds=0.05, pull_backoff_seconds=0.05
    )
    key = registry_keys.new_key()
    client = sandbox.client()
    client.integrations(sandbox.org_id).ensure("gar", gar_options(key.json_text, local_registry.host))
    base = local_registry.push("canary", "base")
    service_id = sandbox.gateway.add_service(sandbox.org_id, "canary", str(base.by_digest))
    return sandbox, client, key, base, service_id


def test_canary_passes_with_a_good_key_and_is_restored(platform, local_registry):
    _, client, _, base, service_id = platform
    pushed = local_registry.push("app", "v1")
    verdict = CanaryTest(client.services, timeout=10, poll_interval=0.05).run(service_id, str(pushed.by_digest))
    assert verdict.passed and verdict.tier == "platform", verdict.reason
    assert runner_image(client.services.get(service_id)) == str(base.by_digest)


def test_canary_reports_image_pull_backoff_with_a_revoked_key_and_is_restored(platform, local_registry, registry_keys):
    _, client, key, base, service_id = platform
    pushed = local_registry.push("app", "v2")
    registry_keys.revoke(key)
    verdict = CanaryTest(client.services, timeout=10, poll_interval=0.05).run(service_id, str(pushed.by_digest))
    assert not verdict.passed and verdict.code == "image-pull-failed"
    assert "ImagePullBackOff" in verdict.reason or "ErrImagePull" in verdict.reason
    assert runner_image(client.services.get(service_id)) == str(base.by_digest)


def test_canary_times_out_and_is_still_restored(make_dataloop, local_registry, registry_keys):
    sandbox = make_dataloop(insecure_registries=[local_registry.host], pull_delay_seconds=30)
    client = sandbox.client()
    client.integrations(sandbox.org_id).ensure(
        "gar", gar_options(registry_keys.new_key().json_text, local_registry.host)
    )
    base = local_registry.push("canary", "slow")
    service_id = sandbox.gateway.add_service(sandbox.org_id, "canary", str(base.by_digest))
    verdict = CanaryTest(client.services, timeout=0.5, poll_interval=0.1).run(service_id, str(base.by_tag))
    assert not verdict.passed and verdict.code == "canary-timeout"
    assert runner_image(client.services.get(service_id)) == str(base.by_digest)
