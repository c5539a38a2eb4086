"""The on_push workflow and the entry point's delivery policy, against in-memory fakes."""

import base64
import json
import logging
from typing import TYPE_CHECKING, cast

import pytest

from shared.app import entrypoint
from shared.core.errors import RegistryUnavailable
from shared.model.events import PubSubMessage
from shared.model.results import Status
from shared.workflows.push import PushTester
from shared.workflows.reference_test import ReferenceTest
from tests.unit.fakes import (
    DIGEST,
    FakeDirectory,
    FakeKeys,
    FakeRegistry,
    FakeSink,
    challenge_of,
    integration,
    key_json,
)

if TYPE_CHECKING:
    from shared.workflows.canary import CanaryTest

HOST = "us-central1-docker.pkg.dev"
IMAGE = f"{HOST}/proj/images/app"


@pytest.fixture
def world():
    registry = FakeRegistry(images={(HOST, "proj/images/app"): {"v1": DIGEST}}, valid_keys={"k1"})
    directory = FakeDirectory([integration()])
    keys = FakeKeys({"dataloop-gar-team-a": {1: key_json("k1"), 2: key_json("k2")}})
    tester = PushTester(directory, keys, ReferenceTest(registry))
    return tester, registry, directory, keys


def message(payload: object) -> PubSubMessage:
    return PubSubMessage(data=json.dumps(payload).encode(), message_id="m1")


def test_insert_by_digest_passes(world):
    tester, registry, _, _ = world
    outcome = tester.handle(message({"action": "INSERT", "digest": f"{IMAGE}@{DIGEST}"}))
    assert outcome.status is Status.PASSED
    assert outcome.details["team-a"]["digest"] == DIGEST and outcome.details["team-a"]["key_id"] == "k1"
    assert registry.resolved == [(f"{IMAGE}@{DIGEST}", "_json_key")]


def test_a_recorded_registry_challenge_is_handed_to_the_registry_client(world):
    tester, registry, directory, _ = world
    directory.integrations = [integration(registry_challenge=challenge_of(HOST))]
    outcome = tester.handle(message({"action": "INSERT", "digest": f"{IMAGE}@{DIGEST}"}))
    assert outcome.status is Status.PASSED
    assert registry.hints == {HOST: [challenge_of(HOST)]}


def test_without_a_recorded_challenge_no_hint_is_given(world):
    tester, registry, _, _ = world
    tester.handle(message({"action": "INSERT", "digest": f"{IMAGE}@{DIGEST}"}))
    assert registry.hints == {}


def test_insert_by_tag_only_is_resolved_by_tag(world):
    tester, registry, _, _ = world
    outcome = tester.handle(message({"action": "INSERT", "tag": f"{IMAGE}:v1"}))
    assert outcome.status is Status.PASSED and outcome.details["team-a"]["digest"] == DIGEST
    assert registry.resolved[0][0] == f"{IMAGE}:v1"


def test_delete_is_ignored_without_remote_calls(world):
    tester, registry, _, keys = world
    outcome = tester.handle(message({"action": "DELETE", "tag": f"{IMAGE}:v1"}))
    assert outcome.status is Status.IGNORED and registry.calls == [] and keys.reads == 0


@pytest.mark.parametrize("suffix", [".sig", ".att", ".sbom"])
def test_signature_tags_are_skipped(world, suffix):
    tester, registry, _, _ = world
    outcome = tester.handle(message({"action": "INSERT", "tag": f"{IMAGE}:sha256-{'ab' * 32}{suffix}"}))
    assert outcome.status is Status.SKIPPED and registry.calls == []


@pytest.mark.parametrize("tag", [f"sha256-{'ab' * 32}", f"sha512-{'cd' * 32}"])
def test_referrers_tag_schema_tags_are_skipped(world, tag):
    """Attestation tools without a referrers API store an index under this tag (docs/external-apis.md §1.3)."""
    tester, registry, _, _ = world
    outcome = tester.handle(message({"action": "INSERT", "digest": f"{IMAGE}@{DIGEST}", "tag": f"{IMAGE}:{tag}"}))
    assert outcome.status is Status.SKIPPED and registry.calls == []
    assert "referrers tag" in outcome.reason


@pytest.mark.parametrize(
    "tag", ["sha256-release", f"sha256-{'ab' * 31}", f"v1-sha256-{'ab' * 32}", f"sha256-{'AB' * 32}"]
)
def test_tags_that_only_resemble_the_referrers_schema_are_tested(world, tag):
    tester, registry, _, _ = world
    registry.images[(HOST, "proj/images/app")][tag] = DIGEST
    outcome = tester.handle(message({"action": "INSERT", "tag": f"{IMAGE}:{tag}"}))
    assert outcome.status is Status.PASSED


