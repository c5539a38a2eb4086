"""``shared.adapters.gcp_errors.translated``, as each Google adapter configures it.

Every canonical status, over the transport the adapter really uses (IAM: gRPC; Secret
Manager and Artifact Registry: REST, with Google's JSON error body), must come out as the
error type and code its callers branch on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager

import grpc
import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as gauth

from shared.adapters import artifact_registry, iam, secrets
from shared.adapters.gcp_errors import api_status, translated
from shared.core.errors import Conflict, GarDataloopError, PermanentError, ServiceUnavailable

REPOSITORY = "projects/p/locations/us/repositories/r"
EMAIL = "puller@p.iam.gserviceaccount.com"
T, P, C = ServiceUnavailable, PermanentError, Conflict

#: The canonical statuses and the HTTP status Google's REST APIs answer them with (AIP-193).
HTTP_OF = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


def grpc_error(status: str) -> gexc.GoogleAPICallError:
    return gexc.from_grpc_status(getattr(grpc.StatusCode, status), f"the API said {status}")


def rest_error(status: str) -> gexc.GoogleAPICallError:
    code = HTTP_OF[status]
    response = requests.Response()
    response.status_code = code
    body = {"error": {"code": code, "message": f"the API said {status}", "status": status}}
    response._content = json.dumps(body).encode()
    response.request = requests.Request("GET", "https://example.invalid/v1/x").prepare()
    return gexc.from_http_response(response)


def raised(context: AbstractContextManager[None], error: BaseException) -> GarDataloopError:
    with pytest.raises(GarDataloopError) as caught, context:
        raise error
    return caught.value


def iam_block() -> AbstractContextManager[None]:
    return iam._translated(f"create a key for {EMAIL}", needs=iam._needs_key_admin(EMAIL))


def registry_block() -> AbstractContextManager[None]:
    return artifact_registry._translated(f"read {REPOSITORY}", REPOSITORY)


def secrets_block() -> AbstractContextManager[None]:
    return secrets._translated("read secret s")


def secrets_write_block() -> AbstractContextManager[None]:
    return secrets._translated("update secret s", conflict=True)


# (status, IAM over gRPC, Artifact Registry over REST, Secret Manager over REST, its etag-guarded writes)
EXPECTED: list[tuple[str, tuple[type, str], tuple[type, str], tuple[type, str], tuple[type, str]]] = [
    ("CANCELLED", (P, "iam"), (P, "artifact-registry"), (P, "cancelled"), (P, "cancelled")),
    # UNKNOWN (a dropped stream, a server hiccup) is redelivered everywhere. For IAM that is safe because every
    # write is reconciled on the next delivery: an account by its display name, a key nobody stored is deleted.
    ("UNKNOWN", *((T, "service-unavailable"),) * 4),
    ("INVALID_ARGUMENT", (P, "iam"), (P, "artifact-registry"), (P, "invalid-argument"), (P, "invalid-argument")),
    ("DEADLINE_EXCEEDED", *((T, "service-unavailable"),) * 4),
    ("NOT_FOUND", (P, "not-found"), (P, "repository-not-found"), (P, "not-found"), (P, "not-found")),
    ("ALREADY_EXISTS", (P, "iam"), (P, "artifact-registry"), (C, "already-exists"), (C, "already-exists")),
    ("PERMISSION_DENIED", *((P, "permission-denied"),) * 4),
    ("RESOURCE_EXHAUSTED", *((T, "service-unavailable"),) * 4),
    (
        "FAILED_PRECONDITION",
        (P, "failed-precondition"),
        (P, "artifact-registry"),
        (P, "failed-precondition"),
        (C, "etag-mismatch"),
    ),
    ("ABORTED", (P, "iam"), (P, "artifact-registry"), (P, "aborted"), (C, "etag-mismatch")),
    ("OUT_OF_RANGE", (P, "iam"), (P, "artifact-registry"), (P, "out-of-range"), (P, "out-of-range")),
    ("UNIMPLEMENTED", (P, "iam"), (P, "artifact-registry"), (P, "unimplemented"), (P, "unimplemented")),
    ("INTERNAL", *((T, "service-unavailable"),) * 4),
    ("UNAVAILABLE", *((T, "service-unavailable"),) * 4),
    # REST answers DATA_LOSS with a 500, which the client already classes as INTERNAL.
    ("DATA_LOSS", (P, "iam"), (T, "service-unavailable"), (T, "service-unavailable"), (T, "service-unavailable")),
    ("UNAUTHENTICATED", (P, "iam"), (P, "artifact-registry"), (P, "unauthenticated"), (P, "unauthenticated")),
]

ADAPTERS: list[tuple[str, Callable[[], AbstractContextManager[None]], Callable[[str], BaseException], int]] = [
    ("iam", iam_block, grpc_error, 1),
    ("artifact-registry", registry_block, rest_error, 2),
    ("secrets", secrets_block, rest_error, 3),
    ("secrets-write", secrets_write_block, rest_error, 4),
]


@pytest.mark.parametrize(("adapter", "block", "error", "column"), ADAPTERS, ids=[a[0] for a in ADAPTERS])
@pytest.mark.parametrize("row", EXPECTED, ids=[r[0] for r in EXPECTED])
def test_every_status_has_the_type_and_code_its_adapter_always_gave_it(
    adapter: str,
    block: Callable[[], AbstractContextManager[None]],
    error: Callable[[str], BaseException],
    column: int,
    row: tuple,
) -> None:
    expected_type, expected_code = row[column]

    translated_error = raised(block(), error(row[0]))

    assert type(translated_error) is expected_type, translated_error.reason
    assert translated_error.code == expected_code


def test_rest_errors_are_read_for_their_canonical_status() -> None:
    assert api_status(rest_error("FAILED_PRECONDITION")) == "FAILED_PRECONDITION"
    assert type(rest_error("FAILED_PRECONDITION")) is gexc.BadRequest


def test_permission_denied_names_the_role_and_where() -> None:
    denied = raised(iam_block(), grpc_error("PERMISSION_DENIED"))
    assert denied.reason.startswith(f"IAM denied permission to create a key for {EMAIL}. ")
    assert f"{iam.KEY_ADMIN_ROLE} on the service account {EMAIL}" in denied.reason
    assert "may not exist" in denied.reason and "the API said PERMISSION_DENIED" in denied.reason

    denied = raised(registry_block(), rest_error("PERMISSION_DENIED"))
    assert f"roles/artifactregistry.repoAdmin (or roles/artifactregistry.admin) on {REPOSITORY}" in denied.reason

    denied = raised(secrets_block(), rest_error("PERMISSION_DENIED"))
    assert "roles/secretmanager.secretAccessor" in denied.reason


def test_not_found_can_say_what_is_missing() -> None:
    missing = raised(registry_block(), rest_error("NOT_FOUND"))
    assert missing.reason == f"Artifact Registry: {REPOSITORY}: repository not found (check the location and id)"

    missing = raised(iam_block(), grpc_error("NOT_FOUND"))
    assert missing.reason == f"IAM refused to create a key for {EMAIL} (NOT_FOUND): the API said NOT_FOUND"


def test_retries_that_ran_out_are_transient_and_name_the_last_status() -> None:
    gave_up = gexc.RetryError("Timeout of 0.6s exceeded", grpc_error("UNAVAILABLE"))

    unavailable = raised(iam_block(), gave_up)

    assert isinstance(unavailable, ServiceUnavailable)
    assert unavailable.reason.startswith(f"IAM unavailable while trying to create a key for {EMAIL} (UNAVAILABLE, ")


@pytest.mark.parametrize("failure", [requests.ConnectionError("refused"), gauth.TransportError("no metadata server")])
def test_an_unreachable_endpoint_is_transient(failure: Exception) -> None:
    unreachable = raised(registry_block(), failure)

    assert isinstance(unreachable, ServiceUnavailable)
    assert unreachable.reason.startswith(f"Artifact Registry unreachable while trying to read {REPOSITORY}: ")


def test_errors_of_our_own_pass_through() -> None:
    ours = PermanentError("the key limit", code="key-limit")

    assert raised(translated("IAM", "create a key"), ours) is ours
