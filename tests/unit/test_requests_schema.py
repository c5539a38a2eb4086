"""The request schema v1: what is accepted, and the exact reasons for what is not."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.model.images import RegistryImage
from shared.model.request import (
    MAX_REQUEST_BYTES,
    DeprovisionRequest,
    ImageTestRequest,
    InvalidRequest,
    ProvisionRequest,
    RotateRequest,
    ServiceAccountChoice,
    StatusRequest,
    parse_request,
)

HOST = "us-central1-docker.pkg.dev"
NAME_RULE = "must be 3-40 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"
REPOSITORY_RULE = "must be a repository id: a-z, 0-9 and '-', starting with a letter, at most 63 characters"
IMAGE_RULE = "must be an image reference HOST/PROJECT/REPOSITORY/IMAGE[:TAG][@sha256:DIGEST]"
ACTIONS = "deprovision, provision, rotate, status, test"


def provision(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "version": 1,
        "action": "provision",
        "name": "team-a",
        "org_id": "5f0c1e2d3a4b5c6d7e8f9a0b",
        "project": "my-project",
        "location": "us-central1",
        "repositories": ["images", "models"],
        "service_account": {"create": "dlgar-team-a"},
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def errors_of(payload: Any) -> list[str]:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    return caught.value.errors


# -- accepted --------------------------------------------------------------------------------------


def test_a_full_provision_request() -> None:
    request = parse_request(
        json.dumps(
            provision(
                request_id="op-42",
                canary={"image": f"{HOST}/my-project/images/canary:v1", "service_id": "6543abcd"},
                rotation_period_days=7,
                test_image=f"{HOST}/my-project/models/app@sha256:{'ab' * 32}",
                service_account={"email": "puller@my-project.iam.gserviceaccount.com"},
            )
        ).encode()
    )

    assert isinstance(request, ProvisionRequest)
    assert request.secret_id == "dataloop-gar-team-a" and request.request_id == "op-42"
    assert request.registry_host == HOST
    assert request.repository_scopes == ("my-project/images", "my-project/models")
    assert request.service_account == ServiceAccountChoice(email="puller@my-project.iam.gserviceaccount.com")
    assert request.rotation_period_days == 7.0
    assert request.canary is not None and request.canary.service_id == "6543abcd"
    assert request.image_to_test == RegistryImage.parse(f"{HOST}/my-project/models/app@sha256:{'ab' * 32}")


def test_a_created_account_lives_in_the_integrations_project_and_the_canary_is_tested_without_a_test_image() -> None:
    request = parse_request(provision(canary={"image": f"{HOST}/my-project/images/canary:v1"}))

    assert isinstance(request, ProvisionRequest)
    assert request.service_account.email_in("my-project") == "dlgar-team-a@my-project.iam.gserviceaccount.com"
    assert request.image_to_test == RegistryImage.parse(f"{HOST}/my-project/images/canary:v1")


def test_the_local_cloud_may_name_a_loopback_registry_host() -> None:
    request = parse_request(
        provision(registry_host="127.0.0.1:5000", test_image="127.0.0.1:5000/my-project/images/app:v1")
    )
    assert isinstance(request, ProvisionRequest) and request.registry_host == "127.0.0.1:5000"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"action": "deprovision", "name": "team-a"}, DeprovisionRequest("team-a")),
        ({"action": "deprovision", "name": "team-a", "keep_secret": True}, DeprovisionRequest("team-a", True)),
        ({"action": "rotate", "name": "team-a", "force": True}, RotateRequest("team-a", force=True)),
        ({"action": "rotate", "name": "team-a", "dry_run": True}, RotateRequest("team-a", dry_run=True)),
        (
            {"action": "test", "image": f"{HOST}/p-123456/r/app:v1"},
            ImageTestRequest(RegistryImage(HOST, "p-123456", "r", "app", "v1")),
        ),
        (
            {"action": "test", "name": "team-a", "image": f"{HOST}/p-123456/r/app:v1", "request_id": "t1"},
            ImageTestRequest(RegistryImage(HOST, "p-123456", "r", "app", "v1"), "team-a", "t1"),
        ),
        ({"action": "status"}, StatusRequest()),
        ({"action": "status", "name": "team-a", "request_id": "s:1"}, StatusRequest("team-a", "s:1")),
    ],
)
def test_the_other_actions(body: dict[str, Any], expected: object) -> None:
    assert parse_request({"version": 1, **body}) == expected


# -- rejected: every reason, exactly --------------------------------------------------------------

INVALID: list[tuple[str, Any, list[str]]] = [
    (
        "not JSON",
        b"{oops",
        ["/: the request is not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"],
    ),
    ("not UTF-8", b"\xff\xfe{}", ["/: the request is not UTF-8 text (byte 0)"]),
    ("empty", b"  ", ["/: the request is empty; expected a JSON object"]),
    ("not an object", [1, 2], ["/: must be a JSON object, got array"]),
    ("too deep", b"[" * 40 + b"]" * 40, ["/: the request nests JSON deeper than 16 levels"]),
    (
        "no version, no action",
        {"name": "team-a"},
        ["/version: required (this function understands version 1)", f"/action: required; one of {ACTIONS}"],
    ),
    ("unknown action", {"version": 1, "action": "destroy-everything"}, [f"/action: must be one of {ACTIONS}"]),
    ("action of the wrong type", {"version": 1, "action": ["status"]}, [f"/action: must be one of {ACTIONS}"]),
    (
        "future version",
        {"version": 2, "action": "status"},
        ["/version: unsupported version 2; this function understands version 1"],
    ),
    ("version as text", {"version": "1", "action": "status"}, ["/version: must be an integer, got string"]),
    ("version as boolean", {"version": True, "action": "status"}, ["/version: must be an integer, got boolean"]),
    (
        "unknown fields, nested too",
        provision(owner="me", service_account={"create": "dlgar-team-a", "role": "owner"}),
        ["/service_account/role: unknown field", "/owner: unknown field"],
    ),
    (
        "an unprintable field name",
        {"version": 1, "action": "status", "a\nb": 1},
        ["/<unprintable name>: unknown field"],
    ),
    (
        "every provision field missing",
        {"version": 1, "action": "provision"},
        [
            "/name: required",
            "/org_id: required",
            "/project: required",
            "/location: required",
            "/repositories: required",
            '/service_account: required ({"create": "ACCOUNT_ID"} or {"email": "EMAIL"})',
        ],
    ),
    (
        "wrong types",
        provision(name=7, org_id=None, project=["p"], repositories="images", service_account="sa", test_image=5),
        [
            "/name: must be a string, got number",
            "/org_id: required",
            "/project: must be a string, got array",
            "/repositories: must be an array, got string",
            "/service_account: must be an object, got string",
            "/test_image: must be a string, got number",
        ],
    ),
    ("injection in the name", provision(name="a; rm -rf /"), [f"/name: {NAME_RULE}"]),
    ("path traversal in the name", provision(name="../etc"), [f"/name: {NAME_RULE}"]),
    ("trailing newline in the name", provision(name="team-a\n"), [f"/name: {NAME_RULE}"]),
    ("look-alike letters in the name", provision(name="tеam-a"), [f"/name: {NAME_RULE}"]),  # noqa: RUF001
    ("name too short", provision(name="ab"), [f"/name: {NAME_RULE}"]),
    ("name too long", provision(name="a" * 41), [f"/name: {NAME_RULE}"]),
    ("name ending with a hyphen", provision(name="team-"), [f"/name: {NAME_RULE}"]),
    (
        "quotes in ids",
        provision(org_id='x" or "1"="1', project="my-project'"),
        [
            "/org_id: must be a Dataloop organization id (letters, digits and '-')",
            "/project: must be a GCP project id: 6-30 characters of a-z, 0-9 and '-', starting with a letter",
        ],
    ),
    (
        "bad location",
        provision(location="us-central1/../x"),
        ["/location: must be an Artifact Registry location such as us-central1 or europe"],
    ),
    (
        "bad, repeated and missing repositories",
        provision(repositories=["images", "Images", "images", "a" * 64, "9lives"]),
        [
            f"/repositories/1: {REPOSITORY_RULE}",
            "/repositories/2: repeats /repositories/0",
            f"/repositories/3: {REPOSITORY_RULE}",
            f"/repositories/4: {REPOSITORY_RULE}",
        ],
    ),
    ("no repositories", provision(repositories=[]), ["/repositories: must have 1 to 20 items, got 0"]),
    (
        "too many repositories",
        provision(repositories=[f"r{i}" for i in range(21)]),
        ["/repositories: must have 1 to 20 items, got 21"],
    ),
    (
        "both ways to name an account",
        provision(service_account={"create": "dlgar-team-a", "email": "x@p-123456.iam.gserviceaccount.com"}),
        ['/service_account: must have exactly one of "create" or "email"'],
    ),
    (
        "neither way to name an account",
        provision(service_account={}),
        ['/service_account: must have exactly one of "create" or "email"'],
    ),
    (
        "bad account id and email",
        provision(service_account={"create": "sa"}),
        [
            "/service_account/create: must be a service account id: 6-30 characters of a-z, 0-9 and '-', starting with a letter"
        ],
    ),
    (
        "an email that is not a service account",
        provision(service_account={"email": "someone@example.com"}),
        ["/service_account/email: must be a service account email (NAME@PROJECT.iam.gserviceaccount.com)"],
    ),
    (
        "rotation period out of range or not a number",
        provision(rotation_period_days=0.01),
        ["/rotation_period_days: must be between 1/24 (one hour) and 3650 days"],
    ),
    (
        "rotation period as boolean",
        provision(rotation_period_days=True),
        ["/rotation_period_days: must be a number, got boolean"],
    ),
    ("not an image reference", provision(test_image="not an image"), [f"/test_image: {IMAGE_RULE}"]),
    (
        "test image on another host (would send the key there)",
        provision(test_image="evil.example.com/my-project/images/app:v1"),
        [f"/test_image: must be on the integration's registry host {HOST}"],
    ),
    (
        "test image outside the repositories",
        provision(test_image=f"{HOST}/my-project/other/app:v1"),
        ["/test_image: must be in one of the repositories being provisioned (PROJECT/REPOSITORY)"],
    ),
    (
        "canary without image, with a bad service id",
        provision(canary={"service_id": "x y"}),
        ["/canary/image: required", "/canary/service_id: must be a Dataloop service id (letters, digits and '-')"],
    ),
    (
        "registry host override to an arbitrary host",
        provision(registry_host="evil.example.com"),
        ["/registry_host: must be LOCATION-docker.pkg.dev, or a loopback host (127.0.0.1:PORT) of the local cloud"],
    ),
    (
        "registry host of another location",
        provision(registry_host="europe-docker.pkg.dev"),
        ["/registry_host: must be us-central1-docker.pkg.dev for location us-central1"],
    ),
    ("deprovision without a name", {"version": 1, "action": "deprovision"}, ["/name: required"]),
    (
        "keep_secret as text",
        {"version": 1, "action": "deprovision", "name": "team-a", "keep_secret": "yes"},
        ["/keep_secret: must be true or false, got string"],
    ),
    (
        "force as number",
        {"version": 1, "action": "rotate", "name": "team-a", "force": 1},
        ["/force: must be true or false, got number"],
    ),
    ("test without image", {"version": 1, "action": "test", "name": "team-a"}, ["/image: required"]),
    ("test of a bare name", {"version": 1, "action": "test", "image": "ubuntu:22.04"}, [f"/image: {IMAGE_RULE}"]),
    ("status with a bad name", {"version": 1, "action": "status", "name": "TEAM"}, [f"/name: {NAME_RULE}"]),
    (
        "provision fields on another action",
        {"version": 1, "action": "status", "org_id": "x"},
        ["/org_id: unknown field"],
    ),
    (
        "bad request id",
        {"version": 1, "action": "status", "request_id": "id with spaces"},
        ["/request_id: must be 1-128 characters of letters, digits and . _ : -, starting with a letter or digit"],
    ),
]


@pytest.mark.parametrize(("case", "payload", "expected"), INVALID, ids=[c for c, _, _ in INVALID])
def test_invalid_requests_are_rejected_with_every_reason(case: str, payload: Any, expected: list[str]) -> None:
    assert errors_of(payload) == expected


def test_an_oversized_request_is_refused_before_it_is_parsed() -> None:
    huge = json.dumps(provision(padding="x" * MAX_REQUEST_BYTES)).encode()
    assert errors_of(huge) == [f"/: the request is {len(huge)} bytes; the limit is {MAX_REQUEST_BYTES}"]


def test_a_flood_of_problems_is_summarised() -> None:
    errors = errors_of({"version": 1, "action": "status", **{f"f{i}": i for i in range(40)}})
    assert len(errors) == 26 and errors[-1] == "... and 15 more problems"


def test_the_rejection_carries_the_action_and_request_id_and_names_the_problems() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request({"version": 1, "action": "rotate", "request_id": "op-7", "force": "yes"})
    rejection = caught.value
    assert (rejection.action, rejection.request_id, rejection.code) == ("rotate", "op-7", "invalid-request")
    assert rejection.reason == "invalid rotate request: /name: required; /force: must be true or false, got string"


def test_a_bad_request_id_is_not_echoed_back() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request({"version": 1, "action": "status", "request_id": "x\ny"})
    assert caught.value.request_id is None
    assert "x\ny" not in caught.value.reason
