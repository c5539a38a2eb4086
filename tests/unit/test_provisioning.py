"""Provisioning decisions, the request dispatcher, status arithmetic and the CLI, over in-memory fakes.

The wire tests prove the adapters and stand-ins agree; these pin down the choices that
are easy to get subtly wrong: which keys are an interrupted attempt's and which belong to
someone else, when a running rotation must be waited for, how a rotation's outcome is
answered, how long the patient reference test waits, and what the CLI sends.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import cli
from shared.core.errors import PermanentError, ServiceUnavailable, TransientError
from shared.model.dataloop import Integration
from shared.model.events import PubSubMessage
from shared.model.images import ManifestRef, RegistryImage
from shared.model.integrations import MANAGED_LABEL, Annotation
from shared.model.key_ledger import created_keys
from shared.model.keys import RegistryCredential
from shared.model.policy import AccessPolicy, account_description
from shared.model.record import SecretRecord, parse_timestamp, timestamp
from shared.model.request import RotateRequest, parse_request
from shared.model.results import Outcome, Status
from shared.workflows.key_probe import KeyProbe
from shared.workflows.provisioning.deprovision import Deprovisioner
from shared.workflows.provisioning.handler import RequestHandler
from shared.workflows.provisioning.image_check import ImageCheck
from shared.workflows.provisioning.provision import Provisioner, account_display_name
from shared.workflows.provisioning.records import (
    GRANTS_MADE,
)
from shared.workflows.reference_test import ReferenceTest
from shared.workflows.status import StatusReport
from tests.fixtures.policy import AllowEverything
from tests.unit.fakes import (
    FakeAccounts,
    FakeDataloop,
    FakeRegistry,
    FakeRepositories,
    FakeSecret,
    FakeSecrets,
    Version,
    challenge_of,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOST = "us-central1-docker.pkg.dev"
PROJECT = "my-project"
EMAIL = f"dlgar-team-a@{PROJECT}.iam.gserviceaccount.com"
SECRET_ID = "dataloop-gar-team-a"
IMAGE = f"{HOST}/{PROJECT}/images/app:v1"
DIGEST = "sha256:" + "cd" * 32


@dataclass
class World:
    secrets: FakeSecrets = field(default_factory=lambda: FakeSecrets(project=PROJECT))
    #: keys named key-1, key-2, ... so a test can tell the registry which to accept before they exist
    accounts: FakeAccounts = field(default_factory=lambda: FakeAccounts(lambda: NOW, key_id="key-{}".format))
    repositories: FakeRepositories = field(
        default_factory=lambda: FakeRepositories("images", "models", project=PROJECT)
    )
    dataloop: FakeDataloop = field(default_factory=FakeDataloop)
    registry: FakeRegistry = field(default_factory=FakeRegistry)
    sleeps: list[float] = field(default_factory=list)
    clock: list[float] = field(default_factory=lambda: [0.0])
    #: how long provisioning proves a new key before it gives its verdict
    patience: float = 60.0

    def __post_init__(self) -> None:
        self.registry.images[(HOST, f"{PROJECT}/images/app")] = {"v1": DIGEST}

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock[0] += seconds

    def probe(self) -> KeyProbe:
        return KeyProbe(self.registry, sleep=self.sleep, monotonic=lambda: self.clock[0])

    def provisioner(self) -> Provisioner:
        return Provisioner(
            self.secrets,
            self.accounts,
            self.repositories,
            lambda: self.dataloop,
            self.probe(),
            ReferenceTest(self.registry),
            test_timeout_seconds=self.patience,
            rotation_topic=f"projects/{PROJECT}/topics/rot",
            default_rotation_period_days=30,
            clock=lambda: NOW,
            sleep=self.sleep,
        )

    def provision(self, **overrides: Any) -> Outcome:
        body = {
            "version": 1,
            "action": "provision",
            "name": "team-a",
            "org_id": "org-1",
            "project": PROJECT,
            "location": "us-central1",
            "repositories": ["images", "models"],
            "service_account": {"create": "dlgar-team-a"},
        }
        body.update(overrides)
        return self.provisioner().provision(parse_request(body))  # type: ignore[arg-type]

    def deprovision(self, **overrides: Any) -> Outcome:
        request = parse_request({"version": 1, "action": "deprovision", "name": "team-a", **overrides})
        deprovisioner = Deprovisioner(
            self.secrets,
            self.accounts,
            self.repositories,
            lambda: self.dataloop,
            clock=lambda: NOW,
            policy=AccessPolicy(
                org_ids=frozenset(["org-1"]),
                account_projects=frozenset([PROJECT]),
                service_accounts=(f"*@{PROJECT}.iam.gserviceaccount.com",),
            ),
        )
        return deprovisioner.deprovision(request)  # type: ignore[arg-type]

    def secret(self) -> FakeSecret:
        return self.secrets.secrets[SECRET_ID]


@pytest.fixture
def world() -> World:
    return World()


# -- provision ----------------------------------------------------------------------------------------


def test_the_record_is_written_first_and_activated_last(world: World) -> None:
    outcome = world.provision()

    assert outcome.status is Status.OK, outcome.reason
    first, last = world.secrets.writes[0][1], world.secrets.writes[-1][1]
    assert MANAGED_LABEL[0] not in first["labels"], "a half-made integration must stay invisible to the catalog"
    assert first["annotations"][Annotation.SERVICE_ACCOUNT] == EMAIL  # recorded before the account exists
    assert last["labels"][MANAGED_LABEL[0]] == MANAGED_LABEL[1]
    assert world.secret().aliases == {"current": 1}
    assert created_keys(world.secret().annotations) == set(world.accounts.keys)  # the ledger names the key
    assert world.accounts.accounts[EMAIL]["display_name"] == account_display_name("team-a")
    assert [s["name"] for s in world.dataloop.stored.values()] == ["team-a"]


def test_a_redelivered_provision_leaves_dataloop_alone_and_a_new_request_converges_it(world: World) -> None:
    first = world.provision(request_id="req-1")
    again = world.provision(request_id="req-1")

    assert (first.status, again.status) == (Status.OK, Status.OK), (first.reason, again.reason)
    assert world.dataloop.ensured == ["team-a"], "a redelivery must not PATCH Dataloop (reloadServices=true)"
    assert again.details["steps"]["dataloop"].startswith("unchanged")
    assert again.details["dataloop_integration_id"] == first.details["dataloop_integration_id"]

    assert world.provision(request_id="req-2").status is Status.OK  # re-sent on purpose: converge Dataloop
    assert world.provision().status is Status.OK  # no request_id: nothing tells a redelivery apart
    assert world.dataloop.ensured == ["team-a"] * 3


def test_a_deprovisioned_record_forgets_which_request_provisioned_it(world: World) -> None:
    assert world.provision(request_id="req-1").status is Status.OK
    assert world.deprovision(keep_secret=True).status is Status.OK
    assert world.provision(request_id="req-1").status is Status.OK
    assert world.dataloop.ensured == ["team-a", "team-a"]
    assert [s["name"] for s in world.dataloop.stored.values()] == ["team-a"]


def test_a_running_rotation_is_waited_for_without_touching_anything(world: World) -> None:
    assert world.provision().status is Status.OK
    lease = {"holder": "rot-1", "expires": timestamp(NOW + timedelta(minutes=5))}
    world.secret().annotations[Annotation.ROTATION_LEASE] = json.dumps(lease)
    writes = len(world.secrets.writes)

    with pytest.raises(TransientError) as caught:
        world.provision(repositories=["images"])
    with pytest.raises(TransientError):
        world.deprovision()

    assert caught.value.code == "rotation-in-progress" and "rot-1" in caught.value.reason
    assert len(world.secrets.writes) == writes and world.dataloop.stored


def test_an_expired_or_garbled_lease_does_not_block(world: World) -> None:
    assert world.provision().status is Status.OK
    expired = {"holder": "rot-1", "expires": timestamp(NOW - timedelta(seconds=1))}
    world.secret().annotations[Annotation.ROTATION_LEASE] = json.dumps(expired)
    assert world.provision().status is Status.OK
    world.secret().annotations[Annotation.ROTATION_LEASE] = "{garbled"
    assert world.provision().status is Status.OK


def test_an_integration_is_not_moved_to_another_org_or_account(world: World) -> None:
    assert world.provision().status is Status.OK
    world.accounts.accounts["other-puller@my-project.iam.gserviceaccount.com"] = {"display_name": "", "disabled": False}

    moved = world.provision(org_id="org-2")
    switched = world.provision(service_account={"email": "other-puller@my-project.iam.gserviceaccount.com"})

    assert moved.status is Status.FAILED and moved.code == "integration-mismatch"
    assert "deprovision it first" in moved.reason and moved.details["failed_step"] == "record"
    assert switched.status is Status.FAILED and switched.code == "integration-mismatch"


def test_a_secret_that_is_not_a_record_is_left_alone(world: World) -> None:
    world.secrets.create_secret(SECRET_ID, labels={}, annotations={"owner": "someone"})

    provisioned = world.provision()
    deprovisioned = world.deprovision()

    assert provisioned.status is Status.FAILED and provisioned.code == "secret-not-managed"
    assert deprovisioned.status is Status.FAILED and deprovisioned.code == "secret-not-managed"
    assert world.secret().annotations == {"owner": "someone"}


def test_switching_to_the_email_of_the_account_it_created_keeps_it_deletable(world: World) -> None:
    assert world.provision().status is Status.OK
    assert world.provision(service_account={"email": EMAIL}).status is Status.OK
    assert world.secret().annotations[Annotation.CREATED_SERVICE_ACCOUNT] == "true"


def test_a_missing_or_disabled_existing_account_fails_with_what_to_do(world: World) -> None:
    missing = world.provision(service_account={"email": EMAIL})
    world.accounts.accounts[EMAIL] = {"display_name": "", "disabled": True}
    disabled = world.provision(service_account={"email": EMAIL})

    assert missing.code == "service-account-not-found" and '"create"' in missing.reason
    assert disabled.code == "service-account-disabled" and "gcloud iam service-accounts enable" in disabled.reason
    assert SECRET_ID not in world.secrets.secrets


def test_an_interrupted_first_key_is_cleaned_up_but_other_keys_of_the_account_are_not(world: World) -> None:
    """A pre-existing account may hold keys other systems use, even brand-new ones: only the
    keys the record's ledger lists, and stored nowhere, are deleted."""
    world.accounts.accounts[EMAIL] = {"display_name": "made by hand", "disabled": False}
    theirs = world.accounts.add(EMAIL, at=NOW).key_id  # as new as ours
    world.secrets.add_version = _failing(world.secrets.add_version)  # type: ignore[method-assign]
    world.accounts.delete_key = _failing(world.accounts.delete_key)  # type: ignore[method-assign]
    with pytest.raises(ServiceUnavailable):
        world.provision(service_account={"email": EMAIL})
    orphan = [k for k in world.accounts.keys if k != theirs]
    assert len(orphan) == 1 and created_keys(world.secret().annotations) == set(orphan)
    del world.secrets.add_version, world.accounts.delete_key  # back to the classes' methods

    outcome = world.provision(service_account={"email": EMAIL})

    assert outcome.status is Status.OK, outcome.reason
    assert outcome.details["steps"]["key"] == "created (deleted 1 key(s) an interrupted attempt made)"
    assert theirs in world.accounts.keys and orphan[0] not in world.accounts.keys
    assert len(world.accounts.keys) == 2


