"""Key rotation against the local cloud: the real adapters over the wire to the Secret Manager,
IAM (gRPC) and Dataloop stand-ins, and a real docker-registry whose token endpoint asks the
local IAM whether a key is live and propagated, so a key works at the registry exactly when it
would on Google.

What is shown: a full rotation; a rotation interrupted at each step then re-run
(converges, no orphan keys); a key that only works after a propagation delay; a key that never
works (rolled back, Dataloop still pulls); Dataloop failing during set (nothing revoked); two
rotations at once (exactly one rotates); the 10-key limit; SECRET_ROTATE and a non-rotate event
through functions/rotate; a sweep over 50 integrations; and a prober that pulls with whatever
Dataloop holds across 20 back-to-back rotations without one failure, never seeing more than three
keys on the account.

The ``stack`` fixture, ``Stack``, ``Crashing`` and the names it provisions live in ``tests/fixtures/rotation.py``.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from deploy.access import function_grants
from deploy.settings import DeploySettings
from localcloud.wsgi import Fault
from shared.adapters.pubsub import PubSubFanOut
from shared.adapters.registry import RegistryClient, RegistryCredential
from shared.adapters.secrets import SecretManager
from shared.app import runtime
from shared.core.config import reset_settings
from shared.core.errors import GarDataloopError, RegistryUnavailable, ServiceUnavailable
from shared.model.dataloop import DataloopUnavailable
from shared.model.integrations import MANAGED_LABEL, Annotation
from shared.model.policy import AccessPolicy
from shared.model.record import retired_keys, timestamp
from shared.model.results import Outcome, Status
from tests.fixtures.registry import REGISTRY_SERVICE, TEST_PROJECT, TEST_REPOSITORY
from tests.fixtures.rotation import EMAIL, SECRET_ID, TOPIC, Crash, Stack
from tests.fixtures.secretmanager import SecretManagerHandle, deployed_access, make_client
from tests.unit.fakes import FakePublisher

pytestmark = pytest.mark.wire


# -- a full rotation ----------------------------------------------------------------------------------


def test_a_full_rotation_hands_dataloop_a_working_key(stack: Stack) -> None:
    old = stack.provision()
    assert stack.service_pulls()["status"] is True

    outcome = stack.rotation().rotate(SECRET_ID)

    assert outcome.status is Status.OK, outcome.reason
    new = stack.key_of("current")
    assert (outcome.details["old_key_id"], outcome.details["new_key_id"]) == (old, new)
    assert stack.aliases() == {"previous": 1, "current": 2}
    assert stack.dataloop_key() == new
    assert stack.live_keys() == {old, new}  # the old one stays as previous
    assert [s["step"] for s in outcome.details["steps"]] == ["create", "test", "set", "finish"]
    assert "resolved canary image" in outcome.details["steps"][1]["note"]
    challenge = stack.secrets.get_secret(SECRET_ID).annotations[Annotation.REGISTRY_CHALLENGE]
    assert challenge == f'Bearer realm="{stack.registry_stack.realm}",service="{REGISTRY_SERVICE}"'
    assert stack.dataloop.gateway.reloads[-1] is True  # running services pick the key up
    status = stack.service_pulls()
    assert status["status"] is True, status
    assert stack.dataloop.gateway.pulls[-1].ok
    stack.assert_converged()

    second = stack.rotation().rotate(SECRET_ID, force=True)
    assert second.status is Status.OK and second.details["retired_keys_deleted"] == [old]
    assert stack.live_keys() == {new, stack.key_of("current")}
    stack.assert_converged()


# -- interrupted, then re-run ---------------------------------------------------------------------------

CRASH_POINTS = [
    ("secrets", "add_version", 1, "after the key was created"),
    ("secrets", "update_secret", 2, "after the version was added"),
    ("registry", "resolve", 1, "after create (during test)"),
    ("dataloop", "PATCH", 0, "after test (during set)"),
    ("secrets", "update_secret", 3, "after set (at finish)"),
]


@pytest.mark.parametrize(("adapter", "method", "nth", "where"), CRASH_POINTS, ids=[c[3] for c in CRASH_POINTS])
def test_a_rotation_interrupted_after_each_step_converges_on_the_next_run(
    stack: Stack, adapter: str, method: str, nth: int, where: str
) -> None:
    old = stack.provision()
    if adapter == "dataloop":  # the gateway answers 503 to the PATCH and to the client's two retries
        stack.dataloop.gateway.instrumented.inject(Fault(path="/integrations$", method="PATCH", status=503, count=3))
    else:
        getattr(stack, adapter).crash_at(method, nth)

    with pytest.raises((Crash, DataloopUnavailable)):
        stack.rotation().rotate(SECRET_ID)

    assert stack.key_of("current") == old and old in stack.live_keys()  # nothing revoked
    assert stack.service_pulls()["status"] is True  # Dataloop pulls with what it holds

    outcome = stack.rotation().rotate(SECRET_ID)

    assert outcome.status is Status.OK, outcome.reason
    assert outcome.details["old_key_id"] == old
    stack.assert_converged()
    assert len(stack.live_keys()) == 2


#: What IAM has been seen to answer for a key that is gone (docs/external-apis.md §3.5).
GONE_KEY_STATUSES = [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION]


def _delete_behind_the_rotations_back(stack: Stack, key_id: str) -> None:
    stack.iam.state.delete_key(f"projects/{TEST_PROJECT}/serviceAccounts/{EMAIL}/keys/{key_id}")


@pytest.mark.parametrize("status", GONE_KEY_STATUSES, ids=[s.name for s in GONE_KEY_STATUSES])
def test_an_orphan_already_deleted_but_still_listed_is_not_a_refusal(stack: Stack, status: grpc.StatusCode) -> None:
    """The ledger still names a key an earlier run deleted, and IAM's listing still shows it."""
    old = stack.provision()
    orphan = stack.accounts.create_key(EMAIL).key_id  # made by a run that died before storing it
    record = stack.secrets.get_secret(SECRET_ID)
    ledger = {**record.annotations, Annotation.CREATED_KEYS: f"{old},{orphan}"}
    stack.secrets.update_secret(SECRET_ID, etag=record.etag, annotations=ledger)
    stack.iam.state.gone_key_status = status
    stack.iam.state.deleted_key_listings = 1
    _delete_behind_the_rotations_back(stack, orphan)

    outcome = stack.rotation().rotate(SECRET_ID)

    assert outcome.status is Status.OK, outcome.reason
    assert outcome.details["orphan_keys_deleted"] == [orphan]  # the census saw it listed
    stack.assert_converged()


