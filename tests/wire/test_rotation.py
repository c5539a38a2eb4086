"""Key rotation against the local cloud: the real adapters over the wire to the Secret Manager,
IAM (gRPC) and Dataloop stand-ins, and a real docker-registry whose token endpoint asks the
local IAM whether a key is live and propagated, so a key works at the registry exactly when it
would on Google.

What is shown (issue 6): a full rotation; a rotation interrupted at each step then re-run
(converges, no orphan keys); a key that only works after a propagation delay; a key that never
works (rolled back, Dataloop still pulls); Dataloop failing during set (nothing revoked); two
rotations at once (exactly one rotates); the 10-key limit; SECRET_ROTATE and a non-rotate event
through functions/rotate; a sweep over 50 integrations; and a prober that pulls with whatever
Dataloop holds across 20 back-to-back rotations without one failure, never seeing more than three
keys on the account.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from localcloud.dataloop import docker_credentials
from localcloud.gcp_authority import GcpAuthority
from localcloud.iam import IamStandIn
from localcloud.wsgi import Fault
from shared import runtime
from shared.config import reset_settings
from shared.dataloop import DataloopClient, DataloopUnavailable, gar_options
from shared.errors import GarDataloopError, RegistryUnavailable, ServiceUnavailable
from shared.iam import ServiceAccounts
from shared.integrations import MANAGED_LABEL, Annotation
from shared.registry import RegistryClient, RegistryCredential
from shared.results import Outcome, Status
from shared.rotation import KeyProbe, KeyRotation
from shared.rotation.state import MANAGED_SINCE, timestamp
from shared.secrets import SecretManager
from shared.sweep import PubSubFanOut
from tests.fixtures.dataloop import DataloopSandbox
from tests.fixtures.registry import REGISTRY_SERVICE, TEST_PROJECT, TEST_REPOSITORY, PushedImage, RegistryStack
from tests.fixtures.secretmanager import SecretManagerHandle
from tests.unit.rotation_fakes import FakePublisher

pytestmark = pytest.mark.wire

SECRET_ID = "dataloop-gar-team-a"
ACCOUNT_ID = "dataloop-puller"
EMAIL = f"{ACCOUNT_ID}@{TEST_PROJECT}.iam.gserviceaccount.com"
READER = "roles/artifactregistry.reader"
TOPIC = f"projects/{TEST_PROJECT}/topics/dataloop-gar-rotation"


class Crash(RuntimeError):
    """What a simulated crash raises (any exception: the run stops where it is)."""


class Crashing:
    """An adapter whose ``nth`` call of ``method`` (counted from now) raises once."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self._plan: dict[str, list[int]] = {}
        self._calls: dict[str, int] = {}

    def crash_at(self, method: str, nth: int) -> None:
        self._plan.setdefault(method, []).append(self._calls.get(method, 0) + nth)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self._calls[name] = self._calls.get(name, 0) + 1
            if self._calls[name] in self._plan.get(name, []):
                self._plan[name].remove(self._calls[name])
                raise Crash(f"simulated crash at {name}")
            return attribute(*args, **kwargs)

        return call