def test_a_key_that_cannot_be_stored_is_deleted_at_once(world: World) -> None:
    world.secrets.add_version = _failing(world.secrets.add_version)  # type: ignore[method-assign]

    with pytest.raises(ServiceUnavailable):
        world.provision()

    assert world.accounts.created == 1 and world.accounts.keys == {}


def test_a_stored_but_unaliased_key_is_reused_only_while_it_still_exists(world: World) -> None:
    world.accounts.ensure_account(
        PROJECT, "dlgar-team-a", account_display_name("team-a"), account_description("team-a")
    )
    world.secrets.update_secret = _failing(world.secrets.update_secret, when="version_aliases")  # type: ignore[method-assign]
    with pytest.raises(ServiceUnavailable):
        world.provision()
    del world.secrets.update_secret
    stored = next(iter(world.accounts.keys))
    world.accounts.delete_key(EMAIL, stored)  # someone deleted it in the meantime

    outcome = world.provision()

    assert outcome.status is Status.OK
    assert outcome.details["steps"]["key"] == "created" and world.secret().aliases == {"current": 2}


def test_a_current_key_deleted_behind_our_back_is_reported_with_the_fix(world: World) -> None:
    assert world.provision().status is Status.OK
    world.accounts.keys.clear()

    outcome = world.provision()

    assert outcome.status is Status.FAILED and outcome.code == "current-key-missing"
    assert '"action": "rotate", "name": "team-a", "force": true' in outcome.reason


