"""Redelivery and ordering: every kind of event delivered twice, and out of order, does its work once.

Pub/Sub delivers at least once and, without ordering keys, in any order. For each kind of
event this system receives -- Artifact Registry notifications (``on_push``), provisioning
requests (``requests``), and rotation-topic messages including Secret Manager's
``SECRET_ROTATE`` (``rotate``) -- the test delivers a set of messages once in order, then the
same kind of set with every message twice in a shuffled order (a fixed seed, so a failure
reproduces), and compares: the final state must be the same, and the writes that reach
Dataloop and IAM (counted at the stand-ins: the gateway's ``received`` log and the IAM
servicer's call log) must be the same number, so no duplicate delivery did duplicate work.

The workflows run against the real adapters and stand-ins (the ``stack`` and ``cloud``
worlds of the wire suites); the last test makes Pub/Sub itself redeliver, through the
local cloud's emulator and functions.

What the evidence found, pinned by the assertions: a redelivered ``SECRET_ROTATE`` used to
rotate a second time (it is forced); ``shared/workflows/rotation/messages.py`` now skips a notification
published before the secret's last rotation. A redelivered ``provision`` used to send Dataloop
the same credentials once more (an idempotent PATCH, but with ``reloadServices=true``, which
reloads the services pulling with the integration); the record now names the request that
last gave Dataloop its key (``provisioned-for-request``), and its redelivery leaves Dataloop alone.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from localcloud.pubsub import Collector
from localcloud.stack import LocalCloud
from localcloud.wsgi import Fault
from shared.adapters.catalog import IntegrationCatalog, SecretKeySource
from shared.adapters.pubsub import PubSubFanOut
from shared.adapters.registry import RegistryClient
from shared.adapters.secrets import SecretManager
from shared.app.entrypoint import handle_event
from shared.core.errors import TransientError
from shared.model.events import PubSubMessage
from shared.model.integrations import Annotation
from shared.model.record import timestamp
from shared.model.results import Outcome, Status
from shared.workflows.push import PushTester
from shared.workflows.reference_test import ReferenceTest
from shared.workflows.rotation.messages import RotationMessages
from shared.workflows.sweep import Sweep
from tests.fixtures.localcloud import provision_request, wait_for_reply
from tests.fixtures.provisioning import Cloud
from tests.fixtures.registry import TEST_PROJECT
from tests.fixtures.rotation import SECRET_ID, TOPIC, Stack
from tests.reliability.figures import record
from tests.unit.fakes import FakePublisher, FakeSink

SEED = 8  # any fixed seed makes the shuffle reproducible
IAM_WRITES = frozenset(
    {
        "CreateServiceAccount",
        "DeleteServiceAccount",
        "DisableServiceAccount",
        "EnableServiceAccount",
        "CreateServiceAccountKey",
        "DeleteServiceAccountKey",
        "DisableServiceAccountKey",
        "EnableServiceAccountKey",
    }
)


@dataclass(frozen=True)
class Writes:
    """Writes that reached each service so far (reads are free to repeat)."""

    dataloop: int
    iam: int
    secret_manager: int
    grants: int = 0

    def __sub__(self, other: Writes) -> Writes:
        return Writes(
            self.dataloop - other.dataloop,
            self.iam - other.iam,
            self.secret_manager - other.secret_manager,
            self.grants - other.grants,
        )


def count_writes(dataloop: Any, iam: Any, secret_manager_wire: Any, artifact_registry: Any = None) -> Writes:
    dataloop_writes = sum(1 for r in dataloop.received if r["method"] != "GET" and r["path"] != "/token")
    iam_writes = sum(1 for call in iam.calls() if call in IAM_WRITES)
    sm_writes = sum(1 for c in secret_manager_wire.call_log() if c["method"] != "GET")
    grants = 0
    if artifact_registry is not None:
        grants = sum(1 for c in artifact_registry.app.call_log() if c["path"].endswith(":setIamPolicy"))
    return Writes(dataloop_writes, iam_writes, sm_writes, grants)


def shuffled_twice(items: list[Any], seed: int = SEED) -> list[Any]:
    """Every item twice, in an order that is neither the original nor pairs side by side."""
    doubled = [*items, *items]
    random.Random(seed).shuffle(doubled)
    return doubled


def event(
    data: bytes, message_id: str, attributes: dict[str, str] | None = None, published: str = ""
) -> dict[str, Any]:
    message = {"data": base64.b64encode(data).decode(), "attributes": attributes or {}, "messageId": message_id}
    if published:
        message["publishTime"] = published
    return {"message": message, "subscription": "projects/test-project/subscriptions/reliability"}


def deliver(
    kind: str, delivered: dict[str, Any], workflow: Callable[[PubSubMessage], Outcome]
) -> tuple[str, str | None]:
    """One delivery through the entry point: the outcome's status and code, or ``redeliver``."""
    try:
        outcome = handle_event(kind, delivered, workflow, FakeSink())
    except TransientError as exc:
        return "redeliver", exc.code
    return outcome.status.value, outcome.code