@dataclass
class Stack:
    """Everything one rotation touches, wired to the local cloud, plus one provisioned integration."""

    sm: SecretManagerHandle
    iam: IamStandIn
    registry_stack: RegistryStack
    dataloop: DataloopSandbox
    canary: PushedImage
    secrets: Crashing
    accounts: Crashing
    client: DataloopClient
    registry: Crashing
    integration_id: str = ""
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return self.registry_stack.host

    def rotation(self, *, test_timeout: float = 5.0, grace: float = 0.0, **options: Any) -> KeyRotation:
        probe = KeyProbe(self.registry, initial_backoff=0.1, max_backoff=0.4, confirmations=2, confirm_interval=0.05)
        return KeyRotation(
            self.secrets,
            self.accounts,
            lambda: self.client,
            probe,
            grace_period_seconds=grace,
            test_timeout_seconds=test_timeout,
            **options,
        )

    def provision(self, secret_id: str = SECRET_ID, *, rotated_days_ago: float = 40, **notes: str) -> str:
        """As provisioning leaves an integration: one key, aliased current, held by Dataloop. Its key id."""
        key = self.accounts.create_key(EMAIL)
        integration = self.client.integrations(self.dataloop.org_id).create(
            secret_id, gar_options(key.json_text, self.host)
        )
        self.integration_id = integration.id
        now = datetime.now(UTC)
        annotations = {
            Annotation.ORG: self.dataloop.org_id,
            Annotation.INTEGRATION_ID: integration.id,
            Annotation.INTEGRATION_NAME: secret_id.removeprefix("dataloop-gar-"),
            Annotation.SERVICE_ACCOUNT: EMAIL,
            Annotation.REGISTRY_HOST: self.host,
            Annotation.REPOSITORIES: f"{TEST_PROJECT}/{TEST_REPOSITORY}",
            Annotation.CANARY_IMAGE: str(self.canary.by_tag),
            Annotation.ROTATED_AT: timestamp(now - timedelta(days=rotated_days_ago)),
            MANAGED_SINCE: timestamp(now),
            **notes,
        }
        self.secrets.create_secret(secret_id, labels=dict([MANAGED_LABEL]), annotations=annotations)
        version = self.secrets.add_version(secret_id, key.json_text.encode())
        record = self.secrets.get_secret(secret_id)
        self.secrets.update_secret(secret_id, etag=record.etag, version_aliases={"current": version})
        return key.key_id

    # -- what the world looks like -------------------------------------------------------------
    def live_keys(self) -> set[str]:
        return {k.key_id for k in self.iam.state.keys_of(EMAIL)}

    def aliases(self, secret_id: str = SECRET_ID) -> dict[str, int]:
        return dict(self.secrets.get_secret(secret_id).version_aliases)

    def key_of(self, alias: str, secret_id: str = SECRET_ID) -> str:
        _, payload = self.secrets.access(secret_id, self.aliases(secret_id)[alias])
        return json.loads(payload)["private_key_id"]

    def dataloop_credentials(self) -> tuple[str, str]:
        """What a kubelet would present to the registry, from the integration Dataloop stores."""
        stored = next(
            i for i in self.dataloop.gateway.stored_integrations() if i["public"]["id"] == self.integration_id
        )
        credentials = docker_credentials(stored["options"], self.host)
        assert credentials is not None
        return credentials

    def dataloop_key(self) -> str:
        return json.loads(self.dataloop_credentials()[1])["private_key_id"]

    def service_pulls(self, timeout: float = 10.0) -> dict[str, Any]:
        """Restart a Dataloop service whose runner image is the canary; its first runtime status."""
        gateway = self.dataloop.gateway
        service_id = gateway.add_service(self.dataloop.org_id, "runner", str(self.canary.by_tag))
        self.client.services.restart(service_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            statuses = gateway.runtime_status(service_id)
            if statuses:
                return statuses[0]
            time.sleep(0.05)
        raise AssertionError("the Dataloop service reported no runtime status")

    def assert_converged(self) -> None:
        """Steady state: the account holds exactly current and previous, Dataloop current, no lease."""
        record = self.secrets.get_secret(SECRET_ID)
        aliases = dict(record.version_aliases)
        assert "pending" not in aliases and Annotation.ROTATION_LEASE not in record.annotations
        assert self.live_keys() == {self.key_of("current"), self.key_of("previous")}, "orphan or missing keys"
        assert self.dataloop_key() == self.key_of("current")
        enabled = {n for n, s in self.secrets.list_versions(SECRET_ID).items() if s == "ENABLED"}
        assert enabled == set(aliases.values())


@pytest.fixture
def stack(
    secretmanager: SecretManagerHandle,
    iam: IamStandIn,
    artifact_registry: Any,
    gcp_authority: GcpAuthority,
    local_registry: RegistryStack,
    registry_image: PushedImage,
    make_dataloop: Callable[..., DataloopSandbox],
) -> Iterator[Stack]:
    iam.state.create_service_account(TEST_PROJECT, ACCOUNT_ID)
    repository = artifact_registry.state.create_repository(TEST_PROJECT, "us-central1", TEST_REPOSITORY)
    artifact_registry.state.add_binding(repository["name"], READER, f"serviceAccount:{EMAIL}")
    sandbox = make_dataloop(insecure_registries=[local_registry.host])
    secrets = SecretManager(TEST_PROJECT, endpoint=secretmanager.url, timeout=5.0)
    accounts = ServiceAccounts(endpoint=iam.target, timeout=5.0)
    client = sandbox.client()
    registry = local_registry.client(retries=1)
    local_registry.token_server.reset()
    with local_registry.authority(gcp_authority):
        yield Stack(
            sm=secretmanager,
            iam=iam,
            registry_stack=local_registry,
            dataloop=sandbox,
            canary=registry_image,
            secrets=Crashing(secrets),
            accounts=Crashing(accounts),
            client=client,
            registry=Crashing(registry),
        )
    local_registry.token_server.reset()
    client.close()
    accounts.close()
    registry.close()
    secrets.client.transport.close()


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
    # A person's keys, made an hour before the integration was managed.
    stack.iam.state.advance(-3600)
    for _ in range(8):
        stack.iam.state.create_key(f"projects/{TEST_PROJECT}/serviceAccounts/{EMAIL}")
    stack.iam.state.advance(3600)
    old = stack.provision()
    before = stack.live_keys()

    outcome = stack.rotation().rotate(SECRET_ID)

    assert outcome.status is Status.FAILED and outcome.code == "key-limit"
    assert "9 user-managed keys" in outcome.reason
    assert stack.live_keys() == before and len(before) == 9
    assert stack.iam.calls().count("CreateServiceAccountKey") == 1  # provisioning's only
    assert stack.dataloop_key() == old and stack.aliases() == {"current": 1}


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
            if builder.cache_info().currsize:
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
    assert results[-1].status is Status.IGNORED and "not a managed integration" in results[-1].reason
    function.rotate(pubsub_event(b'{"kind": "rotate"}'))
    assert results[-1].status is Status.REJECTED and "needs 'integration'" in results[-1].reason


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