def test_when_a_concurrent_delivery_stores_its_key_first_ours_is_discarded(world: World) -> None:
    real_update = world.secrets.update_secret

    def racing(secret_id: str, **fields: Any) -> SecretRecord:
        if fields.get("version_aliases") is not None and not world.secret().aliases:
            theirs = world.accounts.add(EMAIL, at=NOW)  # the other delivery's key, stored and aliased first
            number = world.secrets.add_version(secret_id, theirs.json_text.encode())
            world.secret().aliases = {"current": number}
            world.secret().etag += 1
        return real_update(secret_id, **fields)

    world.secrets.update_secret = racing  # type: ignore[method-assign]

    outcome = world.provision()

    assert outcome.status is Status.OK and outcome.details["steps"]["key"] == "kept (set concurrently)"
    assert world.secret().aliases == {"current": 2}
    assert world.secrets.list_versions(SECRET_ID) == {1: "DISABLED", 2: "ENABLED"}
    assert list(world.accounts.keys) == ["key-2"]


def test_a_new_account_is_waited_for_briefly_before_the_request_is_redelivered(world: World) -> None:
    refusals = [2]
    real_grant = world.repositories.grant_reader

    def not_visible_yet(path: str, member: str) -> bool:
        if refusals[0]:
            refusals[0] -= 1
            raise TransientError("Service account does not exist.", code="member-not-visible")
        return real_grant(path, member)

    world.repositories.grant_reader = not_visible_yet  # type: ignore[method-assign]
    assert world.provision().status is Status.OK
    assert world.sleeps == [1.0, 2.0]

    refusals[0] = 10
    with pytest.raises(TransientError):
        world.provision(repositories=["images", "models"], request_id="again")
    assert world.sleeps == [1.0, 2.0, 1.0, 2.0, 4.0]


def test_deprovision_deletes_keys_a_rotation_retired_as_well(world: World) -> None:
    assert world.provision().status is Status.OK
    retired = world.accounts.add(EMAIL, at=NOW)  # a rotation's previous key, its version disabled
    world.secret().versions[2] = Version(retired.json_text.encode(), "DISABLED")
    world.secret().annotations["retired-keys"] = json.dumps(
        {"2": {"key_id": retired.key_id, "retired_at": timestamp(NOW)}}
    )

    outcome = world.deprovision()

    assert outcome.details["steps"]["keys"] == {"key-1": "deleted", retired.key_id: "deleted"}
    assert not world.accounts.keys and SECRET_ID not in world.secrets.secrets


def _failing(method: Any, when: str | None = None) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        if when is None or kwargs.get(when) is not None:
            raise ServiceUnavailable("injected")
        return method(*args, **kwargs)

    return call


def test_org_policy_refusal_is_a_failed_reply_naming_the_step(world: World) -> None:
    world.accounts.creation_disabled = True

    outcome = world.provision()

    assert outcome.status is Status.FAILED and outcome.code == "key-creation-disabled"
    assert outcome.details["failed_step"] == "key" and not world.dataloop.stored


