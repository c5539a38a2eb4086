"""Provisioning requests at the wire: every action against the local cloud's stand-ins.

The workflows drive the real adapters (Secret Manager REST, IAM gRPC, Artifact Registry
REST, the Dataloop client, the registry client) against the local servers. The registry's
token endpoint asks the IAM and Artifact Registry stand-ins who may pull
(``gcp_authority``), so a key provisioning creates really pulls the test image, and one it
did not grant would not. What is asserted is the state left in every service: one of
everything after any number of identical requests, and after a failure at any step
followed by the same request again.

The ``cloud`` fixture, ``Cloud`` and the names it provisions live in ``tests/fixtures/provisioning.py``.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from localcloud.wsgi import Fault
from shared.adapters.artifact_registry import READER_ROLE
from shared.app import runtime
from shared.core.config import reset_settings
from shared.core.errors import ServiceUnavailable, TransientError
from shared.model.integrations import MANAGED_LABEL, Annotation
from shared.model.policy import account_description
from shared.model.results import Status
from shared.workflows.provisioning.provision import account_display_name
from tests.fixtures.provisioning import (
    ACCOUNT_ID,
    EMAIL,
    LOCATION,
    NAME,
    OTHER_REPOSITORY,
    PROJECT,
    ROTATION_TOPIC,
    SECRET_ID,
    Cloud,
    repository_path,
)
from tests.fixtures.registry import REGISTRY_SERVICE, TEST_REPOSITORY

pytestmark = pytest.mark.wire

REPO_ROOT = Path(__file__).resolve().parents[2]


class FailOnce:
    """An adapter whose ``method`` raises ``error`` the first time ``when(*args, **kwargs)`` holds.

    For faults the stand-ins cannot aim precisely (e.g. "the update that sets the alias",
    when every update of a secret is the same PATCH on the wire).
    """

    def __init__(self, target: Any, method: str, when: Callable[..., bool], error: Exception) -> None:
        self._target, self._method, self._when, self._error = target, method, when, error
        self.fired = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if name != self._method:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if not self.fired and self._when(*args, **kwargs):
                self.fired = True
                raise self._error
            return attribute(*args, **kwargs)

        return call


def assert_one_of_everything(
    cloud: Cloud, *, repositories: tuple[str, ...] = (TEST_REPOSITORY, OTHER_REPOSITORY)
) -> None:
    """One account, one live key (the one stored as ``current``), one grant per repository,
    one readable version, one Dataloop integration holding that key, the secret active."""
    assert [a.email for a in cloud.iam.state.list_service_accounts(PROJECT) if a.email == EMAIL] == [EMAIL]
    record = cloud.secrets.get_secret(SECRET_ID)
    stored = cloud.stored_keys()
    assert list(stored) == [record.version_aliases["current"]]
    current = stored[record.version_aliases["current"]]
    assert cloud.user_keys() == [current["private_key_id"]]
    for repository in repositories:
        assert cloud.readers(repository) == {f"serviceAccount:{EMAIL}"}
    integrations = cloud.integrations()
    assert [i["public"]["name"] for i in integrations] == [NAME]
    assert record.annotations[Annotation.INTEGRATION_ID] == integrations[0]["public"]["id"]
    docker = json.loads(base64.b64decode(integrations[0]["options"]["spec"]["password"]))
    assert json.loads(docker["auths"][cloud.registry.host]["password"]) == current
    assert record.labels[MANAGED_LABEL[0]] == MANAGED_LABEL[1]


# -- provision ---------------------------------------------------------------------------------------


def test_provision_sets_everything_up_and_the_new_key_really_pulls(cloud: Cloud) -> None:
    outcome = cloud.send(cloud.provision_request())

    assert outcome.status is Status.OK, outcome.reason
    assert (outcome.kind, outcome.request_id, outcome.subject) == (
        "request",
        "req-1",
        {"action": "provision", "name": NAME},
    )
    assert_one_of_everything(cloud)
    steps = outcome.details["steps"]
    assert steps["service_account"] == "created" and steps["record"] == "created" and steps["key"] == "created"
    assert steps["grants"] == {f"{PROJECT}/{TEST_REPOSITORY}": "granted", f"{PROJECT}/{OTHER_REPOSITORY}": "granted"}
    assert steps["test"]["passed"] is True and steps["test"]["digest"] == cloud.image.digest
    assert {"repositories", "service_account", "record", "grants", "key", "dataloop", "activate", "test"} <= set(
        outcome.durations_ms
    )
    account = cloud.iam.state.account(EMAIL)
    assert account is not None
    assert (account.display_name, account.description) == (account_display_name(NAME), account_description(NAME))

    record = cloud.secrets.get_secret(SECRET_ID)
    notes = record.annotations
    assert record.labels == {"managed-by": "dataloop-gar", "location": LOCATION}
    assert notes[Annotation.ORG] == cloud.dataloop.org_id
    assert notes[Annotation.INTEGRATION_NAME] == NAME
    assert notes[Annotation.SERVICE_ACCOUNT] == EMAIL
    assert notes[Annotation.REGISTRY_HOST] == cloud.registry.host
    assert notes[Annotation.REPOSITORIES] == f"{PROJECT}/{TEST_REPOSITORY},{PROJECT}/{OTHER_REPOSITORY}"
    assert notes[Annotation.LOCATION] == LOCATION
    assert notes[Annotation.CREATED_SERVICE_ACCOUNT] == "true"
    assert notes[Annotation.ROTATION_PERIOD] == str(30 * 86400)
    assert Annotation.ROTATED_AT in notes and notes[Annotation.CREATED_KEYS] == outcome.details["key_id"]
    assert json.loads(notes[Annotation.LAST_TEST])["passed"] is True
    # What the registry asked for during the test, so a cold on_push can skip asking.
    assert notes[Annotation.REGISTRY_CHALLENGE] == f'Bearer realm="{cloud.registry.realm}",service="{REGISTRY_SERVICE}"'
    # Secret Manager will send SECRET_ROTATE to the rotation topic on schedule.
    assert record.topics == (ROTATION_TOPIC,)
    assert record.rotation_period_seconds == 30 * 86400 and record.next_rotation_time
    # And the key really is what the registry accepts: the token endpoint asked the local IAM.
    assert cloud.registry.token_calls(), "the reference test must have reached the token endpoint"


def test_the_same_provision_twice_changes_nothing_and_duplicates_nothing(cloud: Cloud) -> None:
    first = cloud.send(cloud.provision_request())
    assert first.status is Status.OK, first.reason
    record = cloud.secrets.get_secret(SECRET_ID)
    creates_before = cloud.iam.calls().count("CreateServiceAccountKey")
    dataloop_id = cloud.integrations()[0]["public"]["id"]

    second = cloud.send(cloud.provision_request(request_id="req-2"))

    assert second.status is Status.OK, second.reason
    assert second.request_id == "req-2"
    steps = second.details["steps"]
    assert steps["service_account"] == "exists (created by dataloop-gar)"
    assert steps["record"] == "unchanged" and steps["key"] == "kept" and steps["activate"] == "unchanged"
    assert set(steps["grants"].values()) == {"unchanged"}
    assert_one_of_everything(cloud)
    assert cloud.iam.calls().count("CreateServiceAccountKey") == creates_before
    assert cloud.integrations()[0]["public"]["id"] == dataloop_id
    assert cloud.secrets.get_secret(SECRET_ID).version_aliases == record.version_aliases


def test_a_changed_rotation_period_moves_secret_managers_own_schedule(cloud: Cloud) -> None:
    assert cloud.send(cloud.provision_request()).status is Status.OK
    before = cloud.secrets.get_secret(SECRET_ID)
    assert before.rotation_period_seconds == 30 * 86400

    outcome = cloud.send(cloud.provision_request(request_id="req-2", rotation_period_days=90))

    assert outcome.status is Status.OK, outcome.reason
    assert outcome.details["steps"]["record"] == "updated"
    after = cloud.secrets.get_secret(SECRET_ID)
    assert after.rotation_period_seconds == 90 * 86400
    assert after.annotations[Annotation.ROTATION_PERIOD] == str(90 * 86400)
    rotated = datetime.fromisoformat(after.annotations[Annotation.ROTATED_AT].replace("Z", "+00:00"))
    assert after.next_rotation_time is not None
    due = datetime.fromisoformat(after.next_rotation_time.replace("Z", "+00:00"))
    assert abs((due - rotated) - timedelta(days=90)) < timedelta(seconds=1)
    assert after.topics == before.topics  # still notifying the rotation topic


def test_a_later_request_without_a_repository_takes_that_grant_back(cloud: Cloud) -> None:
    assert cloud.send(cloud.provision_request()).status is Status.OK

    outcome = cloud.send(cloud.provision_request(repositories=[TEST_REPOSITORY]))

    assert outcome.status is Status.OK, outcome.reason
    assert outcome.details["steps"]["grants"][f"{PROJECT}/{OTHER_REPOSITORY}"] == "revoked"
    assert cloud.readers(OTHER_REPOSITORY) == set()
    assert_one_of_everything(cloud, repositories=(TEST_REPOSITORY,))
    assert "previous-repositories" not in cloud.secrets.get_secret(SECRET_ID).annotations


def test_a_new_key_is_tested_patiently_through_iam_propagation(cloud: Cloud) -> None:
    cloud.iam.state.set_propagation_delay(0.6)

    outcome = cloud.send(cloud.provision_request())

    assert outcome.status is Status.OK, outcome.reason
    assert outcome.details["steps"]["test"]["attempts"] > 1


def test_org_policy_refusal_fails_naming_the_constraint_and_resending_after_the_fix_completes(cloud: Cloud) -> None:
    cloud.iam.state.set_key_creation_disabled()

    outcome = cloud.send(cloud.provision_request())

    assert outcome.status is Status.FAILED
    assert outcome.code == "key-creation-disabled"
    assert "constraints/iam.disableServiceAccountKeyCreation" in outcome.reason
    assert outcome.details["failed_step"] == "key"
    assert cloud.integrations() == []
    assert MANAGED_LABEL[0] not in cloud.secrets.get_secret(SECRET_ID).labels  # not active until complete

    cloud.iam.state.set_key_creation_disabled(False)
    assert cloud.send(cloud.provision_request()).status is Status.OK
    assert_one_of_everything(cloud)


def test_creating_an_account_that_someone_else_owns_is_refused(cloud: Cloud) -> None:
    cloud.iam.state.create_service_account(PROJECT, ACCOUNT_ID, display_name="the data team's own account")

    outcome = cloud.send(cloud.provision_request())

    assert outcome.status is Status.FAILED and outcome.code == "service-account-exists"
    assert '"email"' in outcome.reason
    assert cloud.user_keys() == [] and cloud.integrations() == []
    assert cloud.readers(TEST_REPOSITORY) == set()


def _deny_repository_read(cloud: Cloud) -> None:
    cloud.artifact_registry.app.inject(
        Fault(path=f"/{repository_path(OTHER_REPOSITORY)}$", method="GET", status=403, body=_forbidden())
    )


def _deny_account_creation(cloud: Cloud) -> None:
    cloud.iam.inject(
        "CreateServiceAccount", grpc.StatusCode.PERMISSION_DENIED, "Permission iam.serviceAccounts.create denied"
    )


def _secret_manager_down_on_create(cloud: Cloud) -> None:
    cloud.secretmanager.wire.inject(Fault(path=r"/secrets$", method="POST", status=503, body=_unavailable()))


def _deny_grant(cloud: Cloud) -> None:
    cloud.artifact_registry.app.inject(
        Fault(path=f"/{repository_path(OTHER_REPOSITORY)}:setIamPolicy$", method="POST", status=403, body=_forbidden())
    )


def _deny_key_creation(cloud: Cloud) -> None:
    cloud.iam.inject("CreateServiceAccountKey", grpc.StatusCode.PERMISSION_DENIED, "Permission denied")


def _crash_before_storing_the_key(cloud: Cloud) -> None:
    """Storing fails, and so does deleting the new key at once: only the ledger remembers it."""
    cloud.secretmanager.wire.inject(Fault(path=r":addVersion$", method="POST", status=503, body=_unavailable()))
    cloud.iam.inject("DeleteServiceAccountKey", grpc.StatusCode.PERMISSION_DENIED, "Permission denied")


def _deny_dataloop(cloud: Cloud) -> None:
    cloud.dataloop.gateway.instrumented.inject(
        Fault(path=r"/integrations$", method="POST", status=403, body={"message": "Forbidden"})
    )


def _refuse_the_key_at_the_registry(cloud: Cloud) -> None:
    cloud.registry.token_server.inject(Fault(path=r"/v2/token$", status=401, body={"errors": []}, count=1000))


def _forbidden() -> dict[str, Any]:
    return {"error": {"code": 403, "message": "The caller does not have permission", "status": "PERMISSION_DENIED"}}


def _unavailable() -> dict[str, Any]:
    return {"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}}


def _on_alias(*_: Any, **kwargs: Any) -> bool:
    return kwargs.get("version_aliases") is not None


def _on_activation(*_: Any, **kwargs: Any) -> bool:
    return MANAGED_LABEL[0] in (kwargs.get("labels") or {})


@dataclass(frozen=True)
class Interruption:
    """A fault at ``step``: injected at the wire or at an adapter call (method, when)."""

    step: str
    at_wire: Callable[[Cloud], None] | None = None
    at_adapter: tuple[str, Callable[..., bool]] | None = None
    redelivered: bool = False  # transient: the entry point raises; else a `failed` reply


STEP_ORDER = ("repositories", "service_account", "record", "grants", "key", "dataloop", "activate", "test")
INTERRUPTIONS = {
    "repository read denied": Interruption("repositories", _deny_repository_read),
    "account creation denied": Interruption("service_account", _deny_account_creation),
    "secret manager down at create": Interruption("record", _secret_manager_down_on_create, redelivered=True),
    "grant denied": Interruption("grants", _deny_grant),
    "key creation denied": Interruption("key", _deny_key_creation),
    "crash after the key was made, before it was stored": Interruption(
        "key", _crash_before_storing_the_key, redelivered=True
    ),
    "crash after the key was stored, before it was aliased": Interruption(
        "key", at_adapter=("update_secret", _on_alias), redelivered=True
    ),
    "dataloop denied": Interruption("dataloop", _deny_dataloop),
    "crash before activation": Interruption("activate", at_adapter=("update_secret", _on_activation), redelivered=True),
    "key refused by the registry": Interruption("test", _refuse_the_key_at_the_registry),
}


@pytest.mark.parametrize("name", list(INTERRUPTIONS))
def test_provision_failing_at_a_step_completes_when_sent_again(cloud: Cloud, name: str) -> None:
    interruption = INTERRUPTIONS[name]
    cloud.patience_seconds = 0.3
    if interruption.at_wire is not None:
        interruption.at_wire(cloud)
    secrets: Any = cloud.secrets
    if interruption.at_adapter is not None:
        method, when = interruption.at_adapter
        secrets = FailOnce(cloud.secrets, method, when, ServiceUnavailable("injected: crashed here"))

    if interruption.redelivered:
        with pytest.raises(TransientError):
            cloud.send(cloud.provision_request(), secrets=secrets)
    else:
        outcome = cloud.send(cloud.provision_request(), secrets=secrets)
        assert outcome.status is Status.FAILED, outcome.reason
        if interruption.step == "test":
            assert outcome.code == "credentials-refused" and outcome.details["steps"]["test"]["attempts"] > 1
        else:
            assert outcome.details["failed_step"] == interruption.step, outcome.reason
        readers = cloud.artifact_registry.state.readers(repository_path(TEST_REPOSITORY))
        granted = f"serviceAccount:{EMAIL}" in readers
        # A failure for good before activation takes back what it granted; after, it is in use.
        assert granted is (STEP_ORDER.index(interruption.step) > STEP_ORDER.index("activate")), readers
    made_integration = STEP_ORDER.index(interruption.step) > STEP_ORDER.index("dataloop")
    assert len(cloud.integrations()) == (1 if made_integration else 0)

    cloud.secretmanager.wire.reset()
    cloud.artifact_registry.app.reset()
    cloud.dataloop.gateway.instrumented.reset()
    cloud.registry.token_server.reset()
    again = cloud.send(cloud.provision_request(), secrets=secrets)

    assert again.status is Status.OK, again.reason
    assert_one_of_everything(cloud)
    if name == "crash after the key was stored, before it was aliased":
        assert again.details["steps"]["key"].startswith("reused")
    if name == "crash after the key was made, before it was stored":
        assert "deleted 1 key(s)" in again.details["steps"]["key"]


# -- deprovision -------------------------------------------------------------------------------------


def test_deprovision_removes_what_was_made_and_leaves_an_existing_account_and_other_grants(cloud: Cloud) -> None:
    existing = cloud.iam.state.create_service_account(PROJECT, ACCOUNT_ID, display_name="made by hand")
    own_key, _ = cloud.iam.state.create_key(existing.name)
    other = cloud.iam.state.create_service_account(PROJECT, "someone-else").email
    cloud.artifact_registry.state.add_binding(repository_path(TEST_REPOSITORY), READER_ROLE, f"serviceAccount:{other}")
    provisioned = cloud.send(cloud.provision_request(service_account={"email": EMAIL}))
    assert provisioned.status is Status.OK, provisioned.reason
    assert cloud.secrets.get_secret(SECRET_ID).annotations[Annotation.CREATED_SERVICE_ACCOUNT] == "false"
    ours = next(k for k in cloud.user_keys() if k != own_key.key_id)

    outcome = cloud.send({"version": 1, "action": "deprovision", "name": NAME, "request_id": "d-1"})

    assert outcome.status is Status.OK, outcome.reason
    assert outcome.details["steps"]["keys"] == {ours: "deleted"}
    assert outcome.details["steps"]["service_account"].startswith("kept")
    assert cloud.iam.state.account(EMAIL) is not None
    assert cloud.user_keys() == [own_key.key_id]
    assert cloud.readers(TEST_REPOSITORY) == {f"serviceAccount:{other}"}
    assert cloud.readers(OTHER_REPOSITORY) == set()
    assert cloud.integrations() == []
    assert cloud.secrets.list_secrets() == []

    again = cloud.send({"version": 1, "action": "deprovision", "name": NAME})
    assert again.status is Status.OK and "nothing to remove" in again.reason


def test_deprovision_deletes_a_created_account_and_keep_secret_keeps_a_retired_record(cloud: Cloud) -> None:
    assert cloud.send(cloud.provision_request()).status is Status.OK
    cloud.dataloop.gateway.instrumented.inject(Fault(path=r"/integrations/", method="DELETE", status=503, count=10))

    with pytest.raises(TransientError):  # Dataloop down: redelivered, nothing else touched yet
        cloud.send({"version": 1, "action": "deprovision", "name": NAME, "keep_secret": True})
    assert cloud.iam.state.account(EMAIL) is not None

    cloud.dataloop.gateway.instrumented.reset()
    outcome = cloud.send({"version": 1, "action": "deprovision", "name": NAME, "keep_secret": True})

    assert outcome.status is Status.OK, outcome.reason
    assert outcome.details["steps"]["service_account"] == "deleted"
    assert cloud.iam.state.account(EMAIL) is None
    assert cloud.readers(TEST_REPOSITORY) == set() and cloud.integrations() == []
    record = cloud.secrets.get_secret(SECRET_ID)
    assert MANAGED_LABEL[0] not in record.labels and record.version_aliases == {}
    assert set(cloud.secrets.list_versions(SECRET_ID).values()) == {"DESTROYED"}
    status = cloud.send({"version": 1, "action": "status", "name": NAME})
    assert status.details["integrations"][0]["state"] == "deprovisioned"

    # The retired record is provisioned afresh by the same request as the first time.
    again = cloud.send(cloud.provision_request())
    assert again.status is Status.OK, again.reason
    assert_one_of_everything(cloud)


def test_one_teams_deprovision_leaves_the_account_and_grants_another_team_uses(cloud: Cloud) -> None:
    assert cloud.send(cloud.provision_request(test_image=None)).status is Status.OK  # creates the account
    team_b = cloud.provision_request(
        name="team-b", repositories=[TEST_REPOSITORY], service_account={"email": EMAIL}, request_id="req-b"
    )
    assert cloud.send(team_b).status is Status.OK
    team_b_key = json.loads(cloud.secrets.access("dataloop-gar-team-b", "current")[1])["private_key_id"]

    first = cloud.send({"version": 1, "action": "deprovision", "name": NAME})

    assert first.status is Status.OK, first.reason
    assert cloud.iam.state.account(EMAIL) is not None, "team-b still uses the account"
    assert cloud.readers(TEST_REPOSITORY) == {f"serviceAccount:{EMAIL}"}
    assert cloud.readers(OTHER_REPOSITORY) == set()
    assert cloud.user_keys() == [team_b_key]
    checked = cloud.send({"version": 1, "action": "test", "name": "team-b", "image": str(cloud.image.by_digest)})
    assert checked.status is Status.OK and "can pull" in checked.reason, checked.reason

    last = cloud.send({"version": 1, "action": "deprovision", "name": "team-b"})

    assert last.status is Status.OK and last.details["steps"]["service_account"] == "deleted", last.reason
    assert cloud.iam.state.account(EMAIL) is None and cloud.readers(TEST_REPOSITORY) == set()


def test_no_rotation_adds_a_key_while_a_deprovision_is_under_way(cloud: Cloud) -> None:
    assert cloud.send(cloud.provision_request(test_image=None)).status is Status.OK
    cloud.dataloop.gateway.instrumented.inject(Fault(path=r"/integrations/", method="DELETE", status=503, count=10))
    with pytest.raises(TransientError):  # deprovision stopped half way; its redelivery is pending
        cloud.send({"version": 1, "action": "deprovision", "name": NAME, "request_id": "d-1"})
    keys = set(cloud.user_keys())

    rotated = cloud.send({"version": 1, "action": "rotate", "name": NAME, "force": True}, rotation=cloud.rotation)

    assert rotated.details["rotation"]["code"] == "rotation-in-progress", rotated.details
    assert set(cloud.user_keys()) == keys, "a key was added behind the deprovision's back"
    cloud.dataloop.gateway.instrumented.reset()
    finished = cloud.send({"version": 1, "action": "deprovision", "name": NAME, "request_id": "d-1"})
    assert finished.status is Status.OK, finished.reason
    assert cloud.user_keys() == [] and cloud.iam.state.account(EMAIL) is None


def _grants_down(cloud: Cloud) -> None:
    """Fails after the keys step: the keys are deleted, the account stays."""
    cloud.artifact_registry.app.inject(
        Fault(path=r":setIamPolicy$", method="POST", status=503, body=_unavailable(), count=50)
    )


def _record_deletion_down(cloud: Cloud) -> None:
    """Fails at the last step: the keys and the account are deleted."""
    cloud.secretmanager.wire.inject(
        Fault(path=f"/secrets/{SECRET_ID}$", method="DELETE", status=503, body=_unavailable(), count=50)
    )


GONE_KEY_STATUSES = [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION]


@pytest.mark.parametrize("interrupt", [_grants_down, _record_deletion_down], ids=["keys deleted", "account deleted"])
@pytest.mark.parametrize("status", GONE_KEY_STATUSES, ids=[s.name for s in GONE_KEY_STATUSES])
def test_a_redelivered_deprovision_finishes_whatever_iam_answers_for_the_keys_it_deleted(
    cloud: Cloud, status: grpc.StatusCode, interrupt: Callable[[Cloud], None]
) -> None:
    """docs/external-apis.md §3.5: a gone key, or a key of a gone account, may answer 403 or 400."""
    assert cloud.send(cloud.provision_request(test_image=None)).status is Status.OK  # creates the account
    key_id = cloud.user_keys()[0]
    interrupt(cloud)
    with pytest.raises(TransientError):
        cloud.send({"version": 1, "action": "deprovision", "name": NAME, "request_id": "d-1"})
    assert key_id not in {k.key_id for k in cloud.iam.state.keys_of(EMAIL)}  # deleted by the first delivery
    cloud.artifact_registry.app.reset()
    cloud.secretmanager.wire.reset()
    cloud.iam.state.gone_key_status = status

    again = cloud.send({"version": 1, "action": "deprovision", "name": NAME, "request_id": "d-1"})

    assert again.status is Status.OK, again.reason
    assert again.details["steps"]["keys"] == {key_id: "already gone"}
    assert cloud.iam.state.account(EMAIL) is None
    assert cloud.secrets.list_secrets() == [] and cloud.readers(TEST_REPOSITORY) == set()


# -- test and status ------------------------------------------------------------------------------------


def test_test_and_status_report_on_the_integration(cloud: Cloud) -> None:
    assert cloud.send(cloud.provision_request(test_image=None)).status is Status.OK
    never = cloud.send({"version": 1, "action": "status", "name": NAME})
    assert never.details["integrations"][0]["last_test"] is None and "never tested" in never.reason

    by_name = cloud.send({"version": 1, "action": "test", "name": NAME, "image": str(cloud.image.by_tag)})
    covering = cloud.send({"version": 1, "action": "test", "image": str(cloud.image.by_digest), "request_id": "t-2"})
    uncovered = cloud.send(
        {"version": 1, "action": "test", "image": f"{cloud.registry.host}/{PROJECT}/elsewhere/app:v1"}
    )

    assert by_name.status is Status.OK, by_name.reason
    assert by_name.details["integrations"][NAME]["digest"] == cloud.image.digest
    assert covering.status is Status.OK and covering.request_id == "t-2"
    assert uncovered.status is Status.FAILED and uncovered.code == "uncovered"

    one = cloud.send({"version": 1, "action": "status", "name": NAME})
    every = cloud.send({"version": 1, "action": "status"})
    missing = cloud.send({"version": 1, "action": "status", "name": "nobody"})

    assert one.status is Status.OK, one.reason
    report = one.details["integrations"][0]
    record = cloud.secrets.get_secret(SECRET_ID)
    assert report["state"] == "active" and report["current_version"] == record.version_aliases["current"]
    assert report["dataloop_integration_id"] == cloud.integrations()[0]["public"]["id"]
    assert 0 <= report["key_age_days"] < 0.01 and report["rotation_period_days"] == 30
    assert report["next_rotation"] > report["rotated_at"] and report["rotation_overdue"] is False
    assert report["rotate_notification_at"] is not None  # Secret Manager's own SECRET_ROTATE schedule
    assert report["last_test"]["passed"] is True and report["last_test"]["image"] == str(cloud.image.by_digest)
    assert "last test passed" in one.reason
    assert [i["name"] for i in every.details["integrations"]] == [NAME] and every.reason.startswith("1 integration")
    assert missing.status is Status.FAILED and missing.code == "integration-not-found"


def test_status_with_compliance_lists_the_accounts_keys_from_iam_and_names_one_made_by_hand(cloud: Cloud) -> None:
    assert cloud.send(cloud.provision_request(test_image=None)).status is Status.OK
    email = cloud.secrets.get_secret(SECRET_ID).annotations["service-account"]
    by_hand = cloud.accounts.create_key(email)  # as `gcloud iam service-accounts keys create` would

    outcome = cloud.send({"version": 1, "action": "status", "compliance": True})

    assert outcome.status is Status.OK, outcome.reason
    found = outcome.details["compliance"]
    (account,) = found["accounts"]
    assert account["account"] == email and account["unchecked"] is None and account["integrations"] == [NAME]
    ours = [k["key_id"] for k in account["keys"] if k["created_by_system"]]
    assert len(ours) == 1 and account["not_created_by_system"] == [by_hand.key_id]  # IAM's own keys are not listed
    assert all(0 <= k["age_days"] < 0.01 and k["created_at"] for k in account["keys"])
    assert found["compliant"] is True and found["keys_not_created_by_system"] == 1
    assert json.loads(by_hand.json_text)["private_key"] not in json.dumps(outcome.to_message())


def test_an_invalid_request_is_rejected_with_every_reason_and_its_request_id(cloud: Cloud) -> None:
    outcome = cloud.send({"version": 1, "action": "provision", "request_id": "bad-1", "name": "x", "colour": "red"})

    assert outcome.status is Status.REJECTED and outcome.request_id == "bad-1"
    assert outcome.subject == {"action": "provision"}
    assert outcome.details["errors"][0].startswith("/name: must be 3-40 characters")
    assert "/colour: unknown field" in outcome.details["errors"]
    assert cloud.secrets.list_secrets() == [] and cloud.iam.calls() == []


# -- the function, the rotation workflow and the CLI, end to end ----------------------------------------


@pytest.fixture
def function_env(cloud: Cloud, pubsub: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The environment the deployed function would have, pointed at the local cloud."""
    results_topic = pubsub.topic("results")
    cloud.secrets.create_secret("dataloop-api-credentials", labels={}, annotations={})
    cloud.secrets.add_version("dataloop-api-credentials", json.dumps({"api_key": cloud.dataloop.admin_key}).encode())
    env = {
        "GCP_PROJECT": PROJECT,
        "SECRET_MANAGER_ENDPOINT": cloud.secretmanager.url,
        "IAM_ENDPOINT": cloud.iam.target,
        "ARTIFACT_REGISTRY_ENDPOINT": cloud.artifact_registry.url,
        "DATALOOP_BASE_URL": cloud.dataloop.api_url,
        "REGISTRY_INSECURE_HOSTS": cloud.registry.host,
        "RESULTS_TOPIC": results_topic,
        "ROTATION_TOPIC": ROTATION_TOPIC,
        "ROTATION_TEST_TIMEOUT_SECONDS": "5",
        "HTTP_TIMEOUT_SECONDS": "5",
        "HTTP_RETRIES": "1",
        "ACCESS_POLICY": cloud.policy().to_json(),
        "ALLOW_LOOPBACK_REGISTRIES": "true",
        **pubsub.emulator.env(),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    runtime.reset()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield env
    finally:
        runtime.reset()
        reset_settings()
        for handler in [h for h in root.handlers if h not in handlers]:  # runtime.start's stdout handler
            root.removeHandler(handler)
        root.setLevel(level)


def load_function() -> Any:
    spec = importlib.util.spec_from_file_location("requests_function_main", REPO_ROOT / "functions/requests/main.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def push_body(payload: dict[str, Any], message_id: str = "1") -> dict[str, Any]:
    data = base64.b64encode(json.dumps(payload).encode()).decode()
    return {"message": {"data": data, "messageId": message_id}, "subscription": "projects/p/subscriptions/s"}


def test_the_function_provisions_and_rotates_through_the_real_rotation_workflow(
    cloud: Cloud, function_env: dict[str, str], pubsub: Any
) -> None:
    """The entry point wired by runtime; ``rotate`` goes to runtime.key_rotation() (shared/workflows/rotation)."""
    replies = pubsub.collector(function_env["RESULTS_TOPIC"])
    function = load_function()

    function.on_request(push_body(cloud.provision_request(test_image=None, request_id="f-1")))
    function.on_request(push_body({"version": 1, "action": "rotate", "name": NAME, "force": True, "request_id": "f-2"}))
    function.on_request(push_body({"version": 2, "action": "status", "request_id": "f-3"}))

    provisioned = replies.wait_for_json(request_id="f-1").json
    rotated = replies.wait_for_json(request_id="f-2").json
    rejected = replies.wait_for_json(request_id="f-3").json
    assert (provisioned["kind"], provisioned["status"]) == ("request", "ok"), provisioned["reason"]
    assert rotated["status"] == "ok" and rotated["subject"] == {"action": "rotate", "name": NAME}, rotated
    assert rotated["details"]["rotation"]["status"] == "ok"
    record = cloud.secrets.get_secret(SECRET_ID)
    assert record.version_aliases["current"] == 2 and record.version_aliases.get("previous") == 1
    assert rejected["status"] == "rejected" and rejected["details"]["errors"] == [
        "/version: unsupported version 2; this function understands version 1"
    ]
    keys_after_rotation = set(cloud.user_keys())
    assert len(keys_after_rotation) == 2  # the previous key lives on through the grace period

    function.on_request(push_body({"version": 1, "action": "deprovision", "name": NAME, "request_id": "f-4"}))

    deprovisioned = replies.wait_for_json(request_id="f-4").json
    assert deprovisioned["status"] == "ok", deprovisioned["reason"]
    assert deprovisioned["details"]["steps"]["keys"] == dict.fromkeys(keys_after_rotation, "deleted")
    assert cloud.iam.state.account(EMAIL) is None
    assert cloud.integrations() == [] and cloud.secrets.list_secrets("name:dataloop-gar-") == []
    cloud.replies.extend([provisioned, rotated, rejected, deprovisioned])  # the fixture checks them for key material


def test_cli_validates_locally_and_publishes_and_waits_for_the_reply(
    cloud: Cloud, function_env: dict[str, str], pubsub: Any
) -> None:
    requests_topic = pubsub.topic("requests")
    incoming = pubsub.collector(requests_topic)
    function = load_function()
    served: list[str] = []
    stop = threading.Event()

    def serve() -> None:  # plays the push subscription: each request message to the function
        while not stop.is_set():
            for message in incoming.pull_once(timeout=1.0):
                body = {"message": {"data": base64.b64encode(message.data).decode(), "messageId": "cli-1"}}
                function.on_request(body)
                served.append(message.attributes.get("request_id", ""))

    env = {**os.environ, **function_env}
    common = ["--pubsub-project", pubsub.emulator.project, "--topic", requests_topic]
    common += ["--results-topic", function_env["RESULTS_TOPIC"]]
    invalid = subprocess.run(
        [sys.executable, "-m", "shared.cli", "status", "--name", "Bad Name", "--wait", *common],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert invalid.returncode == 2 and "/name: must be 3-40 characters" in invalid.stderr

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        waited = subprocess.run(
            [sys.executable, "-m", "shared.cli", "status", "--request-id", "cli-status-1", "--wait", "--json", "--timeout", "30", *common],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        stop.set()
        server.join(timeout=5)

    assert waited.returncode == 0, waited.stderr
    reply = json.loads(waited.stdout)
    cloud.replies.append(reply)
    assert (reply["request_id"], reply["status"], reply["subject"]) == ("cli-status-1", "ok", {"action": "status"})
    assert served == ["cli-status-1"]  # invalid requests never left the operator's machine
    subscriptions = pubsub.emulator.publisher.list_topic_subscriptions(
        request={"topic": function_env["RESULTS_TOPIC"]}, timeout=10
    )
    assert not [s for s in subscriptions if "dataloop-gar-reply-" in s], "the temporary subscription must be deleted"


# -- the trust boundary, at the wire ----------------------------------------------------------------------

ROTATE_FUNCTION_ID = "dataloop-gar-rotate"
ROTATE_FUNCTION = f"{ROTATE_FUNCTION_ID}@{PROJECT}.iam.gserviceaccount.com"
COMPUTE_DEFAULT = "123456789012-compute@developer.gserviceaccount.com"


def deployed_policy(cloud: Cloud) -> Any:
    """The world's policy, as deploy would write it: with the deployment's own accounts."""
    from dataclasses import replace

    return replace(cloud.policy(), deployment_accounts=frozenset([ROTATE_FUNCTION]))


@pytest.fixture
def deployment_accounts(cloud: Cloud) -> None:
    """The IAM stand-in holds the deployment's own account, named as deploy names it."""
    cloud.iam.state.create_service_account(
        PROJECT, ROTATE_FUNCTION_ID, display_name="dataloop-gar rotate", description="runs dataloop-gar-rotate"
    )


def test_even_without_the_policy_a_display_name_does_not_make_an_account_ours(
    cloud: Cloud, deployment_accounts: None
) -> None:
    """Display name `dataloop-gar rotate` once read as 'ours': only the IAM description counts."""
    from tests.fixtures.policy import AllowEverything

    body = cloud.provision_request(name="rotate", service_account={"create": ROTATE_FUNCTION_ID}, test_image=None)
    outcome = cloud.send(body, policy=AllowEverything())

    assert (outcome.status, outcome.code) == (Status.FAILED, "service-account-exists"), outcome.reason
    assert cloud.accounts.list_keys(ROTATE_FUNCTION) == []
    assert cloud.iam.state.account(ROTATE_FUNCTION) is not None


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"name": "rotate", "service_account": {"create": ROTATE_FUNCTION_ID}}, "/service_account/create"),
        ({"service_account": {"email": ROTATE_FUNCTION}}, "/service_account/email"),
        ({"service_account": {"email": COMPUTE_DEFAULT}}, "/service_account/email"),
        ({"org_id": "another-org"}, "/org_id"),
        ({"repositories": [TEST_REPOSITORY, "not-listed"]}, "/repositories/1"),
    ],
    ids=["create-deployment-account", "adopt-deployment-account", "compute-default", "other-org", "other-repo"],
)
def test_a_request_outside_the_policy_makes_no_call_to_any_service(
    cloud: Cloud, deployment_accounts: None, overrides: dict[str, Any], field: str
) -> None:
    iam_calls = len(cloud.iam.calls())
    secrets_before = {r.secret_id for r in cloud.secrets.list_secrets()}

    outcome = cloud.send(cloud.provision_request(test_image=None, **overrides), policy=deployed_policy(cloud))

    assert (outcome.status, outcome.code, outcome.details["field"]) == (Status.REJECTED, "not-allowed", field)
    assert cloud.iam.calls()[iam_calls:] == [], "IAM must not be called for a refused request"
    assert {r.secret_id for r in cloud.secrets.list_secrets()} == secrets_before
    assert cloud.integrations() == [] and cloud.registry.token_calls() == []
    assert cloud.accounts.list_keys(ROTATE_FUNCTION) == []