# -- Artifact Registry notifications ------------------------------------------------------------------


def test_push_notifications_delivered_twice_and_out_of_order_give_the_same_verdicts_and_write_nothing(
    stack: Stack,
) -> None:
    stack.provision()
    secrets = SecretManager(TEST_PROJECT, endpoint=stack.sm.url, timeout=5.0)
    registry = RegistryClient(insecure_hosts=[stack.host], timeout=5.0, retries=1, backoff_factor=0.01)
    tester = PushTester(IntegrationCatalog(secrets, ttl=0), SecretKeySource(secrets), ReferenceTest(registry))
    image, host = stack.canary, stack.host
    missing = image.by_digest.with_digest("sha256:" + "0" * 64)
    payloads: dict[str, Any] = {
        "insert by digest": {"action": "INSERT", "digest": str(image.by_digest), "tag": str(image.by_tag)},
        "insert by tag": {"action": "INSERT", "tag": str(image.by_tag)},
        "insert of a deleted image": {"action": "INSERT", "digest": str(missing)},
        "delete": {"action": "DELETE", "digest": str(image.by_digest)},
        "signature tag": {"action": "INSERT", "tag": f"{host}/{TEST_PROJECT}/test-repo/hello:sha256-{'ab' * 32}.sig"},
        "uncovered repository": {"action": "INSERT", "tag": f"{host}/{TEST_PROJECT}/elsewhere/app:v1"},
        "malformed": "{not json",
    }
    events = {
        name: event(p.encode() if isinstance(p, str) else json.dumps(p).encode(), f"gcr-{i}")
        for i, (name, p) in enumerate(payloads.items())
    }
    before = count_writes(stack.dataloop.gateway, stack.iam, stack.sm.wire)

    once = {name: deliver("reference-test", events[name], tester.handle) for name in payloads}
    twice = [(name, deliver("reference-test", events[name], tester.handle)) for name in shuffled_twice(list(payloads))]

    registry.close()
    secrets.client.transport.close()
    record("redelivery: GAR notifications", inputs=len(once) + len(twice))
    assert once == {
        "insert by digest": ("passed", None),
        "insert by tag": ("passed", None),
        "insert of a deleted image": ("failed", "image-missing"),
        "delete": ("ignored", None),
        "signature tag": ("skipped", None),
        "uncovered repository": ("uncovered", None),
        "malformed": ("rejected", "rejected"),
    }
    assert all(verdict == once[name] for name, verdict in twice), twice
    assert count_writes(stack.dataloop.gateway, stack.iam, stack.sm.wire) - before == Writes(0, 0, 0)


# -- provisioning requests ---------------------------------------------------------------------------------


