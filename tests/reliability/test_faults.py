"""Faults, one at a time, each with its expected outcome, against the real adapters and stand-ins.

Every case injects one fault into a key rotation (or a reference test) and then checks the
three reliability promises, the same way for every fault:

1. **the credential Dataloop holds stays valid** — a prober thread pulls, over and over
   for the whole case, with exactly what the Dataloop gateway stores (decoded as a kubelet
   would, no cached token), and not one of those pulls may be refused;
2. **nothing is left half-done after the next run** — the fault is cleared, the rotation
   runs again and must end ``ok`` and converged (current and previous keys only, Dataloop
   on current, no lease, no pending version, no orphan key);
3. **the operator gets an actionable message** — the outcome's reason (or the error that
   asks Pub/Sub to redeliver) names what to check.

The world is ``tests/wire/test_rotation.py``'s ``stack`` (Secret Manager REST, IAM gRPC and
Dataloop stand-ins, a real docker-registry whose token endpoint asks the local IAM), reused
rather than rebuilt. Many of these faults also have a focused test in the wire suites; this
module is the systematic matrix, with figures.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from localcloud.processes import free_port
from localcloud.wsgi import Fault
from shared.adapters.catalog import IntegrationCatalog, SecretKeySource
from shared.adapters.dataloop.client import DataloopClient
from shared.adapters.iam import ServiceAccounts
from shared.adapters.registry import RegistryClient, RegistryCredential
from shared.adapters.secrets import SecretManager
from shared.app.entrypoint import handle_event
from shared.core.errors import (
    Conflict,
    GarDataloopError,
    RegistryUnavailable,
    ServiceUnavailable,
    TransientError,
)
from shared.model.results import Outcome, Status
from shared.workflows.push import PushTester
from shared.workflows.reference_test import ReferenceTest
from tests.fixtures.registry import TEST_PROJECT
from tests.fixtures.rotation import EMAIL, SECRET_ID, Crashing, Stack
from tests.reliability.figures import record
from tests.reliability.leaks import capture_outcome
from tests.unit.fakes import FakeSink

pytestmark = pytest.mark.wire


class Prober:
    """Pulls the canary image, again and again, with the credential Dataloop stores right now.

    A refusal is a lost pull: it is what a kubelet would have met. A registry that does not
    answer at all (a fault some cases inject on purpose) is not a refusal and is counted apart.
    """

    def __init__(self, target: Stack) -> None:
        self.stack = target
        self.registry = RegistryClient(insecure_hosts=[target.host], timeout=5.0, retries=0)
        self.pulls = 0
        self.unanswered = 0
        self.lost: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        self.registry.close()

    def wait_for_pulls(self, count: int, timeout: float = 10.0) -> None:
        """Let the prober pull ``count`` more times (after a recovery, to prove the credential still works)."""
        target = self.pulls + count
        deadline = time.monotonic() + timeout
        while self.pulls < target and time.monotonic() < deadline:
            time.sleep(0.02)

    def _run(self) -> None:
        while not self._stop.is_set():
            username, password = self.stack.dataloop_credentials()
            credential = RegistryCredential(username, password)
            self.registry.forget(credential)
            try:
                self.registry.resolve(self.stack.canary.by_digest, credential)
                self.pulls += 1
            except RegistryUnavailable:
                self.unanswered += 1
            except GarDataloopError as exc:
                self.pulls += 1
                self.lost.append(f"{credential.key_id}: {exc.reason}")
            self._stop.wait(0.02)


class Intercept:
    """An adapter whose ``method`` first runs ``before(*args, **kwargs)`` (which may raise)."""

    def __init__(self, target: Any, method: str, before: Callable[..., None]) -> None:
        self._target, self._method, self._before = target, method, before

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if name != self._method:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self._before(*args, **kwargs)
            return attribute(*args, **kwargs)

        return call


@dataclass
class World:
    """The stack, plus what a case swapped in and must put back."""

    stack: Stack
    restore: list[Callable[[], None]] = field(default_factory=list)
    test_timeout: float = 5.0

    def swap(self, name: str, value: Any) -> None:
        previous = getattr(self.stack, name)
        setattr(self.stack, name, value)
        self.restore.append(lambda: setattr(self.stack, name, previous))

    def concurrent_writer(self, times: int) -> None:
        """Someone else edits the secret just before each of our next ``times`` updates (a real etag race)."""
        other = SecretManager(TEST_PROJECT, endpoint=self.stack.sm.url, timeout=5.0)
        left = [times]

        def touch(secret_id: str, **_: Any) -> None:
            if left[0] > 0:
                left[0] -= 1
                record_ = other.get_secret(secret_id)
                other.update_secret(secret_id, etag=None, annotations={**record_.annotations, "touched": str(left[0])})

        self.swap("secrets", Intercept(self.stack.secrets, "update_secret", touch))


# -- the cases -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One fault: how to inject it, what the first run must end in, and how to clear it."""

    name: str
    inject: Callable[[World], None]
    expect: type[BaseException] | tuple[Status, str]  # raised (redelivery), or (status, code) reported
    hint: str  # what the operator's message must say
    clear: Callable[[World], None] = lambda world: None
    before_provisioning: Callable[[World], None] = lambda world: None