def test_deprovision_twice_and_with_keep_secret(world: World) -> None:
    assert world.provision(test_image=IMAGE).status is Status.FAILED  # the registry knows no key: see below
    world.registry.valid_keys.add("key-1")
    assert world.provision(test_image=IMAGE).status is Status.OK

    kept = world.deprovision(keep_secret=True)
    again = world.deprovision(keep_secret=True)

    assert kept.status is Status.OK and again.status is Status.OK
    assert set(world.secrets.list_versions(SECRET_ID).values()) == {"DESTROYED"}
    assert world.secret().aliases == {} and MANAGED_LABEL[0] not in world.secret().labels
    assert not world.accounts.accounts and not world.accounts.keys and not world.dataloop.stored
    assert again.details["steps"]["keys"] == {} and again.details["steps"]["service_account"] == "already gone"

    revived = world.provision()  # the retired record is provisioned afresh, without its old history
    assert revived.status is Status.OK and revived.details["steps"]["key"] == "created"
    assert Annotation.LAST_TEST not in world.secret().annotations
    assert world.secret().aliases == {"current": 2} and world.secret().labels[MANAGED_LABEL[0]] == MANAGED_LABEL[1]


# -- the new key's test: proven patiently, then judged ------------------------------------------------


def test_a_key_refused_until_the_deadline_fails_the_provision_after_growing_waits(world: World) -> None:
    world.patience = 20.0

    outcome = world.provision(test_image=IMAGE)  # the registry never accepts key-1

    assert outcome.status is Status.FAILED and outcome.code == "credentials-refused", outcome.reason
    assert world.sleeps[-3:] == [2.0, 4.0, 8.0]  # the next wait (16 s) would pass the deadline
    assert outcome.details["steps"]["test"]["attempts"] == 5  # four tries to prove it, then the verdict


def test_a_key_that_propagates_is_proven_twice_in_a_row_then_judged_on_the_image(world: World) -> None:
    original = world.registry.resolve

    def propagating(image: RegistryImage, credential: RegistryCredential) -> ManifestRef:
        if len(world.registry.resolved) >= 2:  # refused twice, as IAM propagates the new key
            world.registry.valid_keys.add("key-1")
        return original(image, credential)

    world.registry.resolve = propagating  # type: ignore[method-assign]
    outcome = world.provision(test_image=IMAGE)

    assert outcome.status is Status.OK, outcome.reason
    test = outcome.details["steps"]["test"]
    assert test["passed"] and test["digest"] == DIGEST and test["attempts"] == 5  # 2 refused, 2 passes, the verdict
    assert world.sleeps[-3:] == [2.0, 4.0, 2.0]  # two backoffs, then the confirmation interval


def test_a_missing_image_proves_the_key_and_is_reported_without_waiting_for_it(world: World) -> None:
    world.registry.valid_keys.add("key-1")

    outcome = world.provision(test_image=f"{HOST}/{PROJECT}/images/gone:v1")

    assert outcome.status is Status.FAILED and outcome.code == "image-missing", outcome.reason
    assert outcome.details["steps"]["test"]["attempts"] == 3  # two passes (the token was accepted), the verdict
    assert world.sleeps[-1:] == [2.0]  # only the confirmation interval


def test_a_test_request_is_not_patient_it_reports_what_is_true_now(world: World) -> None:
    world.registry.valid_keys.add("key-1")
    assert world.provision().status is Status.OK
    world.registry.valid_keys.clear()  # the key stops working (deleted by hand, say)
    before = len(world.sleeps)

    tested = handler(world).handle(message({"version": 1, "action": "test", "image": IMAGE, "name": "team-a"}))

    assert tested.status is Status.FAILED and tested.code == "credentials-refused", tested.reason
    assert len(world.sleeps) == before and tested.details["integrations"]["team-a"]["attempts"] == 1


# -- the dispatcher ---------------------------------------------------------------------------------------


@dataclass
class FakeRotation:
    outcome: Outcome
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def rotate(self, secret_id: str, **options: Any) -> Outcome:
        self.calls.append((secret_id, options))
        return self.outcome


def handler(world: World, rotation: Any = None) -> RequestHandler:
    def unused() -> Any:
        raise AssertionError("not this workflow")

    return RequestHandler(
        provisioner=world.provisioner,
        deprovisioner=unused,
        rotation=lambda: rotation,
        image_check=lambda: ImageCheck(world.secrets, ReferenceTest(world.registry)),
        status=lambda: StatusReport(world.secrets, default_rotation_period_days=30, clock=lambda: NOW),
        policy=AllowEverything(),
    )


def message(body: Any) -> PubSubMessage:
    return PubSubMessage(data=json.dumps(body).encode() if not isinstance(body, bytes) else body)


@pytest.mark.parametrize(
    ("rotation_status", "reply_status"),
    [(Status.OK, Status.OK), (Status.SKIPPED, Status.OK), (Status.FAILED, Status.FAILED)],
)
def test_rotate_is_handed_to_the_rotation_workflow(world: World, rotation_status: Status, reply_status: Status) -> None:
    rotation = FakeRotation(
        Outcome("rotation", rotation_status, "not due", code="x", details={"a": 1}, durations_ms={"create": 5.0})
    )

    reply = handler(world, rotation).handle(
        message({"version": 1, "action": "rotate", "name": "team-a", "force": True, "request_id": "r-1"})
    )

    assert rotation.calls == [(SECRET_ID, {"force": True, "dry_run": False, "request_id": "r-1"})]
    assert (reply.kind, reply.status, reply.request_id) == ("request", reply_status, "r-1")
    assert reply.subject == {"action": "rotate", "name": "team-a"}
    assert reply.details["rotation"] == {
        "status": rotation_status.value,
        "reason": "not due",
        "code": "x",
        "details": {"a": 1},
    }
    assert reply.durations_ms == {"create": 5.0}


