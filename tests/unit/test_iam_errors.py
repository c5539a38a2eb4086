"""Pure parts of ``shared.adapters.iam``: account names and how IAM's refusals are recognised."""

from __future__ import annotations

import pytest
from google.api_core import exceptions
from google.rpc import error_details_pb2

from shared.adapters.iam import (
    _is_key_limit,
    _is_org_policy,
    _key_file_bytes,
    _retryable,
    _retryable_create,
    account_name,
)


def test_account_name_carries_the_project_of_a_user_created_account() -> None:
    assert (
        account_name("puller@proj-1.iam.gserviceaccount.com")
        == "projects/proj-1/serviceAccounts/puller@proj-1.iam.gserviceaccount.com"
    )


@pytest.mark.parametrize(
    "email",
    ["123-compute@developer.gserviceaccount.com", "proj-1@appspot.gserviceaccount.com", "@.iam.gserviceaccount.com"],
)
def test_account_name_falls_back_to_the_wildcard(email: str) -> None:
    assert account_name(email) == f"projects/-/serviceAccounts/{email}"


def org_policy_refusal(
    message: str = "Key creation is not allowed on this service account.",
) -> exceptions.FailedPrecondition:
    violation = error_details_pb2.PreconditionFailure.Violation(
        type="constraints/iam.disableServiceAccountKeyCreation", subject="projects/p/serviceAccounts/x", description=""
    )
    return exceptions.FailedPrecondition(
        message, details=[error_details_pb2.PreconditionFailure(violations=[violation])]
    )


def test_the_org_policy_is_recognised_by_its_violation_even_with_a_generic_message() -> None:
    refusal = org_policy_refusal("Precondition check failed.")

    assert _is_org_policy(refusal)
    assert not _is_key_limit(refusal)


def test_the_managed_constraint_is_recognised_by_its_message() -> None:
    assert _is_org_policy(
        exceptions.FailedPrecondition("constraints/iam.managed.disableServiceAccountKeyCreation violated")
    )


@pytest.mark.parametrize(
    ("error", "is_limit"),
    [
        (exceptions.FailedPrecondition("Precondition check failed."), True),
        (exceptions.ResourceExhausted("Maximum number of keys on account reached."), True),
        (exceptions.ResourceExhausted("Quota exceeded for quota metric 'Key creation requests'"), False),
        (exceptions.FailedPrecondition("The service account is disabled."), False),
    ],
)
def test_the_key_limit_in_both_its_forms(error: Exception, is_limit: bool) -> None:
    assert _is_key_limit(error) is is_limit
    # A quota is worth waiting out; the key limit never is.
    assert _retryable(error) is (not is_limit and isinstance(error, exceptions.ResourceExhausted))


def test_creation_is_retried_only_when_it_cannot_have_happened() -> None:
    assert _retryable_create(exceptions.ServiceUnavailable("down"))
    assert not _retryable_create(exceptions.InternalServerError("boom"))
    assert not _retryable_create(exceptions.DeadlineExceeded("slow"))
    assert _retryable(exceptions.InternalServerError("boom"))


def test_the_key_file_is_taken_raw_or_base64() -> None:
    raw = b'{"type": "service_account"}'

    assert _key_file_bytes(raw) == raw
    assert _key_file_bytes(b"eyJ0eXBlIjogInNlcnZpY2VfYWNjb3VudCJ9") == raw