def request_messages(world: Cloud, name: str) -> list[dict[str, Any]]:
    """Provision ``name``, test an image with it, report its status, ask for a (not due) rotation."""
    return [
        world.provision_request(name=name, service_account={"create": f"dlgar-{name}"}, request_id=f"{name}-p"),
        {"version": 1, "action": "test", "name": name, "image": str(world.image.by_digest), "request_id": f"{name}-t"},
        {"version": 1, "action": "status", "name": name, "request_id": f"{name}-s"},
        {"version": 1, "action": "rotate", "name": name, "request_id": f"{name}-r"},
    ]


def provisioned_state(world: Cloud, name: str) -> dict[str, Any]:
    """What provisioning left for ``name``, with ids and times left out so two names compare."""
    secret_id = f"dataloop-gar-{name}"
    email = f"dataloop-{name}@{TEST_PROJECT}.iam.gserviceaccount.com"
    record_ = world.secrets.get_secret(secret_id)
    current = world.stored_keys(secret_id)[record_.version_aliases["current"]]["private_key_id"]
    integrations = [i for i in world.integrations() if i["public"]["name"] == name]
    held = [
        json.loads(
            json.loads(base64.b64decode(i["options"]["spec"]["password"]))["auths"][world.registry.host]["password"]
        )
        for i in integrations
    ]
    return {
        "aliases": dict(record_.version_aliases),
        "versions": sorted(world.secrets.list_versions(secret_id).values()),
        "annotations": sorted(record_.annotations),
        "live keys": len(world.user_keys(email)),
        "current key is live": current in world.user_keys(email),
        "dataloop integrations": len(integrations),
        "dataloop holds current": [k["private_key_id"] == current for k in held],
        "grants": {r: f"serviceAccount:{email}" in world.readers(r) for r in ("test-repo", "other-repo")},
    }


def test_requests_delivered_twice_and_out_of_order_do_the_work_of_one_delivery(cloud: Cloud) -> None:
    handler = cloud.handler(rotation=cloud.rotation)

    def run(messages: list[dict[str, Any]]) -> tuple[Writes, list[tuple[str, str]]]:
        before = count_writes(cloud.dataloop.gateway, cloud.iam, cloud.secretmanager.wire, cloud.artifact_registry)
        statuses = []
        for body in messages:
            status, _ = deliver("request", event(json.dumps(body).encode(), body["request_id"]), handler.handle)
            statuses.append((body["action"], status))
        after = count_writes(cloud.dataloop.gateway, cloud.iam, cloud.secretmanager.wire, cloud.artifact_registry)
        return after - before, statuses

    once, once_statuses = run(request_messages(cloud, "team-a"))
    mark = len(cloud.dataloop.gateway.received)
    twice, twice_statuses = run(shuffled_twice(request_messages(cloud, "team-b")))
    dataloop_writes = [r for r in cloud.dataloop.gateway.received[mark:] if r["method"] != "GET"]

    record("redelivery: provisioning requests", inputs=len(once_statuses) + len(twice_statuses))
    assert once_statuses == [("provision", "ok"), ("test", "ok"), ("status", "ok"), ("rotate", "ok")]
    assert "redeliver" not in {s for _, s in twice_statuses}
    assert (twice.iam, twice.grants) == (once.iam, once.grants), (once, twice)  # no second account, key or grant
    assert provisioned_state(cloud, "team-b") == provisioned_state(cloud, "team-a")
    assert provisioned_state(cloud, "team-a")["dataloop holds current"] == [True]
    # The redelivered provision must not PATCH Dataloop again: reloadServices=true reloads every
    # service pulling with the integration. (The rotate request here finds the key not due.)
    assert twice.dataloop == once.dataloop, (once, twice)
    assert [w["method"] for w in dataloop_writes] == ["POST"], dataloop_writes