@pytest.mark.parametrize("status", GONE_KEY_STATUSES, ids=[s.name for s in GONE_KEY_STATUSES])
def test_a_retired_key_already_gone_leaves_the_retired_list(stack: Stack, status: grpc.StatusCode) -> None:
    old = stack.provision()
    assert stack.rotation().rotate(SECRET_ID).status is Status.OK
    stack.iam.state.gone_key_status = status
    _delete_behind_the_rotations_back(stack, old)  # by hand, or by a run that died before recording it

    outcome = stack.rotation().rotate(SECRET_ID, force=True)

    assert outcome.status is Status.OK, outcome.reason
    assert outcome.details.get("retired_keys_deleted") == [old], outcome.details
    assert "kept for the next run" not in outcome.reason + str(outcome.details.get("notes", ""))
    assert retired_keys(stack.secrets.get_secret(SECRET_ID).annotations) == {}
    stack.assert_converged()


def test_a_dry_run_reads_but_never_writes(stack: Stack) -> None:
    old = stack.provision()
    stack.sm.wire.reset()
    stack.iam.servicer.reset()
    received = len(stack.dataloop.gateway.received)

    outcome = stack.rotation(dry_run=True).rotate(SECRET_ID)

    assert outcome.status is Status.SKIPPED and outcome.code == "dry-run"
    assert outcome.details["old_key_id"] == old and any("create a key" in p for p in outcome.details["plan"])
    assert {c["method"] for c in stack.sm.wire.call_log()} == {"GET"}
    assert set(stack.iam.calls()) == {"ListServiceAccountKeys"}
    assert len(stack.dataloop.gateway.received) == received
    assert stack.registry_stack.token_calls() == []
    assert stack.live_keys() == {old} and stack.aliases() == {"current": 1}


# -- the test step: propagation, and keys that never work ------------------------------------------------


def test_a_key_that_works_only_after_propagation_is_waited_for(stack: Stack) -> None:
    stack.provision()
    stack.iam.state.set_propagation_delay(1.5)

    started = time.monotonic()
    outcome = stack.rotation(test_timeout=10.0).rotate(SECRET_ID)

    assert outcome.status is Status.OK, outcome.reason
    assert time.monotonic() - started >= 1.5
    tries = int(outcome.details["steps"][1]["note"].rsplit("(", 1)[1].split()[0])
    assert tries >= 3  # refused while propagating, then passed twice
    stack.assert_converged()


