"""The real Dataloop client against the gateway stand-in, asserted at the wire."""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import pytest

from localcloud.wsgi import Fault, ServerThread
from shared.adapters.dataloop.client import DataloopClient
from shared.core.errors import PermanentError, TransientError
from shared.model.dataloop import (
    DataloopConflict,
    DataloopForbidden,
    DataloopNotFound,
    DataloopRejected,
    DataloopUnauthorized,
    DataloopUnavailable,
    IntegrationNameTaken,
    gar_options,
)
from tests.fixtures.dataloop import BOT_EMAIL, DataloopSandbox

pytestmark = pytest.mark.wire

REQUEST_ID = re.compile(r"x-request-id: [0-9a-f-]{36}")
T = TypeVar("T")


def key_file(key_id: str = "k1") -> str:
    """A key file as IAM hands it out: indented JSON with a PEM private key."""
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "proj",
            "private_key_id": key_id,
            "private_key": f"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC{key_id}xyz\n-----END PRIVATE KEY-----\n",
            "client_email": "puller@proj.iam.gserviceaccount.com",
            "client_id": "1234567890",
        },
        indent=2,
    )


def docker_config(options: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(options["spec"]["password"], validate=True))


def api_calls(sandbox: DataloopSandbox, method: str, suffix: str) -> list[dict[str, Any]]:
    """Calls that reached the Instrumented layer (faulted ones included)."""
    return [c for c in sandbox.gateway.instrumented.call_log() if c["method"] == method and c["path"].endswith(suffix)]


def received(sandbox: DataloopSandbox, method: str, suffix: str) -> list[dict[str, Any]]:
    """Requests the gateway's API handled, with headers and bodies."""
    return [r for r in sandbox.gateway.received if r["method"] == method and r["path"].endswith(suffix)]