def test_skip_patterns_are_configurable(world):
    _, registry, directory, keys = world
    tester = PushTester(directory, keys, ReferenceTest(registry), skip_tag_patterns=())
    outcome = tester.handle(message({"action": "INSERT", "tag": f"{IMAGE}:v1.sig"}))
    assert outcome.status is Status.FAILED and outcome.code == "image-missing"


def test_uncovered_image(world):
    tester, registry, _, _ = world
    outcome = tester.handle(message({"action": "INSERT", "digest": f"{HOST}/proj/other/app@{DIGEST}"}))
    assert outcome.status is Status.UNCOVERED and "proj/other" in outcome.reason and registry.calls == []


def test_wrong_key_fails_with_credentials_code(world):
    tester, registry, _, _ = world
    registry.valid_keys = set()
    outcome = tester.handle(message({"action": "INSERT", "digest": f"{IMAGE}@{DIGEST}"}))
    assert outcome.status is Status.FAILED and outcome.code == "credentials-refused"
    assert outcome.severity == logging.ERROR


def test_stale_catalog_is_refreshed_before_reporting_refused_credentials(world):
    tester, registry, directory, _ = world
    registry.valid_keys = {"k2"}  # rotated: current moved to version 2, k1 already deleted
    directory.after_refresh = [integration(version=2)]
    outcome = tester.handle(message({"action": "INSERT", "digest": f"{IMAGE}@{DIGEST}"}))
    assert outcome.status is Status.PASSED and outcome.details["team-a"]["key_id"] == "k2"
    assert directory.refreshes == 1


def test_missing_image_fails_permanently(world):
    tester, _, _, _ = world
    outcome = tester.handle(message({"action": "INSERT", "digest": f"{IMAGE}@sha256:{'cd' * 32}"}))
    assert outcome.status is Status.FAILED and outcome.code == "image-missing"


def test_every_covering_integration_is_tested(world):
    _, registry, _, keys = world
    keys.versions["dataloop-gar-team-b"] = {1: key_json("kb")}
    directory = FakeDirectory([integration(), integration("team-b")])
    outcome = PushTester(directory, keys, ReferenceTest(registry)).handle(
        message({"action": "INSERT", "digest": f"{IMAGE}@{DIGEST}"})
    )
    assert outcome.status is Status.FAILED
    assert outcome.details["team-a"]["passed"] and not outcome.details["team-b"]["passed"]
    assert outcome.reason.startswith("team-b:")


# -- the entry point's delivery policy ---------------------------------------------------


def event(payload: object) -> dict:
    return {"message": {"data": base64.b64encode(json.dumps(payload).encode()).decode(), "messageId": "m9"}}


def test_entrypoint_publishes_and_acknowledges_outcomes(world):
    tester, *_ = world
    sink = FakeSink()
    outcome = entrypoint.handle_event(
        "reference-test", event({"action": "INSERT", "digest": f"{IMAGE}@{DIGEST}"}), tester.handle, sink
    )
    assert outcome.status is Status.PASSED and sink.outcomes == [outcome] and outcome.event_id == "m9"
    # The message is built (and masked) once and handed to the sink with the outcome it came from.
    [published] = sink.messages
    assert published["event_id"] == "m9" and published["status"] == "passed" and published["reason"] == outcome.reason


def test_entrypoint_rejects_bad_messages_and_acknowledges(world):
    tester, *_ = world
    sink = FakeSink()
    outcome = entrypoint.handle_event("reference-test", {"message": {"data": "%%%"}}, tester.handle, sink)
    assert outcome.status is Status.REJECTED and "base64" in outcome.reason
    outcome = entrypoint.handle_event("reference-test", event({"action": "PUSH"}), tester.handle, sink)
    assert outcome.status is Status.REJECTED and "INSERT or DELETE" in outcome.reason
    assert len(sink.outcomes) == 2


def test_entrypoint_raises_transient_failures_without_publishing(world):
    tester, registry, *_ = world
    registry.down = True
    sink = FakeSink()
    with pytest.raises(RegistryUnavailable):
        entrypoint.handle_event(
            "reference-test", event({"action": "INSERT", "digest": f"{IMAGE}@{DIGEST}"}), tester.handle, sink
        )
    assert sink.outcomes == []


def test_published_results_carry_no_key_material(world):
    tester, registry, *_ = world
    registry.valid_keys = set()
    sink = FakeSink()
    entrypoint.handle_event(
        "reference-test", event({"action": "INSERT", "digest": f"{IMAGE}@{DIGEST}"}), tester.handle, sink
    )
    text = json.dumps(sink.outcomes[0].to_message())
    assert "PRIVATE KEY" not in text and "MIIfake" not in text