def test_a_key_that_never_works_is_rolled_back_and_dataloop_still_pulls(stack: Stack) -> None:
    old = stack.provision()
    stack.iam.state.advance(7200)  # the current key is two hours old...
    stack.iam.state.set_propagation_delay(3600)  # ...and a new key will not work within the test timeout

    outcome = stack.rotation(test_timeout=1.0).rotate(SECRET_ID)

    assert outcome.status is Status.FAILED and outcome.code == "key-never-worked"
    assert "Dataloop was never touched" in outcome.reason
    assert stack.aliases() == {"current": 1}
    assert stack.live_keys() == {old}  # the new key was deleted
    assert stack.secrets.list_versions(SECRET_ID)[2] == "DISABLED"
    assert stack.dataloop_key() == old
    assert stack.dataloop.gateway.reloads == []  # no credential update ever reached Dataloop
    status = stack.service_pulls()
    assert status["status"] is True, status
    assert Annotation.ROTATION_LEASE not in stack.secrets.get_secret(SECRET_ID).annotations


def test_a_registry_that_is_down_keeps_the_key_pending_until_it_answers(stack: Stack) -> None:
    old = stack.provision()
    stack.registry_stack.token_server.inject(Fault(path="/token", status=503, count=1000))

    with pytest.raises(RegistryUnavailable):
        stack.rotation(test_timeout=0.5).rotate(SECRET_ID)

    assert "pending" in stack.aliases() and stack.dataloop_key() == old
    stack.registry_stack.token_server.reset()
    assert stack.rotation().rotate(SECRET_ID).status is Status.OK
    stack.assert_converged()


# -- Dataloop failing during set ------------------------------------------------------------------------


def test_dataloop_unavailable_during_set_revokes_nothing(stack: Stack) -> None:
    old = stack.provision()
    stack.dataloop.gateway.instrumented.inject(Fault(path="/integrations$", method="PATCH", status=503, count=3))

    with pytest.raises(DataloopUnavailable):
        stack.rotation().rotate(SECRET_ID)

    assert old in stack.live_keys() and stack.dataloop_key() == old
    assert stack.aliases()["current"] == 1 and "pending" in stack.aliases()
    assert stack.service_pulls()["status"] is True


def test_dataloop_refusing_the_new_key_rolls_it_back(stack: Stack) -> None:
    old = stack.provision()
    stack.dataloop.gateway.instrumented.inject(
        Fault(path="/integrations$", method="PATCH", status=403, body={"message": "Forbidden"})
    )

    outcome = stack.rotation().rotate(SECRET_ID)

    assert outcome.status is Status.FAILED and outcome.code == "dataloop-forbidden"
    assert stack.live_keys() == {old} and stack.dataloop_key() == old
    assert stack.aliases() == {"current": 1}
    assert stack.service_pulls()["status"] is True


# -- concurrency and limits -------------------------------------------------------------------------------


def test_two_rotations_started_together_rotate_once(stack: Stack) -> None:
    old = stack.provision()
    barrier = threading.Barrier(2)
    outcomes: list[Outcome] = []

    def run() -> None:
        rotation = stack.rotation()
        barrier.wait()
        outcomes.append(rotation.rotate(SECRET_ID))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(o.status.value for o in outcomes) == ["ok", "skipped"]
    skipped = next(o for o in outcomes if o.status is Status.SKIPPED)
    assert skipped.code == "rotation-in-progress"
    assert stack.iam.calls().count("CreateServiceAccountKey") == 2  # provisioning's and one rotation's
    assert stack.live_keys() == {old, stack.key_of("current")}
    stack.assert_converged()


def test_the_ten_key_limit_is_never_reached(stack: Stack) -> None:
    old = stack.provision()
    # A person's keys, made after the integration: no ledger lists them, so they are not orphans.
    for _ in range(8):
        stack.iam.state.create_key(f"projects/{TEST_PROJECT}/serviceAccounts/{EMAIL}")
    before = stack.live_keys()

    outcome = stack.rotation().rotate(SECRET_ID)

    assert outcome.status is Status.FAILED and outcome.code == "key-limit"
    assert "9 user-managed keys" in outcome.reason
    assert stack.live_keys() == before and len(before) == 9
    assert stack.iam.calls().count("CreateServiceAccountKey") == 1  # provisioning's only
    assert stack.dataloop_key() == old and stack.aliases() == {"current": 1}