def eventually(probe: Callable[[], T | None], timeout: float = 5.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


# -- integrations: the exact wire format ---------------------------------------------


def test_create_sends_dtlpy_body_with_the_docker_config_for_the_host(
    dataloop: DataloopSandbox, dataloop_client: DataloopClient
) -> None:
    key = key_file()
    options = gar_options(key, "us-central1-docker.pkg.dev", email="ops@example.com")

    created = dataloop_client.integrations(dataloop.org_id).create("gar-prod", options)

    [request] = received(dataloop, "POST", "/integrations")
    assert request["path"] == f"/api/v1/orgs/{dataloop.org_id}/integrations"
    assert request["query"] == ""
    assert request["authorization"] == f"Bearer {dataloop.admin_key}"
    assert request["json"] == {
        "type": "private-registry",
        "name": "gar-prod",
        "metadata": {"provider": "gcp"},
        "options": {"name": "_json_key", "spec": {"password": options["spec"]["password"]}},
    }
    auths = docker_config(request["json"]["options"])["auths"]
    assert list(auths) == ["us-central1-docker.pkg.dev"]
    entry = auths["us-central1-docker.pkg.dev"]
    assert entry["username"] == "_json_key"
    assert entry["password"] == key  # verbatim, indentation and all
    assert base64.b64decode(entry["auth"]).decode() == f"_json_key:{key}"
    assert entry["email"] == "ops@example.com"
    # The answer is what the API returns: no options, metadata as a list, turned into a model.
    assert created.name == "gar-prod"
    assert created.type == "private-registry"
    assert created.org == dataloop.org_id
    assert created.metadata == {"provider": "gcp"}
    assert created.creator == "admin@example.com"
    assert created.url and created.url.endswith(f"/integrations/{created.id}")


def test_update_patches_the_org_collection_with_the_id_in_the_body(
    dataloop: DataloopSandbox, dataloop_client: DataloopClient
) -> None:
    integrations = dataloop_client.integrations(dataloop.org_id)
    created = integrations.create("gar", gar_options(key_file("old"), "europe-west4-docker.pkg.dev"))
    new_options = gar_options(key_file("new"), "europe-west4-docker.pkg.dev")
    time.sleep(0.002)  # so updatedAt (milliseconds) moves

    updated = integrations.update_credentials(created.id, new_options)

    [request] = received(dataloop, "PATCH", "/integrations")
    assert request["path"] == f"/api/v1/orgs/{dataloop.org_id}/integrations"
    assert request["query"] == "reloadServices=true"
    assert request["json"] == {
        "integrationId": created.id,
        "credentials": {"options": new_options, "type": "private-registry"},
    }
    password = docker_config(request["json"]["credentials"]["options"])["auths"]["europe-west4-docker.pkg.dev"][
        "password"
    ]
    assert json.loads(password)["private_key_id"] == "new"
    [stored] = dataloop.gateway.stored_integrations(dataloop.org_id)
    assert stored["options"] == new_options
    assert dataloop.gateway.reloads == [True]
    assert updated.id == created.id and updated.updated_at != created.updated_at


def test_get_list_find_and_delete(dataloop: DataloopSandbox, dataloop_client: DataloopClient) -> None:
    integrations = dataloop_client.integrations(dataloop.org_id)
    first = integrations.create("alpha", gar_options(key_file(), "us-docker.pkg.dev"))
    second = integrations.create("beta", gar_options(key_file(), "us"))

    assert integrations.get(first.id) == first
    assert {i.name for i in integrations.list()} == {"alpha", "beta"}
    assert integrations.find_by_name("beta") == second
    assert integrations.find_by_name("gamma") is None
    assert received(dataloop, "GET", f"/integrations/{first.id}")[0]["path"] == (
        f"/api/v1/orgs/{dataloop.org_id}/integrations/{first.id}"
    )

    assert integrations.delete(first.id) is True
    assert integrations.delete(first.id) is False  # already gone: a repeated delete is harmless
    with pytest.raises(DataloopNotFound) as caught:
        integrations.get(first.id)
    assert "integration id" in str(caught.value)
    assert [i.id for i in integrations.list()] == [second.id]


def test_ensure_twice_leaves_one_integration_even_where_duplicates_are_allowed(
    dataloop: DataloopSandbox, dataloop_client: DataloopClient
) -> None:
    assert dataloop.gateway.allow_duplicate_names  # the API would happily make a second one
    integrations = dataloop_client.integrations(dataloop.org_id)

    one = integrations.ensure("gar", gar_options(key_file("a"), "us-central1-docker.pkg.dev"))
    two = integrations.ensure("gar", gar_options(key_file("b"), "us-central1-docker.pkg.dev"), owned_id=one.id)

    assert one.id == two.id
    [stored] = dataloop.gateway.stored_integrations(dataloop.org_id)
    auths = docker_config(stored["options"])["auths"]
    assert json.loads(auths["us-central1-docker.pkg.dev"]["password"])["private_key_id"] == "b"
    assert len(api_calls(dataloop, "POST", "/integrations")) == 1
    assert len(api_calls(dataloop, "PATCH", "/integrations")) == 1


def test_ensure_from_threads_creates_once(dataloop: DataloopSandbox, dataloop_client: DataloopClient) -> None:
    integrations = dataloop_client.integrations(dataloop.org_id)
    options = gar_options(key_file(), "us-central1-docker.pkg.dev")
    # Calls of one process for one integration: each may take what another made (adopt).
    threads = [
        threading.Thread(target=integrations.ensure, args=("gar", options), kwargs={"adopt": True}) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(dataloop.gateway.stored_integrations(dataloop.org_id)) == 1


def test_ensure_never_updates_an_integration_of_the_name_it_does_not_own(
    dataloop: DataloopSandbox, dataloop_client: DataloopClient
) -> None:
    integrations = dataloop_client.integrations(dataloop.org_id)
    theirs = integrations.create("gar", gar_options(key_file("theirs"), "us-central1-docker.pkg.dev"))
    dataloop.gateway.instrumented.reset()

    with pytest.raises(IntegrationNameTaken) as taken:
        integrations.ensure("gar", gar_options(key_file("ours"), "us-central1-docker.pkg.dev"), owned_id="another-id")

    assert taken.value.code == "integration-name-taken" and theirs.id in taken.value.reason
    assert '"adopt_integration": true' in taken.value.reason
    assert api_calls(dataloop, "PATCH", "/integrations") == [] and api_calls(dataloop, "POST", "/integrations") == []
    adopted = integrations.ensure("gar", gar_options(key_file("ours"), "us-central1-docker.pkg.dev"), adopt=True)
    assert adopted.id == theirs.id and len(api_calls(dataloop, "PATCH", "/integrations")) == 1


def test_ensure_reconciles_a_409_where_the_api_refuses_duplicates(
    make_dataloop: Callable[..., DataloopSandbox],
) -> None:
    sandbox = make_dataloop(allow_duplicate_names=False)
    with sandbox.client() as client:
        integrations = client.integrations(sandbox.org_id)
        existing = integrations.create("gar", gar_options(key_file("a"), "us-central1-docker.pkg.dev"))
        with pytest.raises(DataloopConflict):
            integrations.create("gar", gar_options(key_file("b"), "us-central1-docker.pkg.dev"))
        # A find that misses (e.g. another process created it meanwhile) meets the 409 and recovers.
        sandbox.gateway.instrumented.inject(Fault(path="/integrations$", method="GET", status=200, body=[]))
        ensured = integrations.ensure(
            "gar", gar_options(key_file("c"), "us-central1-docker.pkg.dev"), owned_id=existing.id
        )
        # Whose the clashing integration is, the recorded id says: not this caller's, no update.
        sandbox.gateway.instrumented.inject(Fault(path="/integrations$", method="GET", status=200, body=[]))
        with pytest.raises(IntegrationNameTaken):
            integrations.ensure("gar", gar_options(key_file("d"), "us-central1-docker.pkg.dev"))
    assert ensured.id == existing.id
    assert len(sandbox.gateway.stored_integrations()) == 1


class _AnswerLate:
    """Lets the gateway act on a create, then holds the answer past the client's timeout."""

    def __init__(self, app: Any, delay: float) -> None:
        self.app, self.delay = app, delay

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = list(self.app(environ, start_response))
        if environ["REQUEST_METHOD"] == "POST" and environ["PATH_INFO"].endswith("/integrations"):
            time.sleep(self.delay)
        return body


def test_a_create_whose_answer_is_lost_is_not_repeated_and_ensure_finds_it(dataloop: DataloopSandbox) -> None:
    with (
        ServerThread(_AnswerLate(dataloop.gateway, delay=1.0)) as slow,
        DataloopClient(api_key=dataloop.admin_key, base_url=f"{slow.url}/api/v1", timeout=0.3, retries=2) as client,
    ):
        integrations = client.integrations(dataloop.org_id)
        with pytest.raises(DataloopUnavailable):
            integrations.create("lost", gar_options(key_file(), "us-central1-docker.pkg.dev"))
        assert len(api_calls(dataloop, "POST", "/integrations")) == 1  # a read timeout is not retried

        ensured = integrations.ensure("gar", gar_options(key_file(), "us-central1-docker.pkg.dev"))
    names = [i["public"]["name"] for i in dataloop.gateway.stored_integrations()]
    assert sorted(names) == ["gar", "lost"]  # the lost create happened once; ensure found its own
    assert ensured.name == "gar"
    assert len(api_calls(dataloop, "POST", "/integrations")) == 2
    assert len(api_calls(dataloop, "PATCH", "/integrations")) == 1


def test_a_create_answered_503_is_not_repeated(dataloop: DataloopSandbox, dataloop_client: DataloopClient) -> None:
    dataloop.gateway.instrumented.inject(
        Fault(path="/integrations$", method="POST", status=503, body={"message": "upstream down"}, count=5)
    )
    with pytest.raises(DataloopUnavailable) as caught:
        dataloop_client.integrations(dataloop.org_id).create("gar", gar_options(key_file(), "us-docker.pkg.dev"))
    assert len(api_calls(dataloop, "POST", "/integrations")) == 1
    assert caught.value.status == 503 and "upstream down" in str(caught.value)


# -- bot user: password login and refresh --------------------------------------------


def test_bot_login_posts_credentials_to_the_origin_token_endpoint(
    dataloop: DataloopSandbox,
) -> None:
    with dataloop.bot_client() as client:
        client.integrations(dataloop.org_id).list()
        client.integrations(dataloop.org_id).list()

    [login] = received(dataloop, "POST", "/token")
    assert login["path"] == "/token"  # at the gateway origin, not under /api/v1
    assert login["query"] == "default"
    assert login["json"] == {"username": BOT_EMAIL, "password": dataloop.bot_password, "type": "user_credentials"}
    assert dataloop.gateway.grants == [("user_credentials", True)]  # the token is reused while fresh
    calls = received(dataloop, "GET", "/integrations")
    assert len(calls) == 2 and all(c["authorization"].startswith("Bearer eyJ") for c in calls)


def test_bot_token_is_refreshed_before_it_expires(make_dataloop: Callable[..., DataloopSandbox]) -> None:
    sandbox = make_dataloop(token_lifetime_seconds=2.0)
    with sandbox.bot_client() as client:
        integrations = client.integrations(sandbox.org_id)
        integrations.list()
        time.sleep(1.6)  # past exp - min(60 s, life/4) = 1.5 s, before exp = 2 s
        integrations.list()

    assert sandbox.gateway.grants == [("user_credentials", True), ("refresh_token", True)]
    [refresh] = [r for r in received(sandbox, "POST", "/token") if r["json"]["type"] == "refresh_token"]
    assert set(refresh["json"]) == {"type", "refresh_token"}
    first, second = (r["authorization"] for r in received(sandbox, "GET", "/integrations"))
    assert first != second


def test_a_refused_refresh_falls_back_to_password_login(make_dataloop: Callable[..., DataloopSandbox]) -> None:
    sandbox = make_dataloop(token_lifetime_seconds=2.0)
    with sandbox.bot_client() as client:
        integrations = client.integrations(sandbox.org_id)
        integrations.list()
        sandbox.gateway.revoke_refresh_tokens(BOT_EMAIL)
        time.sleep(1.6)
        integrations.list()
    assert sandbox.gateway.grants == [
        ("user_credentials", True),
        ("refresh_token", False),
        ("user_credentials", True),
    ]


def test_a_revoked_bot_token_is_replaced_once_and_the_call_repeated(dataloop: DataloopSandbox) -> None:
    with dataloop.bot_client() as client:
        integrations = client.integrations(dataloop.org_id)
        integrations.list()
        time.sleep(0.01)
        dataloop.gateway.revoke_sessions(BOT_EMAIL)
        time.sleep(0.01)
        assert integrations.list() == []
    assert dataloop.gateway.grants == [("user_credentials", True), ("user_credentials", True)]
    assert len(api_calls(dataloop, "GET", "/integrations")) == 3  # ok, 401, ok after login


def test_threads_sharing_a_bot_client_log_in_once(dataloop: DataloopSandbox) -> None:
    with dataloop.bot_client() as client:
        integrations = client.integrations(dataloop.org_id)
        threads = [threading.Thread(target=integrations.list) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    assert dataloop.gateway.grants == [("user_credentials", True)]
    assert len(received(dataloop, "GET", "/integrations")) == 6


def test_wrong_bot_password_is_a_permanent_actionable_error(dataloop: DataloopSandbox) -> None:
    with (
        dataloop.client(username=BOT_EMAIL, password="not-the-password-at-all") as client,
        pytest.raises(DataloopUnauthorized) as caught,
    ):
        client.integrations(dataloop.org_id).list()
    text = str(caught.value)
    assert "401" in text and "Wrong email or password." in text and "username and password" in text
    assert REQUEST_ID.search(text)
    assert "not-the-password-at-all" not in text
    assert len(api_calls(dataloop, "POST", "/token")) == 1


# -- retries ---------------------------------------------------------------------------


def test_429_is_retried_after_retry_after(dataloop: DataloopSandbox, dataloop_client: DataloopClient) -> None:
    dataloop.gateway.instrumented.inject(
        Fault(path="/integrations$", method="GET", status=429, headers={"Retry-After": "1"}, body={"message": "slow"})
    )
    started = time.monotonic()
    assert dataloop_client.integrations(dataloop.org_id).list() == []
    assert time.monotonic() - started >= 0.95
    assert len(api_calls(dataloop, "GET", "/integrations")) == 2


def test_a_create_is_retried_after_429(dataloop: DataloopSandbox, dataloop_client: DataloopClient) -> None:
    dataloop.gateway.instrumented.inject(
        Fault(path="/integrations$", method="POST", status=429, headers={"Retry-After": "0"}, body={"message": "x"})
    )
    dataloop_client.integrations(dataloop.org_id).create("gar", gar_options(key_file(), "us-docker.pkg.dev"))
    assert len(api_calls(dataloop, "POST", "/integrations")) == 2
    assert len(dataloop.gateway.stored_integrations()) == 1


def test_503_is_retried_with_backoff(dataloop: DataloopSandbox, dataloop_client: DataloopClient) -> None:
    dataloop.gateway.instrumented.inject(
        Fault(path="/integrations$", method="GET", status=503, body={"message": "busy"}, count=2)
    )
    assert dataloop_client.integrations(dataloop.org_id).list() == []
    assert len(api_calls(dataloop, "GET", "/integrations")) == 3


def test_persistent_503_becomes_a_transient_error_with_status_message_and_request_id(
    dataloop: DataloopSandbox, dataloop_client: DataloopClient
) -> None:
    dataloop.gateway.instrumented.inject(
        Fault(path="/integrations$", method="GET", status=503, body={"message": "maintenance"}, count=10)
    )
    with pytest.raises(DataloopUnavailable) as caught:
        dataloop_client.integrations(dataloop.org_id).list()
    error = caught.value
    assert isinstance(error, TransientError)
    assert error.status == 503 and error.message == "maintenance"
    assert error.request_id and error.request_id in str(error)
    assert "503" in str(error) and "maintenance" in str(error)
    assert len(api_calls(dataloop, "GET", "/integrations")) == 3  # first try + 2 retries


def test_an_unreachable_gateway_is_transient() -> None:
    with ServerThread(lambda environ, start_response: []) as server:
        url = server.url
    with (
        DataloopClient(api_key="eyJx.eyJ5.z", base_url=f"{url}/api/v1", retries=1, backoff_factor=0.01) as client,
        pytest.raises(DataloopUnavailable) as caught,
    ):
        client.integrations("org").list()
    assert caught.value.status is None and "no answer" in str(caught.value)


@pytest.mark.parametrize("status", [400, 403, 404])
def test_client_errors_are_not_retried(dataloop: DataloopSandbox, dataloop_client: DataloopClient, status: int) -> None:
    dataloop.gateway.instrumented.inject(
        Fault(path="/integrations$", method="GET", status=status, body={"message": f"injected {status}"}, count=5)
    )
    with pytest.raises(DataloopRejected) as caught:
        dataloop_client.integrations(dataloop.org_id).list()
    assert isinstance(caught.value, PermanentError) and caught.value.status == status
    assert f"injected {status}" in str(caught.value)
    assert len(api_calls(dataloop, "GET", "/integrations")) == 1


# -- errors that say what to do -----------------------------------------------------------


def test_a_member_may_not_create_integrations(dataloop: DataloopSandbox) -> None:
    with dataloop.client(api_key=dataloop.member_key) as client, pytest.raises(DataloopForbidden) as caught:
        client.integrations(dataloop.org_id).create("gar", gar_options(key_file(), "us-docker.pkg.dev"))
    text = str(caught.value)
    assert "403" in text and "org Admin or Owner required" in text  # Dataloop's message
    assert "needs the Admin or Owner role" in text  # our hint
    assert REQUEST_ID.search(text)
    assert len(api_calls(dataloop, "POST", "/integrations")) == 1
    assert dataloop.gateway.stored_integrations() == []


def test_a_revoked_api_key_is_refused_once(dataloop: DataloopSandbox, dataloop_client: DataloopClient) -> None:
    dataloop.gateway.revoke_api_key(dataloop.admin_key)
    with pytest.raises(DataloopUnauthorized) as caught:
        dataloop_client.integrations(dataloop.org_id).list()
    assert "API key" in str(caught.value) and "401" in str(caught.value)
    assert len(api_calls(dataloop, "GET", "/integrations")) == 1


def test_a_wrong_org_is_reported_as_such(dataloop_client: DataloopClient) -> None:
    with pytest.raises(DataloopNotFound) as caught:
        dataloop_client.integrations("0123456789abcdef01234567").list()
    assert "organization id" in str(caught.value) and "Organization not found" in str(caught.value)


def test_every_answer_has_a_request_id_and_errors_a_message(dataloop: DataloopSandbox) -> None:
    import requests

    answer = requests.get(f"{dataloop.api_url}/orgs/{dataloop.org_id}/integrations", timeout=5)
    assert answer.status_code == 401
    assert answer.json() == {"message": "Missing authorization token"}
    assert re.fullmatch(r"[0-9a-f-]{36}", answer.headers["x-request-id"])
    bad = requests.get(
        f"{dataloop.api_url}/orgs/{dataloop.org_id}/integrations",
        headers={"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJlbWFpbCI6IngifQ.forged"},
        timeout=5,
    )
    assert bad.status_code == 401 and "message" in bad.json()
    login = requests.post(f"{dataloop.url}/token?default", json={"type": "password"}, timeout=5)
    assert login.status_code == 400 and "x-request-id" in login.headers


# -- secrets stay out of logs and errors --------------------------------------------------


def test_no_key_material_reaches_logs_or_exceptions(
    dataloop: DataloopSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = key_file("secret-key")
    options = gar_options(key, "us-central1-docker.pkg.dev")
    auth = docker_config(options)["auths"]["us-central1-docker.pkg.dev"]["auth"]
    errors: list[BaseException] = []
    with dataloop.bot_client() as client:
        integrations = client.integrations(dataloop.org_id)
        created = integrations.ensure("gar", options)
        integrations.ensure("gar", options, owned_id=created.id)
        # A gateway that echoes what it was sent into its error message.
        echo = f"bad options {options['spec']['password']} for {key}"
        dataloop.gateway.instrumented.inject(
            Fault(path="/integrations$", method="PATCH", status=400, body={"message": echo})
        )
        with pytest.raises(DataloopRejected) as caught:
            integrations.update_credentials(created.id, options)
        errors.append(caught.value)
        with dataloop.client(api_key=dataloop.member_key) as member, pytest.raises(DataloopForbidden) as denied:
            member.integrations(dataloop.org_id).create("x", options)
        errors.append(denied.value)
    secrets = [
        key,
        json.loads(key)["private_key"],
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCsecret-keyxyz",
        options["spec"]["password"],
        auth,
        dataloop.bot_password,
        dataloop.admin_key,
        dataloop.member_key,
    ]
    seen = caplog.text + "".join(f"{e}{e!r}{e.args}" for e in errors)
    assert "bad options" in seen  # the error itself did get through
    for secret in secrets:
        assert secret not in seen


# -- services: update, restart, and a kubelet that really pulls -------------------------


class FakeRegistry:
    """A registry v2 in miniature: bearer challenge, a token endpoint taking ``_json_key``, one manifest."""

    MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}).encode()
    DIGEST = "sha256:" + "c0" * 32

    def __init__(self, accepted_keys: Iterable[str]) -> None:
        self.accepted = set(accepted_keys)
        self.tokens: set[str] = set()
        self.seen: list[tuple[str, str, str | None]] = []
        self.url = ""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path, auth = environ["PATH_INFO"], environ.get("HTTP_AUTHORIZATION")
        self.seen.append((environ["REQUEST_METHOD"], path, auth))
        if path == "/token":
            scheme, _, value = (auth or "").partition(" ")
            user, _, password = base64.b64decode(value or "").decode().partition(":") if value else ("", "", "")
            if scheme != "Basic" or user != "_json_key" or password not in self.accepted:
                return self._answer(start_response, "401 Unauthorized", b'{"errors":[{"code":"UNAUTHORIZED"}]}')
            token = f"t{len(self.tokens)}"
            self.tokens.add(token)
            return self._answer(start_response, "200 OK", json.dumps({"token": token}).encode())
        if path == "/v2/proj/repo/canary/manifests/v1":
            if auth and auth.startswith("Bearer ") and auth[7:] in self.tokens:
                headers = [("Docker-Content-Digest", self.DIGEST)]
                return self._answer(start_response, "200 OK", self.MANIFEST, headers)
            challenge = f'Bearer realm="{self.url}/token",service="fake",scope="repository:proj/repo/canary:pull"'
            return self._answer(start_response, "401 Unauthorized", b"{}", [("WWW-Authenticate", challenge)])
        return self._answer(start_response, "404 Not Found", b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')

    @staticmethod
    def _answer(
        start_response: Callable[..., Any], status: str, body: bytes, headers: list[tuple[str, str]] | None = None
    ) -> list[bytes]:
        start_response(status, [("Content-Type", "application/json"), *(headers or [])])
        return [body]


@pytest.fixture
def registry() -> Iterable[tuple[FakeRegistry, str]]:
    key = key_file("good")
    fake = FakeRegistry([key])
    server = ServerThread(fake).start()
    fake.url = server.url
    yield fake, key
    threading.Thread(target=server.stop, daemon=True).start()  # shutdown waits 0.5 s; don't


def _canary(sandbox: DataloopSandbox, host: str) -> str:
    sandbox.gateway.insecure_registries.add(host)
    sandbox.gateway.pull_delay_seconds = 0.3
    sandbox.gateway.pull_backoff_seconds = 0.05
    return sandbox.gateway.add_service(sandbox.org_id, "canary", "docker.io/library/busybox:1")


def _settled(client: DataloopClient, service_id: str, since: datetime) -> Callable[[], Any]:
    def probe() -> Any:
        entries = client.services.status(service_id).since(since)
        done = [e for e in entries if e.status or e.reason == "ImagePullBackOff"]
        return entries if done else None

    return probe


def test_set_runner_image_patches_the_full_service(dataloop: DataloopSandbox, dataloop_client: DataloopClient) -> None:
    service_id = dataloop.gateway.add_service(dataloop.org_id, "canary", "docker.io/library/busybox:1")
    before = dataloop_client.services.get(service_id)

    after = dataloop_client.services.set_runner_image(service_id, "us-docker.pkg.dev/p/r/i@sha256:" + "ab" * 32)

    [patch] = received(dataloop, "PATCH", f"/services/{service_id}")
    expected = json.loads(json.dumps(before))
    expected["runtime"]["runnerImage"] = "us-docker.pkg.dev/p/r/i@sha256:" + "ab" * 32
    assert patch["json"] == expected  # the whole service goes back, image changed
    assert after["runtime"]["runnerImage"] == expected["runtime"]["runnerImage"]
    assert before["runtime"]["runnerImage"] == "docker.io/library/busybox:1"  # the caller's copy is untouched


def test_restart_pulls_with_the_integration_for_the_image_host(
    dataloop: DataloopSandbox, dataloop_client: DataloopClient, registry: tuple[FakeRegistry, str]
) -> None:
    fake, key = registry
    host = fake.url.removeprefix("http://")
    service_id = _canary(dataloop, host)
    integration = dataloop_client.integrations(dataloop.org_id).ensure("gar", gar_options(key, host))
    dataloop_client.services.set_runner_image(service_id, f"{host}/proj/repo/canary:v1")
    since = datetime.now(UTC)

    dataloop_client.services.restart(service_id)

    [restart] = received(dataloop, "POST", f"/services/{service_id}/restart")
    # dtlpy's services.restart posts json_req={} (docs/external-apis.md §5.4); whether the gateway
    # accepts a restart without a body is not known, so the same body is sent.
    assert (restart["body"], restart["content_type"]) == (b"{}", "application/json")
    assert dataloop_client.services.status(service_id).since(since) == ()  # the platform takes its time
    entries = eventually(_settled(dataloop_client, service_id, since))
    assert [(e.status, e.reason) for e in entries] == [(True, None)]
    [pull] = dataloop.gateway.pulls
    assert pull.ok and pull.integration_id == integration.id
    token_calls = [s for s in fake.seen if s[1] == "/token"]
    assert token_calls and base64.b64decode(cast(str, token_calls[0][2]).split()[1]).decode() == f"_json_key:{key}"
    assert cast(str, fake.seen[-1][2]).startswith("Bearer ")


def test_a_refused_key_shows_as_err_image_pull_then_image_pull_backoff(
    dataloop: DataloopSandbox, dataloop_client: DataloopClient, registry: tuple[FakeRegistry, str]
) -> None:
    fake, _ = registry
    host = fake.url.removeprefix("http://")
    service_id = _canary(dataloop, host)
    dataloop_client.integrations(dataloop.org_id).ensure("gar", gar_options(key_file("revoked"), host))
    dataloop_client.services.set_runner_image(service_id, f"{host}/proj/repo/canary:v1")
    since = datetime.now(UTC)

    dataloop_client.services.restart(service_id)

    entries = eventually(_settled(dataloop_client, service_id, since))
    assert [(e.status, e.reason) for e in entries] == [(False, "ErrImagePull"), (False, "ImagePullBackOff")]
    assert all(e.pull_failed for e in entries)
    assert "401" in (entries[0].message or "")
    assert "revoked" not in json.dumps(dataloop.gateway.runtime_status(service_id))


def test_an_auths_key_other_than_the_image_host_is_never_presented(
    dataloop: DataloopSandbox, dataloop_client: DataloopClient, registry: tuple[FakeRegistry, str]
) -> None:
    fake, key = registry
    host = fake.url.removeprefix("http://")
    service_id = _canary(dataloop, host)
    # The right key filed under the host without its port: a kubelet does not match it.
    dataloop_client.integrations(dataloop.org_id).ensure("gar", gar_options(key, "127.0.0.1"))
    dataloop_client.services.set_runner_image(service_id, f"{host}/proj/repo/canary:v1")
    since = datetime.now(UTC)

    dataloop_client.services.restart(service_id)

    entries = eventually(_settled(dataloop_client, service_id, since))
    assert entries[-1].reason == "ImagePullBackOff"
    assert {p.integration_id for p in dataloop.gateway.pulls} == {None}  # pulled anonymously
    assert all(s[2] is None for s in fake.seen if s[1] == "/token")


def test_gar_host_names_are_played_by_a_local_registry_and_fixing_the_key_recovers(
    dataloop: DataloopSandbox, dataloop_client: DataloopClient, registry: tuple[FakeRegistry, str]
) -> None:
    fake, key = registry
    gar = "us-central1-docker.pkg.dev"
    service_id = _canary(dataloop, gar)
    dataloop.gateway.registries[gar] = fake.url
    integrations = dataloop_client.integrations(dataloop.org_id)
    stale = integrations.ensure("gar", gar_options(key_file("stale"), "us-central1"))
    dataloop_client.services.set_runner_image(service_id, f"{gar}/proj/repo/canary:v1")
    since = datetime.now(UTC)
    dataloop_client.services.restart(service_id)
    assert eventually(_settled(dataloop_client, service_id, since))[-1].reason == "ImagePullBackOff"

    integrations.ensure("gar", gar_options(key, gar), owned_id=stale.id)
    since = datetime.now(UTC)
    dataloop_client.services.restart(service_id)

    entries = eventually(_settled(dataloop_client, service_id, since))
    assert entries[-1].status is True
    assert len(dataloop.gateway.stored_integrations()) == 1


def test_unknown_service_is_not_found(dataloop_client: DataloopClient) -> None:
    with pytest.raises(DataloopNotFound) as caught:
        dataloop_client.services.restart("0123456789abcdef01234567")
    assert "service id" in str(caught.value)


def test_the_kubelet_pulls_from_the_real_local_registry_until_the_key_is_revoked(
    dataloop: DataloopSandbox,
    dataloop_client: DataloopClient,
    local_registry: Any,
    registry_image: Any,
    registry_keys: Any,
) -> None:
    """The same handshake against Debian's docker-registry and its GAR-style token endpoint."""
    key = registry_keys.new_key()
    service_id = _canary(dataloop, local_registry.host)
    dataloop_client.integrations(dataloop.org_id).ensure("gar", gar_options(key.json_text, local_registry.host))
    dataloop_client.services.set_runner_image(service_id, str(registry_image.by_digest))
    since = datetime.now(UTC)
    dataloop_client.services.restart(service_id)
    assert eventually(_settled(dataloop_client, service_id, since))[-1].status is True

    registry_keys.revoke(key)
    since = datetime.now(UTC)
    dataloop_client.services.restart(service_id)

    entries = eventually(_settled(dataloop_client, service_id, since))
    assert [(e.status, e.reason) for e in entries] == [(False, "ErrImagePull"), (False, "ImagePullBackOff")]
