"""Dataloop client pieces that need no server: GAR options, models, errors, token timing."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from shared.adapters.dataloop.auth import jwt_claims, renew_at
from shared.adapters.dataloop.client import DataloopClient, gate_origin
from shared.adapters.dataloop.errors import error_from_response
from shared.core.errors import PermanentError, TransientError
from shared.core.redaction import MASK, redact_text
from shared.model.dataloop import (
    DataloopConflict,
    DataloopError,
    DataloopForbidden,
    DataloopNotFound,
    DataloopRejected,
    DataloopUnauthorized,
    DataloopUnavailable,
    Integration,
    ServiceStatus,
    gar_options,
    registry_host_for,
    runner_image,
)

KEY = '{"type": "service_account", "client_email": "a@p.iam.gserviceaccount.com", "private_key": "K"}'


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def jwt_with(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2ln"


# -- gar_options: byte for byte what dtlpy's generate_gar_options builds ---------------------


def test_gar_options_golden() -> None:
    """Literals, so separators, key order and encoding cannot drift unnoticed."""
    options = gar_options('{"client_email": "e", "private_key": "p"}', "us-docker.pkg.dev")
    config = (
        r'{"auths": {"us-docker.pkg.dev": {"username": "_json_key", '
        r'"password": "{\"client_email\": \"e\", \"private_key\": \"p\"}", '
        r'"auth": "X2pzb25fa2V5OnsiY2xpZW50X2VtYWlsIjogImUiLCAicHJpdmF0ZV9rZXkiOiAicCJ9"}}}'
    )
    assert options == {"name": "_json_key", "spec": {"password": b64(config)}}
    assert base64.b64decode("X2pzb25fa2V5OnsiY2xpZW50X2VtYWlsIjogImUiLCAicHJpdmF0ZV9rZXkiOiAicCJ9") == (
        b'_json_key:{"client_email": "e", "private_key": "p"}'
    )


@pytest.mark.parametrize("email", [None, "ops@example.com"])
def test_gar_options_follow_the_dtlpy_recipe(email: str | None) -> None:
    host = "europe-west4-docker.pkg.dev"
    entry = {"username": "_json_key", "password": KEY, "auth": b64(f"_json_key:{KEY}")}
    if email:
        entry["email"] = email
    expected = {"name": "_json_key", "spec": {"password": b64(json.dumps({"auths": {host: entry}}))}}
    assert gar_options(KEY, host, email=email) == expected


def test_the_key_text_is_used_verbatim() -> None:
    pretty = json.dumps(json.loads(KEY), indent=2) + "\n"
    config = json.loads(base64.b64decode(gar_options(pretty, "us-docker.pkg.dev")["spec"]["password"]))
    assert config["auths"]["us-docker.pkg.dev"]["password"] == pretty


@pytest.mark.parametrize(
    ("given", "host"),
    [
        ("us-central1", "us-central1-docker.pkg.dev"),
        ("northamerica-northeast1", "northamerica-northeast1-docker.pkg.dev"),
        ("us", "us-docker.pkg.dev"),
        ("us-central1-docker.pkg.dev", "us-central1-docker.pkg.dev"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("localhost:5000", "localhost:5000"),
        ("  asia-docker.pkg.dev ", "asia-docker.pkg.dev"),
    ],
)
def test_registry_host_is_the_auths_key(given: str, host: str) -> None:
    assert registry_host_for(given) == host
    config = json.loads(base64.b64decode(gar_options(KEY, given)["spec"]["password"]))
    assert list(config["auths"]) == [host]


@pytest.mark.parametrize(
    "bad", ["", "https://us-docker.pkg.dev", "us-docker.pkg.dev/proj/repo", "us docker", "-bad.example"]
)
def test_things_a_kubelet_could_never_match_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="registry host"):
        registry_host_for(bad)


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "empty"),
        ("{not json -----BEGIN PRIVATE KEY-----", "not valid JSON"),
        ('["a list"]', "JSON object"),
        ('{"client_email": "x@y", "private_key": ""}', "private_key"),
    ],
)
def test_a_bad_key_is_refused_without_quoting_it(key: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        gar_options(key, "us-docker.pkg.dev")
    if key:
        assert key not in str(caught.value)


def test_every_form_of_the_secret_is_registered_for_redaction() -> None:
    key = KEY.replace('"K"', '"unit-test-private-key-material"')
    options = gar_options(key, "us-docker.pkg.dev")
    config_text = base64.b64decode(options["spec"]["password"]).decode()
    auth = json.loads(config_text)["auths"]["us-docker.pkg.dev"]["auth"]
    for secret in (key, options["spec"]["password"], config_text, auth):
        masked = redact_text(f"here: {secret} :end")
        assert secret not in masked and MASK in masked


# -- models ----------------------------------------------------------------------------------


def test_integration_metadata_comes_back_as_a_list() -> None:
    integration = Integration.from_json(
        {
            "id": "i1",
            "name": "gar",
            "type": "private-registry",
            "org": "o1",
            "createdAt": "2024-01-01T00:00:00.000Z",
            "creator": "bot@x",
            "updatedAt": "2024-01-02T00:00:00.000Z",
            "url": "https://gate/api/v1/orgs/o1/integrations/i1",
            "metadata": [{"name": "provider", "value": "gcp"}, {"name": "status", "value": "ok"}, {"junk": 1}],
        }
    )
    assert integration.metadata == {"provider": "gcp", "status": "ok"}
    assert integration.provider == "gcp"
    assert (integration.org, integration.creator, integration.updated_at) == ("o1", "bot@x", "2024-01-02T00:00:00.000Z")


def test_integration_tolerates_older_spellings() -> None:
    integration = Integration.from_json(
        {
            "id": "i1",
            "name": "n",
            "type": "private-registry",
            "org": {"id": "o1", "name": "acme"},
            "createdBy": "u",
            "updateAt": "t",
            "metadata": {"provider": "gcp"},
        }
    )
    assert (integration.org, integration.creator, integration.updated_at) == ("o1", "u", "t")
    assert integration.metadata == {"provider": "gcp"}


@pytest.mark.parametrize("data", [None, [], {"name": "no id"}, {"id": 5}])
def test_an_answer_without_an_id_is_not_an_integration(data: Any) -> None:
    with pytest.raises(DataloopError):
        Integration.from_json(data)


def test_service_status_orders_entries_and_tells_pull_failures() -> None:
    status = ServiceStatus.from_json(
        "s1",
        {
            "runtimeStatus": [
                {"status": False, "reason": "ImagePullBackOff", "createdAt": "2024-05-01T10:00:02.000Z"},
                {"status": True, "createdAt": "2024-05-01T10:00:03.000Z"},
                {"status": False, "reason": "ErrImagePull", "message": "401", "createdAt": "2024-05-01T10:00:01.000Z"},
                {"status": False, "reason": "CrashLoopBackOff", "createdAt": "2024-05-01T09:00:00.000Z"},
            ]
        },
    )
    assert [e.reason for e in status.entries] == ["CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff", None]
    assert [e.pull_failed for e in status.entries] == [False, True, True, False]
    assert status.latest is not None and status.latest.status is True
    since = status.since(datetime(2024, 5, 1, 10, 0, 1, 500000, tzinfo=UTC))
    assert [e.reason for e in since] == ["ImagePullBackOff", None]
    assert ServiceStatus.from_json("s1", {}).entries == ()
    with pytest.raises(DataloopError):
        ServiceStatus.from_json("s1", {"runtimeStatus": "running"})


def test_runner_image() -> None:
    assert runner_image({"runtime": {"runnerImage": "h/p/r/i:1"}}) == "h/p/r/i:1"
    assert runner_image({"runtime": {}}) is None
    assert runner_image({}) is None


# -- errors ----------------------------------------------------------------------------------


def response(status: int, body: Any = None, *, request_id: str | None = "rid-1", text: str | None = None) -> Any:
    answer = requests.Response()
    answer.status_code = status
    answer._content = (text if text is not None else json.dumps(body) if body is not None else "").encode()
    if request_id:
        answer.headers["x-request-id"] = request_id
    return answer


@pytest.mark.parametrize(
    ("status", "kind", "base", "hint"),
    [
        (400, DataloopRejected, PermanentError, "malformed"),
        (401, DataloopUnauthorized, PermanentError, "API key"),
        (403, DataloopForbidden, PermanentError, "Admin or Owner"),
        (404, DataloopNotFound, PermanentError, "organization id and the integration id"),
        (409, DataloopConflict, PermanentError, "already exist"),
        (429, DataloopUnavailable, TransientError, "rate limiting"),
        (500, DataloopUnavailable, TransientError, "tried again later"),
        (503, DataloopUnavailable, TransientError, "tried again later"),
    ],
)
def test_errors_carry_status_message_request_id_and_what_to_do(
    status: int, kind: type[DataloopError], base: type[Exception], hint: str
) -> None:
    error = error_from_response("POST", "/orgs/o1/integrations", response(status, {"message": "the reason"}))
    assert type(error) is kind and isinstance(error, base)
    assert (error.status, error.message, error.request_id) == (status, "the reason", "rid-1")
    text = str(error)
    assert all(part in text for part in (str(status), "the reason", "x-request-id: rid-1", hint))


def test_a_404_on_a_service_points_at_the_service_id() -> None:
    error = error_from_response("GET", "/services/s1/status", response(404, {"message": "nope"}))
    assert "service id" in str(error)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (response(400, {"error": {"code": 400, "message": "google style"}}), "google style"),
        (response(401, {"error": "invalid_grant", "error_description": "Wrong email"}), "invalid_grant: Wrong email"),
        (response(502, text="<html>Bad   Gateway</html>"), "<html>Bad Gateway</html>"),
        (response(500, text=""), None),
    ],
)
def test_other_error_body_shapes(answer: Any, message: str | None) -> None:
    error = error_from_response("GET", "/orgs/o/integrations", answer)
    assert error.message == message


def test_an_error_echoing_a_secret_is_masked() -> None:
    options = gar_options(KEY.replace('"K"', '"another-private-key-for-echo"'), "us-docker.pkg.dev")
    echo = f"invalid options {json.dumps(options)}"
    error = error_from_response("POST", "/orgs/o/integrations", response(400, {"message": echo}))
    assert options["spec"]["password"] not in f"{error}{error.message}{error!r}"
    assert "invalid options" in str(error)


def test_a_missing_request_id_is_said_plainly() -> None:
    assert "x-request-id: none" in str(error_from_response("GET", "/x", response(403, {}, request_id=None)))


# -- token timing ----------------------------------------------------------------------------


def test_jwt_claims_are_read_without_verification() -> None:
    assert jwt_claims(jwt_with({"exp": 10, "email": "a"})) == {"exp": 10, "email": "a"}
    assert jwt_claims("not-a-jwt") is None
    assert jwt_claims("a.!!!.c") is None
    assert jwt_claims(f"a.{base64.urlsafe_b64encode(b'[1]').decode()}.c") is None


def test_renewal_is_a_minute_ahead_for_long_tokens_and_a_quarter_for_short_ones() -> None:
    assert renew_at(jwt_with({"iat": 0, "exp": 3600}), obtained_at=0) == 3540
    assert renew_at(jwt_with({"iat": 100, "exp": 102}), obtained_at=100) == 101.5
    assert renew_at(jwt_with({"exp": 1000}), obtained_at=920) == 980  # no iat: life counted from receipt
    assert renew_at(jwt_with({"email": "x"}), obtained_at=0) is None
    assert renew_at("opaque", obtained_at=0) is None


# -- construction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"api_key": "k", "username": "u", "password": "p"},
        {"username": "u"},
        {"api_key": "k", "base_url": "gate.dataloop.ai/api/v1"},
    ],
)
def test_the_client_needs_exactly_one_identity_and_a_url(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        DataloopClient(**kwargs)


def test_the_token_endpoint_lives_at_the_gateway_origin() -> None:
    assert gate_origin("https://gate.dataloop.ai/api/v1") == "https://gate.dataloop.ai"
    assert gate_origin("http://127.0.0.1:8080/api/v1/") == "http://127.0.0.1:8080"
    client = DataloopClient(api_key="eyJ.a.b", base_url="https://gate.dataloop.ai/api/v1/")
    assert (client.base_url, client.origin) == ("https://gate.dataloop.ai/api/v1", "https://gate.dataloop.ai")
    assert "eyJ.a.b" not in repr(client)
    client.close()