def test_a_rejection_keeps_the_request_id_and_lists_the_errors(world: World) -> None:
    reply = handler(world).handle(message({"version": 1, "action": "rotate", "request_id": "r-2"}))
    garbage = handler(world).handle(message(b"\x00not json"))

    assert (reply.status, reply.request_id, reply.subject) == (Status.REJECTED, "r-2", {"action": "rotate"})
    assert reply.details == {"errors": ["/name: required"]}
    assert garbage.status is Status.REJECTED and garbage.request_id is None and garbage.subject == {}


def test_a_permanent_error_from_a_workflow_is_a_failed_reply_and_a_transient_one_is_raised(world: World) -> None:
    class Broken:
        def rotate(self, secret_id: str, **_: Any) -> Outcome:
            raise PermanentError("no such integration", code="not-found")

    class Down:
        def rotate(self, secret_id: str, **_: Any) -> Outcome:
            raise ServiceUnavailable("Secret Manager down")

    body = {"version": 1, "action": "rotate", "name": "team-a", "request_id": "r-3"}
    failed = handler(world, Broken()).handle(message(body))
    with pytest.raises(TransientError):
        handler(world, Down()).handle(message(body))

    assert (failed.status, failed.code, failed.request_id) == (Status.FAILED, "not-found", "r-3")
    assert failed.subject == {"action": "rotate", "name": "team-a"}


def test_test_and_status_through_the_dispatcher(world: World) -> None:
    world.registry.valid_keys.add("key-1")
    assert world.provision().status is Status.OK
    world.secret().annotations[Annotation.ROTATED_AT] = timestamp(NOW - timedelta(days=31))

    tested = handler(world).handle(message({"version": 1, "action": "test", "image": IMAGE}))
    status = handler(world).handle(message({"version": 1, "action": "status", "name": "team-a"}))

    assert tested.status is Status.OK and tested.details["integrations"]["team-a"]["digest"] == DIGEST
    report = status.details["integrations"][0]
    assert report["key_age_days"] == 31.0 and report["rotation_overdue"] is True
    assert report["next_rotation"] == timestamp(NOW - timedelta(days=1))
    assert report["last_test"]["passed"] is True and report["dataloop_integration_id"] == "dl-1"
    assert "(rotation overdue)" in status.reason and "last test passed" in status.reason


# -- the CLI -------------------------------------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_builds_each_action_and_prints_it_without_sending() -> None:
    code, out, _ = run_cli(
        "provision", "--name", "team-a", "--org", "org-1", "--project", PROJECT, "--location", "us-central1",
        "--repository", "images", "--repository", "models", "--create-sa", "dlgar-team-a",
        "--test-image", IMAGE, "--rotation-period-days", "7", "--request-id", "op-1",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out) == {
        "version": 1,
        "action": "provision",
        "request_id": "op-1",
        "name": "team-a",
        "org_id": "org-1",
        "project": PROJECT,
        "location": "us-central1",
        "repositories": ["images", "models"],
        "service_account": {"create": "dlgar-team-a"},
        "rotation_period_days": 7.0,
        "test_image": IMAGE,
    }
    cases: list[tuple[list[str], dict[str, object]]] = [
        (["deprovision", "--name", "team-a", "--keep-secret"], {"name": "team-a", "keep_secret": True}),
        (["rotate", "--name", "team-a", "--force"], {"name": "team-a", "force": True, "dry_run": False}),
        (["test", "--image", IMAGE], {"image": IMAGE}),
        (["status", "--request-only"], {"compliance": True}),
        (["status", "--request-only", "--no-compliance", "--name", "team-a"], {"name": "team-a"}),
    ]
    for argv, expected in cases:
        code, out, _ = run_cli(*argv)
        body = json.loads(out)
        assert code == 0 and body.pop("request_id").startswith("cli-")
        assert body == {"version": 1, "action": argv[0], **expected}


def test_cli_refuses_an_invalid_request_with_every_reason_and_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "google.cloud.pubsub_v1", raising=False)

    code, out, err = run_cli(
        "provision", "--name", "Team A", "--org", "org-1", "--project", PROJECT, "--location", "us-central1",
        "--repository", "Images", "--create-sa", "sa", "--wait", "--pubsub-project", "p",
    )  # fmt: skip

    assert code == 2 and out == ""
    assert err.splitlines() == [
        "the request is invalid; nothing was sent:",
        "  /name: must be 3-40 characters of a-z, 0-9 and '-', starting and ending with a letter or digit",
        "  /repositories/0: must be a repository id: a-z, 0-9 and '-', starting with a letter, at most 63 characters",
        "  /service_account/create: must be a service account id: 6-30 characters of a-z, 0-9 and '-', starting with a letter",
    ]
    assert "google.cloud.pubsub_v1" not in sys.modules


def test_cli_sends_a_hand_written_request_after_validating_it(tmp_path: Any) -> None:
    path = tmp_path / "request.json"
    path.write_text(json.dumps({"version": 1, "action": "status", "colour": "red"}))
    code, _, err = run_cli("send", str(path))
    assert code == 2 and "/colour: unknown field" in err

    path.write_text(json.dumps({"version": 1, "action": "status", "name": "team-a"}))
    code, out, _ = run_cli("send", str(path), "--request-id", "mine")
    assert code == 0 and json.loads(out) == {"version": 1, "action": "status", "name": "team-a", "request_id": "mine"}