def dataloop_fault(status: int, body: Any = None, count: int = 1, **headers: str) -> Callable[[World], None]:
    def inject(world: World) -> None:
        fault = Fault(path="/integrations$", method="PATCH", status=status, body=body, headers=headers, count=count)
        world.stack.dataloop.gateway.instrumented.inject(fault)

    return inject


def slow_dataloop(world: World) -> None:
    client = world.stack.dataloop.client(timeout=0.4, retries=1)
    world.restore.append(client.close)
    world.swap("client", client)
    world.stack.dataloop.gateway.instrumented.inject(
        Fault(path="/integrations$", method="PATCH", latency_seconds=1.0, count=2)
    )


def unreachable_dataloop(world: World) -> None:
    base = f"http://127.0.0.1:{free_port()}/api/v1"  # nothing listens there
    client = DataloopClient(
        api_key=world.stack.dataloop.admin_key, base_url=base, timeout=1.0, retries=1, backoff_factor=0.01
    )
    world.restore.append(client.close)
    world.swap("client", client)


def secret_manager_fault(path: str, method: str) -> Callable[[World], None]:
    def inject(world: World) -> None:
        body = {"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}}
        world.stack.sm.wire.inject(Fault(path=path, method=method, status=503, body=body))

    return inject


def secret_manager_down_at_finish(world: World) -> None:
    """The one update that promotes pending to current fails (transiently), after Dataloop was set."""
    fired = [False]

    def fail(secret_id: str, **kwargs: Any) -> None:
        aliases = kwargs.get("version_aliases") or {}
        if not fired[0] and "previous" in aliases and "pending" not in aliases:
            fired[0] = True
            raise ServiceUnavailable("Secret Manager unavailable while trying to update secret (UNAVAILABLE): injected")

    world.swap("secrets", Intercept(world.stack.secrets, "update_secret", fail))


def persons_keys(world: World) -> None:
    state = world.stack.iam.state
    state.advance(-3600)  # made an hour before the integration was managed: not the rotation's to delete
    names = [state.create_key(f"projects/{TEST_PROJECT}/serviceAccounts/{EMAIL}")[0].name for _ in range(8)]
    state.advance(3600)

    def delete() -> None:  # the person tidies up: the fix the key-limit message asks for
        for name in names:
            state.delete_key(name)

    world.restore.append(delete)


def flaky_iam(world: World) -> None:
    accounts = ServiceAccounts(endpoint=world.stack.iam.target, timeout=0.3)  # retries give up within ~1 s
    world.restore.append(accounts.close)
    world.swap("accounts", Crashing(accounts))
    world.stack.iam.inject("CreateServiceAccountKey", grpc.StatusCode.UNAVAILABLE, "The service is unavailable", 1000)


def never_propagates(world: World) -> None:
    world.stack.iam.state.advance(7200)
    world.stack.iam.state.set_propagation_delay(3600)
    world.test_timeout = 1.0


CASES = [
    Case(
        "Dataloop 401 at set",
        dataloop_fault(401, {"message": "Unauthorized"}),
        (Status.FAILED, "dataloop-unauthorized"),
        "Check the Dataloop API key",
    ),
    Case(
        "Dataloop 403 at set",
        dataloop_fault(403, {"message": "Forbidden"}),
        (Status.FAILED, "dataloop-forbidden"),
        "Admin or Owner role",
    ),
    Case(
        "Dataloop 429 at set",
        dataloop_fault(429, {"message": "Too Many Requests"}, count=3, **{"Retry-After": "0"}),
        TransientError,
        "rate limiting",
    ),
    Case(
        "Dataloop 500 at set",
        dataloop_fault(500, {"message": "Internal Server Error"}, count=3),
        TransientError,
        "tried again later",
    ),
    Case(
        "Dataloop 503 at set",
        dataloop_fault(503, {"message": "Service Unavailable"}, count=3),
        TransientError,
        "tried again later",
    ),
    Case("Dataloop timeout at set (applied late)", slow_dataloop, TransientError, "got no answer"),
    Case("Dataloop unreachable", unreachable_dataloop, TransientError, "Check the Dataloop base URL"),
    Case(
        "Secret Manager 503 taking the lease",
        secret_manager_fault(f"/secrets/{SECRET_ID}$", "PATCH"),
        ServiceUnavailable,
        "Secret Manager unavailable",
    ),
    Case(
        "Secret Manager 503 adding the new version",
        secret_manager_fault(r":addVersion$", "POST"),
        ServiceUnavailable,
        "Secret Manager unavailable",
    ),
    Case(
        "Secret Manager 503 at finish", secret_manager_down_at_finish, ServiceUnavailable, "Secret Manager unavailable"
    ),
    Case("Secret Manager etag conflict, once", lambda world: world.concurrent_writer(1), (Status.OK, ""), "rotated"),
    Case("Secret Manager etag conflict, relentless", lambda world: world.concurrent_writer(50), Conflict, "etag"),
    Case(
        "IAM org policy forbids key creation",
        lambda world: world.stack.iam.state.set_key_creation_disabled(),
        (Status.FAILED, "key-creation-disabled"),
        "iam.disableServiceAccountKeyCreation",
        lambda world: world.stack.iam.state.set_key_creation_disabled(False),
    ),
    Case(
        "IAM key limit (9 keys, 8 a person's)",
        lambda world: None,
        (Status.FAILED, "key-limit"),
        "user-managed keys",
        before_provisioning=persons_keys,
    ),
    Case(
        "IAM unavailable creating the key",
        flaky_iam,
        ServiceUnavailable,
        "IAM",
        lambda world: world.stack.iam.servicer.reset(),
    ),
    Case(
        "registry down during the key test",
        lambda world: world.stack.registry_stack.token_server.inject(Fault(path="/token", status=503, count=100_000)),
        RegistryUnavailable,
        "stays pending",
        lambda world: world.stack.registry_stack.token_server.reset(),
    ),
    Case(
        "new key never works (IAM propagation)",
        never_propagates,
        (Status.FAILED, "key-never-worked"),
        "Dataloop was never touched",
        lambda world: world.stack.iam.state.set_propagation_delay(0),
    ),
]


@pytest.fixture
def world(stack: Stack) -> Iterator[World]:
    made = World(stack)
    yield made
    for undo in reversed(made.restore):
        undo()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_fault_leaves_dataloop_pulling_and_the_next_run_converges(world: World, case: Case) -> None:
    cloud = world.stack
    case.before_provisioning(world)
    old = cloud.provision()
    with Prober(cloud) as prober:
        case.inject(world)
        outcome: Outcome | None = None
        raised: GarDataloopError | None = None
        try:
            outcome = cloud.rotation(test_timeout=world.test_timeout).rotate(SECRET_ID)
        except GarDataloopError as exc:
            raised = exc

        # 1. the expected outcome, with a message that says what to do
        if isinstance(case.expect, tuple):
            assert raised is None, f"raised {raised!r}; expected a reported {case.expect}"
            assert outcome is not None
            assert (outcome.status, outcome.code or "") == case.expect, (
                outcome.status,
                outcome.code,
                outcome.reason,
            )
            message = outcome.reason
        else:
            assert isinstance(raised, case.expect), (
                f"expected {case.expect.__name__} (redelivery), got {raised or outcome!r}"
            )
            message = raised.reason
        assert case.hint in message, f"message {message!r} does not say {case.hint!r}"
        if outcome is not None:
            capture_outcome(outcome)  # scanned for secrets like every published result

        # 2. whatever happened, the old key is alive and Dataloop holds a key that pulls
        assert old in cloud.live_keys()
        assert cloud.dataloop_key() in cloud.live_keys()

        # 3. the fault clears; the next run (a redelivery, or the next sweep) finishes the job
        case.clear(world)
        for undo in reversed(world.restore):
            undo()
        world.restore.clear()
        again = cloud.rotation().rotate(SECRET_ID, force=outcome is not None and outcome.status is Status.OK)
        assert again.status is Status.OK, again.reason
        capture_outcome(again)
        cloud.assert_converged()
    record(f"faults: {case.name}", inputs=1, pulls=prober.pulls, pulls_lost=len(prober.lost))
    assert prober.pulls >= 3, "the prober must really have pulled"
    assert prober.lost == [], prober.lost[:3]


# -- the reference test: the registry down while a push is tested ------------------------------------------


def test_a_registry_outage_during_a_reference_test_asks_for_redelivery_and_the_redelivery_passes(stack: Stack) -> None:
    stack.provision()
    secrets = SecretManager(TEST_PROJECT, endpoint=stack.sm.url, timeout=5.0)
    registry = RegistryClient(insecure_hosts=[stack.host], timeout=5.0, retries=1, backoff_factor=0.01)
    tester = PushTester(IntegrationCatalog(secrets, ttl=60), SecretKeySource(secrets), ReferenceTest(registry))
    event = {
        "message": {
            "data": base64.b64encode(
                json.dumps({"action": "INSERT", "digest": str(stack.canary.by_digest)}).encode()
            ).decode(),
            "messageId": "push-1",
        }
    }
    sink = FakeSink()
    with Prober(stack) as prober:
        stack.registry_stack.token_server.inject(Fault(path="/token", status=503, count=100_000))
        with pytest.raises(RegistryUnavailable) as caught:
            handle_event("reference-test", event, tester.handle, sink)
        assert sink.outcomes == [], "a transient failure publishes nothing"
        assert "HTTP 503" in caught.value.reason and stack.host in caught.value.reason
        stack.registry_stack.token_server.reset()
        outcome = handle_event("reference-test", event, tester.handle, sink)
        prober.wait_for_pulls(5)
    registry.close()
    secrets.client.transport.close()
    record("faults: registry down during a reference test", inputs=1, pulls=prober.pulls, pulls_lost=len(prober.lost))
    assert outcome.status is Status.PASSED and sink.outcomes == [outcome]
    assert prober.lost == []