class FakeCanary:
    def __init__(self, passed: bool) -> None:
        self.passed = passed
        self.runs: list[tuple[str, str]] = []

    def run(self, service_id: str, image: str):
        from shared.workflows.reference_test import Verdict

        self.runs.append((service_id, image))
        return Verdict(
            "platform",
            self.passed,
            "ImagePullBackOff" if not self.passed else "ran",
            None if self.passed else "image-pull-failed",
        )


@pytest.mark.parametrize("canary_passes", [True, False])
def test_platform_tier_runs_after_the_registry_tier_when_a_canary_is_configured(world, canary_passes):
    _, registry, _, keys = world
    canary = FakeCanary(canary_passes)
    directory = FakeDirectory([integration(canary_service="svc-1")])
    tester = PushTester(directory, keys, ReferenceTest(registry), canary=lambda: canary)
    outcome = tester.handle(message({"action": "INSERT", "tag": f"{IMAGE}:v1"}))
    assert canary.runs == [("svc-1", f"{IMAGE}@{DIGEST}")]  # pinned to the digest the registry tier resolved
    assert outcome.status is (Status.PASSED if canary_passes else Status.FAILED)
    assert outcome.details["team-a"]["platform"]["passed"] is canary_passes
    if not canary_passes:
        assert outcome.code == "image-pull-failed"


def test_no_canary_no_platform_tier(world):
    tester, *_ = world
    canary = FakeCanary(True)
    outcome = PushTester(tester._directory, tester._keys, tester._test, canary=lambda: canary).handle(
        message({"action": "INSERT", "digest": f"{IMAGE}@{DIGEST}"})
    )
    assert outcome.status is Status.PASSED and canary.runs == []


# -- a multi-arch push: one notification per child manifest, then the index (docs/external-apis.md §1.1) --

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CHILDREN = ("sha256:" + "a1" * 32, "sha256:" + "a2" * 32, "sha256:" + "a3" * 32)


def multi_arch_world(world, index_type: str = OCI_INDEX):
    _, registry, _, keys = world
    tags = registry.images[(HOST, "proj/images/app")]
    tags["v2"] = INDEX = "sha256:" + "1d" * 32
    for number, child in enumerate(CHILDREN):
        tags[f"untagged-{number}"] = child  # reachable by digest only
        registry.media_types[child] = OCI_MANIFEST
    registry.media_types[INDEX] = index_type
    canary = FakeCanary(True)
    tester = PushTester(
        FakeDirectory([integration(canary_service="svc-1")]),
        keys,
        ReferenceTest(registry),
        canary=lambda: cast("CanaryTest", canary),
    )
    burst = [{"action": "INSERT", "digest": f"{IMAGE}@{child}"} for child in CHILDREN]
    burst.append({"action": "INSERT", "digest": f"{IMAGE}@{INDEX}", "tag": f"{IMAGE}:v2"})
    return tester, registry, canary, burst, INDEX


@pytest.mark.parametrize("index_type", [OCI_INDEX, DOCKER_LIST])
@pytest.mark.parametrize("index_first", [False, True])
def test_one_push_of_an_index_runs_the_canary_once(world, index_type, index_first):
    tester, registry, canary, burst, index = multi_arch_world(world, index_type)
    if index_first:  # Pub/Sub does not keep order (docs/external-apis.md §6.3)
        burst = burst[-1:] + burst[:-1]
    outcomes = [tester.handle(message(notification)) for notification in burst]
    assert [o.status for o in outcomes] == [Status.PASSED] * 4
    assert len(registry.resolved) == 4  # the registry tier checks every manifest, one HEAD each
    assert canary.runs == [("svc-1", f"{IMAGE}@{index}")]  # the platform tier runs once, on the index


def test_a_child_manifest_says_why_the_platform_tier_did_not_run(world):
    tester, _, canary, burst, _ = multi_arch_world(world)
    outcome = tester.handle(message(burst[0]))
    assert outcome.status is Status.PASSED and canary.runs == []
    platform = outcome.details["team-a"]["platform"]
    assert platform["ran"] is False and "index" in platform["reason"]


def test_an_index_pushed_without_a_tag_still_runs_the_canary(world):
    tester, _, canary, _, index = multi_arch_world(world)
    tester.handle(message({"action": "INSERT", "digest": f"{IMAGE}@{index}"}))
    assert canary.runs == [("svc-1", f"{IMAGE}@{index}")]


def test_a_tagged_single_platform_image_runs_the_canary(world):
    _, registry, _, keys = world
    registry.media_types[DIGEST] = OCI_MANIFEST
    canary = FakeCanary(True)
    tester = PushTester(
        FakeDirectory([integration(canary_service="svc-1")]), keys, ReferenceTest(registry), canary=lambda: canary
    )
    tester.handle(message({"action": "INSERT", "digest": f"{IMAGE}@{DIGEST}", "tag": f"{IMAGE}:v1"}))
    assert canary.runs == [("svc-1", f"{IMAGE}@{DIGEST}")]