def test_a_deprovision_delivered_twice_removes_everything_once(cloud: Cloud) -> None:
    handler = cloud.handler()
    assert handler.handle(PubSubMessage(json.dumps(request_messages(cloud, "team-a")[0]).encode())).status is Status.OK
    body = {"version": 1, "action": "deprovision", "name": "team-a", "request_id": "team-a-d"}
    before = count_writes(cloud.dataloop.gateway, cloud.iam, cloud.secretmanager.wire, cloud.artifact_registry)
    first = deliver("request", event(json.dumps(body).encode(), "d-1"), handler.handle)
    middle = count_writes(cloud.dataloop.gateway, cloud.iam, cloud.secretmanager.wire, cloud.artifact_registry)
    second = deliver("request", event(json.dumps(body).encode(), "d-1"), handler.handle)
    after = count_writes(cloud.dataloop.gateway, cloud.iam, cloud.secretmanager.wire, cloud.artifact_registry)
    record("redelivery: provisioning requests", inputs=2)
    assert first == ("ok", None) and second[0] == "ok", (first, second)
    assert (middle - before).dataloop >= 1 and (middle - before).iam >= 1
    assert ((after - middle).dataloop, (after - middle).iam, (after - middle).grants) == (0, 0, 0)
    assert [i for i in cloud.integrations() if i["public"]["name"] == "team-a"] == []
    assert cloud.user_keys("dlgar-team-a@test-project.iam.gserviceaccount.com") == []


# -- the rotation topic: sweep, rotate, and Secret Manager's events ------------------------------------------


def rotation_messages(published: str) -> list[tuple[str, dict[str, Any]]]:
    """One of each kind, all published at ``published`` (as Pub/Sub stamps them)."""
    name = f"projects/123456789012/secrets/{SECRET_ID}"
    return [
        ("SECRET_ROTATE", event(b"{}", "sm-rotate", {"eventType": "SECRET_ROTATE", "secretId": name}, published)),
        (
            "SECRET_VERSION_ADD",
            event(b"{}", "sm-add", {"eventType": "SECRET_VERSION_ADD", "secretId": name}, published),
        ),
        ("sweep", event(b'{"kind": "sweep"}', "sweep", published=published)),
        (
            "rotate",
            event(json.dumps({"kind": "rotate", "integration": SECRET_ID}).encode(), "rotate", published=published),
        ),
    ]


def make_due_again(world: Stack) -> None:
    """As if the rotation period had passed since the last rotation."""
    current = world.secrets.get_secret(SECRET_ID)
    annotations = {**current.annotations, Annotation.ROTATED_AT: timestamp(datetime.now(UTC) - timedelta(days=40))}
    world.secrets.update_secret(SECRET_ID, etag=current.etag, annotations=annotations)


def test_rotation_messages_delivered_twice_and_out_of_order_rotate_once(stack: Stack) -> None:
    stack.provision()
    publisher = FakePublisher()
    router = RotationMessages(
        stack.rotation(), Sweep(stack.secrets, PubSubFanOut(TOPIC, publisher=publisher)), stack.secrets
    )

    def run(
        stream: list[tuple[str, dict[str, Any]]], copies: int
    ) -> tuple[Writes, list[tuple[str, tuple[str, str | None]]]]:
        before = count_writes(stack.dataloop.gateway, stack.iam, stack.sm.wire)
        publisher.published.clear()
        verdicts = [(name, deliver("rotation", delivered, router.handle)) for name, delivered in stream]
        # The sweep's fan-out is delivered too (as many times as everything else).
        fanned = [
            (f"fan-out {i}", event(data, f"fan-{i}", published=timestamp(datetime.now(UTC))))
            for i, (_, data, _) in enumerate(publisher.published)
        ]
        verdicts += [(name, deliver("rotation", delivered, router.handle)) for name, delivered in fanned * copies]
        return count_writes(stack.dataloop.gateway, stack.iam, stack.sm.wire) - before, verdicts

    once, once_verdicts = run(rotation_messages(timestamp(datetime.now(UTC))), copies=1)
    stack.assert_converged()
    rotated_once = stack.key_of("current")
    make_due_again(stack)
    twice, twice_verdicts = run(shuffled_twice(rotation_messages(timestamp(datetime.now(UTC)))), copies=2)

    record("redelivery: rotation messages", inputs=len(once_verdicts) + len(twice_verdicts))
    assert dict(once_verdicts)["SECRET_ROTATE"] == ("ok", None), once_verdicts
    rotations = [v for name, v in twice_verdicts if v == ("ok", None) and name != "sweep"]
    assert len(rotations) == 1, f"{len(rotations)} rotations from one period's messages: {twice_verdicts}"
    assert "redeliver" not in {v[0] for _, v in twice_verdicts}
    assert stack.iam.calls().count("CreateServiceAccountKey") == 3  # provisioning's, and one per phase
    assert twice.dataloop == once.dataloop == 1, (once, twice)  # one credential update per rotation
    # IAM: one key created per phase; the second rotation also deletes the key it retires (grace 0).
    assert (once.iam, twice.iam) == (1, 2), (once, twice)
    stack.assert_converged()
    assert stack.key_of("previous") == rotated_once