def test_a_reply_decides_the_exit_status() -> None:
    assert [cli._exit_for({"status": s}) for s in ("ok", "failed", "rejected")] == [0, 1, 2]


def test_rotate_request_names_the_secret() -> None:
    assert RotateRequest("team-a").secret_id == SECRET_ID


def test_a_passing_test_records_the_registry_challenge_for_cold_instances(world: World) -> None:
    world.registry.valid_keys.add("key-1")
    assert world.provision(test_image=IMAGE).status is Status.OK
    assert world.secret().annotations[Annotation.REGISTRY_CHALLENGE] == challenge_of(HOST)


def test_a_failing_test_records_no_challenge(world: World) -> None:
    assert world.provision(test_image=IMAGE).status is Status.FAILED  # the registry knows no key
    assert Annotation.REGISTRY_CHALLENGE not in world.secret().annotations


def test_a_changed_rotation_period_moves_secret_managers_own_schedule(world: World) -> None:
    assert world.provision(rotation_period_days=30).status is Status.OK
    assert world.secret().period == 30 * 86400

    again = world.provision(rotation_period_days=90)

    assert again.status is Status.OK
    secret = world.secret()
    assert secret.period == 90 * 86400 and secret.annotations[Annotation.ROTATION_PERIOD] == str(90 * 86400)
    # SECRET_ROTATE is next due when the current key reaches the new period, not the old one.
    rotated = parse_timestamp(secret.annotations[Annotation.ROTATED_AT])
    assert rotated is not None and secret.next_rotation == rotated + timedelta(days=90)
    writes = len(world.secrets.writes)
    assert world.provision(rotation_period_days=90).status is Status.OK
    assert len(world.secrets.writes) == writes  # unchanged: nothing written


def test_a_shortened_period_on_an_old_key_is_due_soon_not_in_the_past(world: World) -> None:
    assert world.provision(rotation_period_days=90).status is Status.OK
    world.secret().annotations[Annotation.ROTATED_AT] = timestamp(NOW - timedelta(days=60))

    assert world.provision(rotation_period_days=30).status is Status.OK

    assert world.secret().next_rotation == NOW + timedelta(minutes=10)


# -- deprovision touches only what this integration alone made ------------------------------------------

ROTATE_FUNCTION = f"dataloop-gar-rotate@{PROJECT}.iam.gserviceaccount.com"


def deprovision_with_policy(world: World, name: str = "team-a") -> Outcome:
    from shared.model.policy import AccessPolicy

    policy = AccessPolicy(org_ids=frozenset(["org-1"]), deployment_accounts=frozenset([ROTATE_FUNCTION]))
    request = parse_request({"version": 1, "action": "deprovision", "name": name})
    deprovisioner = Deprovisioner(
        world.secrets, world.accounts, world.repositories, lambda: world.dataloop, clock=lambda: NOW, policy=policy
    )
    return deprovisioner.deprovision(request)  # type: ignore[arg-type]


def readers(world: World, repository: str) -> set[str]:
    return world.repositories.readers[f"projects/{PROJECT}/locations/us-central1/repositories/{repository}"]


def test_deprovision_keeps_the_account_and_grants_another_integration_still_uses(world: World) -> None:
    assert world.provision().status is Status.OK  # team-a: creates the account, images + models
    team_b = world.provision(name="team-b", repositories=["images"], service_account={"email": EMAIL})
    assert team_b.status is Status.OK, team_b.reason

    outcome = deprovision_with_policy(world)

    assert outcome.status is Status.OK, outcome.reason
    steps = outcome.details["steps"]
    assert steps["service_account"] == (
        "kept (used by integration dataloop-gar-team-b; dataloop-gar-team-b deletes it when it is deprovisioned last)"
    )
    assert steps["grants"][f"{PROJECT}/images"] == "kept (used by dataloop-gar-team-b)"
    assert steps["grants"][f"{PROJECT}/models"] == "revoked"
    assert EMAIL in world.accounts.accounts
    assert f"serviceAccount:{EMAIL}" in readers(world, "images")
    assert f"serviceAccount:{EMAIL}" not in readers(world, "models")


def test_the_last_integration_of_an_account_deletes_it(world: World) -> None:
    world.provision()
    world.provision(name="team-b", repositories=["images"], service_account={"email": EMAIL})
    deprovision_with_policy(world, "team-a")

    last = deprovision_with_policy(world, "team-b")

    assert last.details["steps"]["service_account"] == "deleted"
    assert EMAIL not in world.accounts.accounts and not readers(world, "images")


@pytest.mark.parametrize(
    "email, kept",
    [
        (ROTATE_FUNCTION, "deployment's own"),
        (f"team-a-sa@{PROJECT}.iam.gserviceaccount.com", "lacks the created-account prefix"),
    ],
)
def test_a_record_edited_to_claim_an_account_never_deletes_it(world: World, email: str, kept: str) -> None:
    world.provision()
    world.accounts.accounts[email] = {"email": email, "display_name": "dataloop-gar team-a", "disabled": False}
    world.secret().annotations[Annotation.SERVICE_ACCOUNT] = email  # edited by hand; created-service-account=true

    outcome = deprovision_with_policy(world)

    assert outcome.status is Status.OK, outcome.reason
    assert kept in outcome.details["steps"]["service_account"]
    assert email in world.accounts.accounts