def test_a_hand_made_dataloop_integration_of_the_name_is_not_taken_unless_adopted(cloud: Cloud) -> None:
    from shared.model.dataloop import gar_options as options_for
    from tests.unit.fakes import key_file

    hand_made = cloud.dataloop_client.integrations(cloud.dataloop.org_id).create(
        NAME,
        options_for(key_file("someone-elses", "someone@other-project.iam.gserviceaccount.com"), cloud.registry.host),
    )
    [before] = cloud.integrations()

    refused = cloud.send(cloud.provision_request(test_image=None))

    assert (refused.status, refused.code) == (Status.FAILED, "integration-name-taken"), refused.reason
    assert hand_made.id in refused.reason and '"adopt_integration": true' in refused.reason
    assert cloud.integrations() == [before], "the hand-made integration must be left as it was"

    deprovisioned = cloud.send({"version": 1, "action": "deprovision", "name": NAME})
    assert deprovisioned.status is Status.OK, deprovisioned.reason
    assert cloud.integrations() == [before], "deprovision deletes only a recorded integration id"

    adopted = cloud.send(cloud.provision_request(test_image=None, adopt_integration=True))
    assert adopted.status is Status.OK, adopted.reason
    [after] = cloud.integrations()
    assert after["public"]["id"] == hand_made.id and after["options"] != before["options"]
    assert cloud.secrets.get_secret(SECRET_ID).annotations[Annotation.INTEGRATION_ID] == hand_made.id