# -- through the local cloud: Pub/Sub itself redelivers ----------------------------------------------------


@pytest.fixture
def results(local_cloud: LocalCloud) -> Iterator[Collector]:
    collector = local_cloud.results_collector("redelivery")
    yield collector
    local_cloud.delete_subscription(collector)


@pytest.mark.e2e
def test_a_request_redelivered_by_pubsub_and_published_twice_provisions_once(
    local_cloud: LocalCloud, results: Collector
) -> None:
    """Dataloop fails the first delivery (503): Pub/Sub redelivers the same message; then a client
    that never saw the reply publishes the same request again. One integration, one key, one account."""
    name, account = "team-redelivery", "dlgar-redelivery"
    email = f"{account}@{local_cloud.project}.iam.gserviceaccount.com"
    gateway, iam = local_cloud.dataloop, local_cloud.iam
    creates = (gateway_posts(gateway), iam.calls().count("CreateServiceAccountKey"))
    gateway.instrumented.inject(Fault(path=r"/integrations$", method="POST", status=503, body={"message": "busy"}))

    body = provision_request(local_cloud, name, account, f"redelivery-{uuid.uuid4().hex[:8]}")
    first_id = local_cloud.publish(local_cloud.topics.requests, body)
    first = wait_for_reply(results, body["request_id"])
    second_id = local_cloud.publish(local_cloud.topics.requests, body)
    replies = [
        first,
        results.wait_for(lambda m: isinstance(m.json, dict) and m.json.get("event_id") == second_id, timeout=60).json,
    ]

    function = local_cloud.functions["requests"]
    transient = [
        line
        for line in function.json_lines()
        if (line.get("logging.googleapis.com/labels") or {}).get("event_id") == first_id
        and "redelivery" in line.get("message", "")
    ]
    try:
        record("redelivery: through the local cloud", inputs=3)
        assert transient, "the first delivery should have failed transiently and asked for redelivery"
        assert [r["status"] for r in replies] == ["ok", "ok"], replies
        assert replies[1]["details"]["steps"]["key"] == "kept"
        assert gateway_posts(gateway) - creates[0] == 1, "one integration created, whatever the deliveries"
        assert iam.calls().count("CreateServiceAccountKey") - creates[1] == 1
        assert len(iam.state.keys_of(email)) == 1
        assert (
            len([i for i in gateway.stored_integrations(local_cloud.seed.org_id) if i["public"]["name"] == name]) == 1
        )
    finally:  # leave the session's cloud as it was: the e2e tests count integrations
        goodbye: dict[str, Any] = {
            "version": 1,
            "action": "deprovision",
            "name": name,
            "request_id": f"bye-{uuid.uuid4().hex[:6]}",
        }
        local_cloud.publish(local_cloud.topics.requests, goodbye)
        assert wait_for_reply(results, goodbye["request_id"])["status"] == "ok"


def gateway_posts(gateway: Any) -> int:
    """Integration creations that reached the gateway (not those an injected fault answered)."""
    return sum(1 for r in gateway.received if r["method"] == "POST" and r["path"].endswith("/integrations"))