def test_an_account_named_like_ours_is_not_ours_without_the_description(world: World) -> None:
    # The deployment calls its own accounts "dataloop-gar KEY": a display name proves nothing.
    world.accounts.ensure_account(PROJECT, "dlgar-team-a", account_display_name("team-a"))

    outcome = world.provision()

    assert outcome.status is Status.FAILED and outcome.code == "service-account-exists", outcome.reason
    assert not world.accounts.keys


def test_an_account_created_for_another_integration_is_not_taken_by_create(world: World) -> None:
    world.accounts.ensure_account(PROJECT, "dlgar-team-a", "x", account_description("team-b"))

    outcome = world.provision()

    assert outcome.status is Status.FAILED and outcome.code == "service-account-exists", outcome.reason


def test_a_created_account_is_marked_with_its_integration_in_the_description(world: World) -> None:
    assert world.provision().status is Status.OK

    assert world.accounts.accounts[EMAIL]["description"] == account_description("team-a")
    again = world.provision()  # a re-sent request recognises the account it made
    assert again.status is Status.OK, again.reason


def test_deprovision_keeps_a_prefixed_account_whose_description_is_not_ours(world: World) -> None:
    assert world.provision().status is Status.OK
    world.accounts.accounts[EMAIL]["description"] = "the platform team's build account"

    outcome = deprovision_with_policy(world)

    assert outcome.status is Status.OK, outcome.reason
    assert "description does not say dataloop-gar created it" in outcome.details["steps"]["service_account"]
    assert EMAIL in world.accounts.accounts


# -- Dataloop: only the recorded integration is ours ------------------------------------------------------


def test_a_hand_made_integration_of_the_same_name_is_not_overwritten(world: World) -> None:
    world.dataloop.stored["theirs"] = {"org": "org-1", "name": "team-a", "options": {"hand": "made"}}

    outcome = world.provision()

    assert (outcome.status, outcome.code) == (Status.FAILED, "integration-name-taken"), outcome.reason
    assert outcome.details["failed_step"] == "dataloop"
    assert world.dataloop.stored["theirs"]["options"] == {"hand": "made"}
    assert Annotation.INTEGRATION_ID not in world.secret().annotations


def test_a_hand_made_integration_is_adopted_only_when_asked(world: World) -> None:
    world.dataloop.stored["theirs"] = {"org": "org-1", "name": "team-a", "options": {"hand": "made"}}

    outcome = world.provision(adopt_integration=True)

    assert outcome.status is Status.OK, outcome.reason
    assert world.secret().annotations[Annotation.INTEGRATION_ID] == "theirs"
    assert world.dataloop.stored["theirs"]["options"] != {"hand": "made"}
    assert world.provision().status is Status.OK  # recorded now: a re-sent request needs no flag


def test_the_integration_id_is_recorded_before_activation(world: World) -> None:
    world.secrets.update_secret = _failing(world.secrets.update_secret, when="labels")  # type: ignore[method-assign]
    with pytest.raises(ServiceUnavailable):
        world.provision()  # crashed at activation, after Dataloop created the integration
    del world.secrets.update_secret
    (created,) = world.dataloop.stored

    outcome = world.provision()

    assert outcome.status is Status.OK, outcome.reason
    assert list(world.dataloop.stored) == [created]
    assert world.secret().annotations[Annotation.INTEGRATION_ID] == created


def test_deprovision_without_a_recorded_id_leaves_an_integration_of_that_name_alone(world: World) -> None:
    world.dataloop.stored["theirs"] = {"org": "org-1", "name": "team-a", "options": {}}
    assert world.provision().code == "integration-name-taken"

    outcome = world.deprovision()

    assert outcome.status is Status.OK, outcome.reason
    assert outcome.details["steps"]["dataloop"].startswith("none recorded")
    assert "theirs" in world.dataloop.stored


def test_an_integration_a_concurrent_delivery_just_created_and_recorded_is_ours(world: World) -> None:
    ensure = world.dataloop.ensure

    def concurrent(name: str, options: Mapping[str, Any], **kwargs: Any) -> Integration:
        if not world.dataloop.stored:  # the other delivery gets there first and records its id
            world.dataloop.stored["dl-7"] = {"org": "org-1", "name": name, "options": {}}
            world.secret().annotations[Annotation.INTEGRATION_ID] = "dl-7"
            world.secret().etag += 1
        return ensure(name, options, **kwargs)

    world.dataloop.ensure = concurrent  # type: ignore[method-assign]

    outcome = world.provision()

    assert outcome.status is Status.OK, outcome.reason
    assert list(world.dataloop.stored) == ["dl-7"] and world.dataloop.stored["dl-7"]["options"]


def test_a_named_canary_service_gets_its_lock_secret_before_activation_and_keeps_it(world: World) -> None:
    canary = {"image": f"{HOST}/{PROJECT}/images/app:v1", "service_id": "6543abcd"}
    lock = "dataloop-gar_canary-6543abcd"

    # (The canary image is pull-tested last, and this fake registry refuses the new key: not the point here.)
    first = world.provision(canary=canary)
    assert first.details["steps"]["activate"] == "activated", first.reason
    assert first.details["steps"]["canary_lock"] == "created"
    written = [secret_id for secret_id, _ in world.secrets.writes]
    assert written.index(lock) < len(written) - 1 and written[-1] == SECRET_ID, "the lock exists before activation"
    assert MANAGED_LABEL[0] not in world.secrets.secrets[lock].labels, "the lock is no managed integration"

    world.secrets.secrets[lock].annotations["canary-lease"] = '{"holder":"canary-run","expires":"2099-01-01T00:00:00Z"}'
    again = world.provision(canary=canary)
    assert again.details["steps"]["canary_lock"] == "exists", again.reason
    assert "canary-lease" in world.secrets.secrets[lock].annotations, "a lock in use is left alone"
    plain = world.provision()
    assert plain.status is Status.OK and "canary_lock" not in plain.details["steps"], "no canary service, no lock"


