"""``shared.adapters.iam.ServiceAccounts`` against the local IAM, through the real gRPC client.

What rotation and provisioning rely on: accounts are ensured idempotently, a created key
is a usable key file whose id is IAM's, listing shows only user-managed keys, deletes are
tolerant, the two refusals of key creation come back as permanent errors an operator can
act on, unavailability is retried and then reported as transient, and the key file never
reaches an error message or a log line.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from localcloud.iam import IamStandIn
from shared.adapters.iam import ServiceAccounts
from shared.core.errors import PermanentError, ServiceUnavailable, TransientError

pytestmark = pytest.mark.wire

PROJECT = "proj-1"
EMAIL = f"dlgar-puller@{PROJECT}.iam.gserviceaccount.com"


@pytest.fixture
def accounts(iam: IamStandIn) -> Iterator[ServiceAccounts]:
    with ServiceAccounts(endpoint=iam.target, timeout=2.0, relist_pauses=(0.01,)) as adapter:
        yield adapter


@pytest.fixture
def email(iam: IamStandIn) -> str:
    return iam.state.create_service_account(PROJECT, "dlgar-puller").email


def calls_of(iam: IamStandIn, method: str) -> int:
    return iam.calls().count(method)


# -- accounts -------------------------------------------------------------------------------


def test_ensure_account_twice_creates_one_account(iam: IamStandIn, accounts: ServiceAccounts) -> None:
    first = accounts.ensure_account(PROJECT, "dlgar-puller", "Dataloop puller")
    second = accounts.ensure_account(PROJECT, "dlgar-puller", "Dataloop puller")

    assert first == (EMAIL, True)
    assert second == (EMAIL, False)
    assert [a.email for a in iam.state.list_service_accounts(PROJECT)] == [EMAIL]
    stored = iam.state.account(EMAIL)
    assert stored is not None and stored.display_name == "Dataloop puller"
    assert calls_of(iam, "CreateServiceAccount") == 2
    assert calls_of(iam, "GetServiceAccount") == 1


def test_get_and_delete_account_tolerate_a_missing_account(
    iam: IamStandIn, accounts: ServiceAccounts, email: str
) -> None:
    found = accounts.get_account(email)
    assert found is not None
    assert (found["email"], found["project_id"], found["disabled"]) == (email, PROJECT, False)

    assert accounts.delete_account(email) is True
    assert accounts.delete_account(email) is False
    assert accounts.get_account(email) is None
    assert not iam.state.service_account_exists(email)


def test_an_unknown_account_outside_user_domains_reads_as_permission_denied(accounts: ServiceAccounts) -> None:
    # Under projects/-/ IAM answers 403 for an unknown account; the reason must say so.
    with pytest.raises(PermanentError) as caught:
        accounts.get_account("123456789-compute@developer.gserviceaccount.com")

    assert caught.value.code == "permission-denied"
    assert "roles/iam.serviceAccountAdmin" in caught.value.reason
    assert "may not exist" in caught.value.reason


def test_creating_an_account_without_the_role_names_it(iam: IamStandIn, accounts: ServiceAccounts) -> None:
    iam.inject(
        "CreateServiceAccount", grpc.StatusCode.PERMISSION_DENIED, "Permission iam.serviceAccounts.create denied"
    )

    with pytest.raises(PermanentError) as caught:
        accounts.ensure_account(PROJECT, "dlgar-puller", "")

    assert caught.value.code == "permission-denied"
    assert f"roles/iam.serviceAccountAdmin on project {PROJECT}" in caught.value.reason


# -- keys ---------------------------------------------------------------------------------------


def test_create_key_returns_a_usable_key_file_whose_id_is_iams(
    iam: IamStandIn, accounts: ServiceAccounts, email: str
) -> None:
    key = accounts.create_key(email)

    [stored] = iam.state.keys_of(email)
    assert key.key_id == stored.key_id
    assert key.client_email == email
    assert key.project_id == PROJECT
    assert json.loads(key.json_text)["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert iam.state.check_key_file(key.json_text).accepted
    assert key.json_text not in repr(key)


def test_a_created_key_carries_its_expiry_under_the_key_expiry_policy(
    iam: IamStandIn, accounts: ServiceAccounts, email: str
) -> None:
    assert accounts.create_key(email).expires_at is None  # IAM's 9999-12-31: never
    iam.state.set_key_expiry(8 * 3600)

    key = accounts.create_key(email)

    stored = next(k for k in iam.state.keys_of(email) if k.key_id == key.key_id)
    assert key.expires_at is not None
    assert abs(key.expires_at.timestamp() - stored.valid_before.timestamp()) < 0.001
    listed = next(k for k in accounts.list_keys(email) if k.key_id == key.key_id)
    assert listed.expires_at == key.expires_at


def test_list_keys_shows_only_user_managed_keys_oldest_first(
    iam: IamStandIn, accounts: ServiceAccounts, email: str
) -> None:
    first, second = accounts.create_key(email), accounts.create_key(email)

    keys = accounts.list_keys(email)

    assert len(iam.state.keys_of(email, user_managed_only=False)) == 3  # plus the Google-managed one
    assert [k.key_id for k in keys] == [first.key_id, second.key_id]
    assert keys[0].name == f"projects/{PROJECT}/serviceAccounts/{email}/keys/{first.key_id}"
    assert keys[0].valid_after is not None and keys[0].valid_after.year >= 2024
    assert keys[0].valid_before is not None and keys[0].valid_before.year == 9999
    assert not any(k.disabled for k in keys)


def test_delete_key_is_tolerant_and_the_key_stops_working(
    iam: IamStandIn, accounts: ServiceAccounts, email: str
) -> None:
    key = accounts.create_key(email)

    assert accounts.delete_key(email, key.key_id) is True
    assert accounts.delete_key(email, key.key_id) is False
    assert accounts.list_keys(email) == []
    assert iam.state.check_key_file(key.json_text).reason == "key deleted"


def test_disable_key_keeps_it_listed_but_refused(iam: IamStandIn, accounts: ServiceAccounts, email: str) -> None:
    key = accounts.create_key(email)

    assert accounts.disable_key(email, key.key_id) is True

    assert [(k.key_id, k.disabled) for k in accounts.list_keys(email)] == [(key.key_id, True)]
    assert iam.state.check_key_file(key.json_text).reason == "key disabled"
    assert accounts.disable_key(email, "0" * 40) is False


#: What IAM has been seen to answer for a key that is gone (docs/external-apis.md §3.5).
GONE_KEY_STATUSES = [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION]


@pytest.mark.parametrize("status", GONE_KEY_STATUSES, ids=[s.name for s in GONE_KEY_STATUSES])
def test_deleting_or_disabling_a_gone_key_is_false_whatever_iam_answers(
    iam: IamStandIn, accounts: ServiceAccounts, email: str, status: grpc.StatusCode
) -> None:
    iam.state.gone_key_status = status
    deleted, kept = accounts.create_key(email), accounts.create_key(email)
    assert accounts.delete_key(email, deleted.key_id) is True

    assert accounts.delete_key(email, deleted.key_id) is False
    assert accounts.disable_key(email, deleted.key_id) is False
    assert accounts.delete_key(email, "0" * 40) is False
    assert [k.key_id for k in accounts.list_keys(email)] == [kept.key_id]


@pytest.mark.parametrize("status", GONE_KEY_STATUSES, ids=[s.name for s in GONE_KEY_STATUSES])
def test_the_keys_of_a_deleted_account_are_gone_whatever_iam_answers(
    iam: IamStandIn, accounts: ServiceAccounts, email: str, status: grpc.StatusCode
) -> None:
    iam.state.gone_key_status = status
    key = accounts.create_key(email)
    assert accounts.delete_account(email) is True

    assert accounts.delete_key(email, key.key_id) is False
    assert accounts.disable_key(email, key.key_id) is False


@pytest.mark.parametrize("status", GONE_KEY_STATUSES[1:], ids=[s.name for s in GONE_KEY_STATUSES[1:]])
def test_a_gone_key_still_listed_for_a_while_is_gone_once_the_listing_catches_up(
    iam: IamStandIn, accounts: ServiceAccounts, email: str, status: grpc.StatusCode
) -> None:
    iam.state.gone_key_status = status
    iam.state.deleted_key_listings = 1
    key = accounts.create_key(email)
    assert accounts.delete_key(email, key.key_id) is True

    assert accounts.delete_key(email, key.key_id) is False
    assert calls_of(iam, "ListServiceAccountKeys") == 2  # the lagging listing, then one that caught up
    assert accounts.list_keys(email) == []


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (grpc.StatusCode.PERMISSION_DENIED, "permission-denied"),
        (grpc.StatusCode.FAILED_PRECONDITION, "failed-precondition"),
    ],
)
@pytest.mark.parametrize("method", ["DeleteServiceAccountKey", "DisableServiceAccountKey"])
def test_a_refusal_for_a_key_that_is_still_listed_is_reported_as_a_refusal(
    iam: IamStandIn, accounts: ServiceAccounts, email: str, status: grpc.StatusCode, code: str, method: str
) -> None:
    key = accounts.create_key(email)
    iam.inject(method, status, "Permission iam.serviceAccountKeys.delete is required", count=10)
    call = accounts.delete_key if method == "DeleteServiceAccountKey" else accounts.disable_key

    with pytest.raises(PermanentError) as caught:
        call(email, key.key_id)

    assert caught.value.code == code
    if status == grpc.StatusCode.PERMISSION_DENIED:
        assert f"roles/iam.serviceAccountKeyAdmin on the service account {email}" in caught.value.reason
    assert [k.key_id for k in iam.state.keys_of(email)] == [key.key_id]
    assert calls_of(iam, "ListServiceAccountKeys") >= 1  # looked before calling it a refusal


def test_a_refused_google_managed_key_is_not_mistaken_for_a_gone_one(
    iam: IamStandIn, accounts: ServiceAccounts, email: str
) -> None:
    [system_key] = iam.state.keys_of(email, user_managed_only=False)

    with pytest.raises(PermanentError) as caught:
        accounts.delete_key(email, system_key.key_id)

    assert caught.value.code == "failed-precondition"
    assert not iam.state.keys_of(email, user_managed_only=False)[0].deleted


def test_a_refusal_stands_when_the_keys_cannot_be_listed_either(
    iam: IamStandIn, accounts: ServiceAccounts, email: str
) -> None:
    iam.state.gone_key_status = grpc.StatusCode.PERMISSION_DENIED
    key = accounts.create_key(email)
    accounts.delete_key(email, key.key_id)
    iam.inject("ListServiceAccountKeys", grpc.StatusCode.PERMISSION_DENIED, "Permission denied", count=10)

    with pytest.raises(PermanentError) as caught:
        accounts.delete_key(email, key.key_id)

    assert caught.value.code == "permission-denied"
    assert "delete key" in caught.value.reason


@pytest.mark.parametrize("status", [grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_the_key_limit_is_a_permanent_error_that_counts_the_keys(
    iam: IamStandIn, accounts: ServiceAccounts, email: str, status: grpc.StatusCode
) -> None:
    iam.state.key_limit_status = status
    for _ in range(10):
        iam.state.create_key(f"projects/{PROJECT}/serviceAccounts/{email}")

    with pytest.raises(PermanentError) as caught:
        accounts.create_key(email)

    assert caught.value.code == "key-limit"
    assert "has 10 user-managed keys, the limit is 10; delete unused keys" in caught.value.reason
    assert calls_of(iam, "CreateServiceAccountKey") == 1  # RESOURCE_EXHAUSTED here is not a quota to wait out
    assert len(iam.state.keys_of(email)) == 10


def test_the_org_policy_is_a_permanent_error_naming_the_constraint(
    iam: IamStandIn, accounts: ServiceAccounts, email: str
) -> None:
    iam.state.set_key_creation_disabled()

    with pytest.raises(PermanentError) as caught:
        accounts.create_key(email)

    assert caught.value.code == "key-creation-disabled"
    assert "constraints/iam.disableServiceAccountKeyCreation" in caught.value.reason
    assert f"exempt this project: override the constraint on projects/{PROJECT}" in caught.value.reason
    assert calls_of(iam, "CreateServiceAccountKey") == 1
    assert iam.state.keys_of(email) == []


def test_key_creation_without_the_role_names_it(iam: IamStandIn, accounts: ServiceAccounts, email: str) -> None:
    iam.inject("CreateServiceAccountKey", grpc.StatusCode.PERMISSION_DENIED, "Permission iam.serviceAccountKeys.create")

    with pytest.raises(PermanentError) as caught:
        accounts.create_key(email)

    assert caught.value.code == "permission-denied"
    assert f"roles/iam.serviceAccountKeyAdmin on the service account {email}" in caught.value.reason
    assert "may not exist" in caught.value.reason


def test_an_inconsistent_key_file_is_refused_and_its_key_deleted(
    iam: IamStandIn, accounts: ServiceAccounts, email: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = accounts.client.create_service_account_key

    def tampered(**kwargs: Any) -> Any:
        created = real(**kwargs)
        document = json.loads(created.private_key_data)
        document["private_key_id"] = "f" * 40
        created.private_key_data = json.dumps(document).encode()
        return created

    monkeypatch.setattr(accounts.client, "create_service_account_key", tampered)

    with pytest.raises(PermanentError) as caught:
        accounts.create_key(email)

    assert caught.value.code == "bad-key"
    assert "PRIVATE KEY" not in str(caught.value)
    assert iam.state.keys_of(email) == []  # not left behind to count towards the limit


def test_the_key_file_never_reaches_logs(
    accounts: ServiceAccounts, email: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    key = accounts.create_key(email)
    accounts.delete_key(email, key.key_id)

    private_key = json.loads(key.json_text)["private_key"]
    assert key.key_id in caplog.text  # the logs do say what happened
    assert private_key not in caplog.text
    assert "PRIVATE KEY" not in caplog.text


# -- availability -----------------------------------------------------------------------------------


def test_unavailable_is_retried(iam: IamStandIn, accounts: ServiceAccounts, email: str) -> None:
    iam.inject("CreateServiceAccountKey", grpc.StatusCode.UNAVAILABLE, "try again", count=2)

    key = accounts.create_key(email)

    assert calls_of(iam, "CreateServiceAccountKey") == 3
    assert [k.key_id for k in iam.state.keys_of(email)] == [key.key_id]


@pytest.mark.parametrize(
    "status", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED]
)
def test_lasting_unavailability_is_a_transient_error(iam: IamStandIn, email: str, status: grpc.StatusCode) -> None:
    iam.inject("ListServiceAccountKeys", status, "backend down", count=1000)
    started = time.monotonic()

    with ServiceAccounts(endpoint=iam.target, timeout=0.2) as impatient, pytest.raises(ServiceUnavailable) as caught:
        impatient.list_keys(email)

    assert isinstance(caught.value, TransientError)
    assert "IAM unavailable while trying to list the keys" in caught.value.reason
    assert calls_of(iam, "ListServiceAccountKeys") >= 2  # retried before giving up
    assert time.monotonic() - started < 5


def test_a_creation_that_may_have_happened_is_not_retried(
    iam: IamStandIn, accounts: ServiceAccounts, email: str
) -> None:
    # INTERNAL may come after IAM made the key: a retry could leave an orphan behind.
    iam.inject("CreateServiceAccountKey", grpc.StatusCode.INTERNAL, "internal error")

    with pytest.raises(ServiceUnavailable):
        accounts.create_key(email)

    assert calls_of(iam, "CreateServiceAccountKey") == 1