def test_a_key_a_sibling_provision_just_made_survives_a_rotation_of_the_account(stack: Stack) -> None:
    """Two integrations share the account; the second is mid-provision: its key exists, its
    record is not labelled managed yet, so no listing of managed records shows the key."""
    stack.provision()
    sibling = "dataloop-gar-team-b"
    stack.secrets.create_secret(sibling, labels={}, annotations={Annotation.SERVICE_ACCOUNT: EMAIL})
    in_flight = stack.accounts.create_key(EMAIL)
    record = stack.secrets.get_secret(sibling)
    stack.secrets.update_secret(
        sibling, etag=record.etag, annotations={**record.annotations, Annotation.CREATED_KEYS: in_flight.key_id}
    )

    outcome = stack.rotation().rotate(SECRET_ID)

    assert outcome.status is Status.OK, outcome.reason
    assert "orphan_keys_deleted" not in outcome.details
    assert in_flight.key_id in stack.live_keys()


# -- functions/rotate: notifications and the sweep ----------------------------------------------------------


@pytest.fixture
def rotate_function(
    stack: Stack, secretmanager: SecretManagerHandle, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, list[Outcome], FakePublisher]]:
    """functions/rotate/main.py loaded in-process against the local cloud, with results captured."""
    secrets: Any = stack.secrets
    secrets.create_secret("dataloop-api-credentials", labels={}, annotations={})
    secrets.add_version("dataloop-api-credentials", json.dumps({"api_key": stack.dataloop.admin_key}).encode())
    environment = {
        "GCP_PROJECT": TEST_PROJECT,
        "SECRET_MANAGER_ENDPOINT": secretmanager.url,
        "IAM_ENDPOINT": stack.iam.target,
        "DATALOOP_BASE_URL": stack.dataloop.api_url,
        "REGISTRY_INSECURE_HOSTS": stack.host,
        "KEY_GRACE_PERIOD_SECONDS": "0",
        "ROTATION_TEST_TIMEOUT_SECONDS": "10",
        "HTTP_TIMEOUT_SECONDS": "5",
        "HTTP_RETRIES": "1",
        "ROTATION_TOPIC": TOPIC,
        "LOG_LEVEL": "WARNING",
        # What a deployment of this world allows: its org, and the accounts of its project.
        "ACCESS_POLICY": AccessPolicy(
            org_ids=frozenset([stack.dataloop.org_id]), account_projects=frozenset([TEST_PROJECT])
        ).to_json(),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    runtime.reset()
    results: list[Outcome] = []
    publisher = FakePublisher()

    class Sink:
        def publish(self, outcome: Outcome, message: object = None) -> None:
            results.append(outcome)

    monkeypatch.setattr(runtime, "results", lambda: Sink())
    monkeypatch.setattr(runtime, "rotation_publisher", lambda: PubSubFanOut(TOPIC, publisher=publisher))
    spec = importlib.util.spec_from_file_location("rotate_main_under_test", "functions/rotate/main.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        yield module, results, publisher
    finally:
        monkeypatch.undo()  # the real builders back before reset clears their caches
        for builder in (runtime.service_accounts, runtime.registry):
            if builder.is_built():
                builder().close()
        runtime.reset()
        reset_settings()


def pubsub_event(data: bytes, attributes: dict[str, str] | None = None) -> dict[str, Any]:
    message = {"data": base64.b64encode(data).decode(), "attributes": attributes or {}, "messageId": "m-1"}
    return {"message": message, "subscription": "projects/test-project/subscriptions/rotate"}


def test_secret_rotate_notifications_rotate_and_other_events_are_ignored(
    stack: Stack, secretmanager: SecretManagerHandle, rotate_function: Any
) -> None:
    function, results, _ = rotate_function
    old = stack.provision()
    record = stack.secrets.get_secret(SECRET_ID)
    # Secret Manager's own schedule on the secret: topics and a rotation period, fired by its scheduler.
    secretmanager.client.update_secret(
        request={
            "secret": {
                "name": record.name,
                "topics": [{"name": TOPIC}],
                "rotation": {
                    "rotation_period": timedelta(hours=1),
                    "next_rotation_time": datetime.now(UTC) + timedelta(minutes=10),
                },
            },
            "update_mask": {"paths": ["topics", "rotation"]},
        }
    )
    assert secretmanager.standin.fire_due_rotations(datetime.now(UTC) + timedelta(hours=2))
    rotate_event = secretmanager.notifications("SECRET_ROTATE")[-1]
    other = secretmanager.notifications("SECRET_UPDATE")[-1]

    function.rotate(pubsub_event(other.data, other.attributes))
    function.rotate(pubsub_event(rotate_event.data, rotate_event.attributes))

    ignored, rotated = results
    assert ignored.status is Status.IGNORED and "SECRET_UPDATE is not a rotation signal" in ignored.reason
    assert rotated.status is Status.OK, rotated.reason
    assert rotated.kind == "rotation" and rotated.details["old_key_id"] == old
    assert rotated.details["new_key_id"] == stack.key_of("current") == stack.dataloop_key()
    assert rotated.event_id == "m-1"
    # A notification about a secret this system does not manage is ignored too.
    function.rotate(
        pubsub_event(b"{}", {"eventType": "SECRET_ROTATE", "secretId": "projects/123/secrets/dataloop-api-credentials"})
    )
    assert results[-1].status is Status.IGNORED and "not an integration record" in results[-1].reason
    function.rotate(pubsub_event(b'{"kind": "rotate"}'))
    assert results[-1].status is Status.REJECTED and "needs 'integration'" in results[-1].reason


class DeployedSecrets(SecretManager):
    """The adapter as a deployed function runs it: presenting its own service account's access token."""

    def __init__(self, project: str, *, endpoint: str, token: str) -> None:
        super().__init__(project, endpoint=endpoint, timeout=5.0)
        self._token = token

    def _build_client(self) -> Any:
        return make_client(self.endpoint or "", self._token)


def test_a_rotate_message_by_name_stays_within_the_rotate_functions_deployed_permissions(
    stack: Stack, secretmanager: SecretManagerHandle, rotate_function: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    function, results, _ = rotate_function
    old = stack.provision()  # by the test, unconfined
    # The function calls Secret Manager as its own account, confined as deploy/access.py grants it:
    # its roles reach dataloop-gar-* (by project number), the Dataloop credentials, and listing.
    grants = function_grants(DeploySettings(project=TEST_PROJECT, region="us-central1"))["rotate"]
    email = grants[0].member.removeprefix("serviceAccount:")
    stack.iam.state.create_service_account(TEST_PROJECT, email.split("@", 1)[0])
    secretmanager.standin.authenticate = stack.iam.state.principal_for_access_token
    secretmanager.standin.restrict(email, deployed_access(grants, secretmanager.project_number))
    deployed = DeployedSecrets(TEST_PROJECT, endpoint=secretmanager.url, token=stack.iam.state.mint_access_token(email))
    monkeypatch.setattr(runtime, "secret_manager", lambda: deployed)
    secretmanager.wire.reset()
    try:
        function.rotate(pubsub_event(b'{"kind": "rotate", "integration": "team-a", "force": true}'))
    finally:
        deployed.client.transport.close()

    (outcome,) = results
    assert outcome.status is Status.OK, outcome.reason
    assert outcome.subject["secret_id"] == SECRET_ID and outcome.details["old_key_id"] == old
    assert not [c for c in secretmanager.wire.call_log() if "/secrets/team-a" in c["path"]]  # no call on the bare name
    stack.assert_converged()


def test_a_sweep_over_fifty_integrations_lists_once_and_fans_out_one_message_per_due_one(
    stack: Stack, secretmanager: SecretManagerHandle, rotate_function: Any
) -> None:
    function, results, publisher = rotate_function
    secrets: Any = stack.secrets
    now = datetime.now(UTC)
    due = []
    for n in range(50):
        secret_id = f"dataloop-gar-team-{n:02d}"
        days = 45 if n % 4 == 0 else 2
        annotations = {
            Annotation.REGISTRY_HOST: stack.host,
            Annotation.REPOSITORIES: f"{TEST_PROJECT}/{TEST_REPOSITORY}",
            Annotation.ROTATED_AT: timestamp(now - timedelta(days=days)),
        }
        if n == 10:
            annotations[Annotation.ROTATION_PERIOD] = str(86400)  # one day: due after two
            due.append(secret_id)
        secrets.create_secret(secret_id, labels=dict([MANAGED_LABEL]), annotations=annotations)
        if days == 45:
            due.append(secret_id)
    secretmanager.wire.reset()

    function.rotate(pubsub_event(b'{"kind": "sweep"}'))

    (outcome,) = results
    assert outcome.kind == "rotation-sweep" and outcome.status is Status.OK, outcome.reason
    listed = [c for c in secretmanager.wire.call_log() if c["method"] == "GET" and c["path"].endswith("/secrets")]
    assert len(listed) == 1 and "filter=labels.managed-by" in listed[0]["query"].replace("%3D", "=").replace("%2E", ".")
    assert [c["method"] for c in secretmanager.wire.call_log()] == ["GET"]  # no per-secret reads
    published = sorted(p["integration"] for p in publisher.payloads())
    assert published == sorted(due) and len(due) == 14
    assert all(p["kind"] == "rotate" for p in publisher.payloads())
    assert {t for t, _, _ in publisher.published} == {TOPIC}
    assert outcome.details["due_count"] == 14 and outcome.details["managed"] == 50


# -- the prober: zero failed pulls across twenty rotations ---------------------------------------------------


def test_a_prober_never_fails_to_pull_across_twenty_back_to_back_rotations(stack: Stack) -> None:
    stack.provision()
    prober_registry = RegistryClient(insecure_hosts=[stack.host], timeout=5.0, retries=0)
    stop = threading.Event()
    pulls: list[tuple[bool, str]] = []
    keys_seen: set[str] = set()
    most_keys = [0]

    def probe() -> None:
        while not stop.is_set():
            most_keys[0] = max(most_keys[0], len(stack.iam.state.keys_of(EMAIL)))
            user, password = stack.dataloop_credentials()
            credential = RegistryCredential(user, password)
            keys_seen.add(credential.key_id or "")
            prober_registry.forget(credential)
            try:
                prober_registry.resolve(stack.canary.by_digest, credential)
                pulls.append((True, ""))
            except GarDataloopError as exc:
                pulls.append((False, exc.reason))
            most_keys[0] = max(most_keys[0], len(stack.iam.state.keys_of(EMAIL)))

    thread = threading.Thread(target=probe, name="prober", daemon=True)
    thread.start()
    rotation = stack.rotation()
    outcomes = []
    try:
        for _ in range(20):
            outcomes.append(rotation.rotate(SECRET_ID, force=True))
    finally:
        stop.set()
        thread.join(timeout=10)
        prober_registry.close()

    assert [o.status for o in outcomes] == [Status.OK] * 20, [o.reason for o in outcomes if o.status is not Status.OK]
    failures = [reason for ok, reason in pulls if not ok]
    assert len(pulls) >= 40 and failures == [], failures[:3]
    assert most_keys[0] <= 3
    assert len(keys_seen) >= 10  # the prober really followed the rotations
    assert len({o.details["new_key_id"] for o in outcomes}) == 20
    stack.assert_converged()


# -- secrets stay secret --------------------------------------------------------------------------------------


def test_no_key_material_in_outcomes_or_logs(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    stack.provision()
    stack.iam.state.set_propagation_delay(0.3)
    ok = stack.rotation().rotate(SECRET_ID)
    stack.iam.state.set_propagation_delay(3600)
    failed = stack.rotation(test_timeout=0.5).rotate(SECRET_ID, force=True)
    assert ok.status is Status.OK and failed.status is Status.FAILED

    payloads = [stack.secrets.access(SECRET_ID, v)[1].decode() for v in (1, 2)]
    texts = [json.dumps(o.to_message()) for o in (ok, failed)] + [caplog.text]
    for text in texts:
        assert "PRIVATE KEY" not in text
        for payload in payloads:
            private_key = json.loads(payload)["private_key"]
            assert private_key.splitlines()[1] not in text
            assert base64.b64encode(payload.encode()).decode()[:48] not in text


def test_a_crash_in_secret_manager_is_transient_not_a_silent_failure(stack: Stack) -> None:
    stack.provision()
    stack.sm.wire.inject(Fault(path=f"/secrets/{SECRET_ID}$", method="PATCH", status=503, count=1))
    # The lease update itself fails: nothing happened, the error asks for redelivery.
    with pytest.raises(ServiceUnavailable):
        stack.rotation().rotate(SECRET_ID)
    assert stack.aliases() == {"current": 1} and len(stack.live_keys()) == 1