# -- deprovision holds the rotation lease -------------------------------------------------------------------


def test_deprovision_holds_the_rotation_lease_while_it_removes_keys(world: World) -> None:
    from shared.model.lease import Lease

    assert world.provision().status is Status.OK
    seen: list[str | None] = []
    delete_key = world.accounts.delete_key

    def watching(email: str, key_id: str) -> bool:
        held = Lease.from_annotations(world.secret().annotations)
        seen.append(held.holder if held is not None and held.live(NOW) else None)
        return delete_key(email, key_id)

    world.accounts.delete_key = watching  # type: ignore[method-assign]

    outcome = world.deprovision(keep_secret=True)

    assert outcome.status is Status.OK, outcome.reason
    assert seen and all(h is not None and h.startswith("deprovision:") for h in seen), seen
    assert Annotation.ROTATION_LEASE not in world.secret().annotations  # the retired record is free again


def test_a_redelivered_deprovision_takes_over_its_own_lease(world: World) -> None:
    assert world.provision().status is Status.OK
    world.dataloop.delete = _failing(world.dataloop.delete)  # type: ignore[method-assign]
    with pytest.raises(ServiceUnavailable):
        world.deprovision()
    assert json.loads(world.secret().annotations[Annotation.ROTATION_LEASE])["holder"].startswith("deprovision:")
    del world.dataloop.delete

    outcome = world.deprovision()

    assert outcome.status is Status.OK, outcome.reason
    assert SECRET_ID not in world.secrets.secrets


def test_a_deprovision_that_fails_for_good_gives_the_lease_back(world: World) -> None:
    assert world.provision().status is Status.OK

    def refuse(integration_id: str) -> bool:
        raise PermanentError("Dataloop refused", code="dataloop-forbidden")

    world.dataloop.delete = refuse  # type: ignore[method-assign]

    outcome = world.deprovision()

    assert (outcome.status, outcome.code) == (Status.FAILED, "dataloop-forbidden")
    assert Annotation.ROTATION_LEASE not in world.secret().annotations


# -- a provision that fails for good takes its grants back ---------------------------------------------------


def test_a_provision_failing_for_good_revokes_the_grants_it_made(world: World) -> None:
    world.accounts.creation_disabled = True

    outcome = world.provision()

    assert (outcome.status, outcome.code) == (Status.FAILED, "key-creation-disabled")
    assert outcome.details["grants_taken_back"] == {f"{PROJECT}/images": "revoked", f"{PROJECT}/models": "revoked"}
    assert not readers(world, "images") and not readers(world, "models")
    assert GRANTS_MADE not in world.secret().annotations


def test_grants_made_by_an_earlier_delivery_are_taken_back_too(world: World) -> None:
    world.accounts.create_key = _failing(world.accounts.create_key)  # type: ignore[method-assign]
    with pytest.raises(ServiceUnavailable):
        world.provision()  # granted, then redelivered
    del world.accounts.create_key
    world.accounts.creation_disabled = True

    outcome = world.provision()  # grants "unchanged" now, then a failure for good

    assert outcome.status is Status.FAILED
    assert not readers(world, "images") and not readers(world, "models")


def test_grants_that_existed_or_another_integration_came_to_rely_on_are_not_taken_back(world: World) -> None:
    world.accounts.ensure_account(PROJECT, "dlgar-shared", "x", account_description("team-c"))
    shared = f"dlgar-shared@{PROJECT}.iam.gserviceaccount.com"
    readers(world, "models").add(f"serviceAccount:{shared}")  # granted by hand before
    world.accounts.create_key = _failing(world.accounts.create_key)  # type: ignore[method-assign]
    with pytest.raises(ServiceUnavailable):  # team-d grants images, then is redelivered
        world.provision(name="team-d", repositories=["images", "models"], service_account={"email": shared})
    del world.accounts.create_key
    # Meanwhile team-c, on the same account, is provisioned and relies on that grant.
    assert (
        world.provision(name="team-c", repositories=["images"], service_account={"email": shared}).status is Status.OK
    )
    world.accounts.creation_disabled = True

    outcome = world.provision(name="team-d", repositories=["images", "models"], service_account={"email": shared})

    assert outcome.status is Status.FAILED
    assert outcome.details["grants_taken_back"] == {f"{PROJECT}/images": "kept (used by dataloop-gar-team-c)"}
    assert f"serviceAccount:{shared}" in readers(world, "images")
    assert f"serviceAccount:{shared}" in readers(world, "models")


def test_an_active_integration_keeps_its_grants_when_a_later_request_fails(world: World) -> None:
    assert world.provision().status is Status.OK

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermanentError("Dataloop refused", code="dataloop-forbidden")

    world.dataloop.ensure = refuse  # type: ignore[method-assign]

    outcome = world.provision()

    assert outcome.status is Status.FAILED
    assert f"serviceAccount:{EMAIL}" in readers(world, "images")
