"""RegistryClient's decisions, over a scripted transport: challenges, caching, errors.

The wire tests show the client works with a real registry; these pin down the cases a
real registry will not produce on demand (a realm that moves, a 200 without digest, OAuth
error bodies, Basic challenges) and the retry/timeout policy of ``shared.adapters.http``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, cast

import pytest
import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from requests.structures import CaseInsensitiveDict

from shared.adapters.http import CappedRetry, TimeoutHTTPAdapter, build_retry, build_session
from shared.adapters.registry import (
    MANIFEST_ACCEPT,
    Challenge,
    ManifestRef,
    RegistryClient,
    RegistryCredential,
    parse_challenges,
)
from shared.core.errors import CredentialsRefused, DigestMismatch, ImageNotFound, PermanentError, RegistryUnavailable
from shared.core.redaction import redact_text
from shared.model.images import RegistryImage

HOST = "europe-west1-docker.pkg.dev"
REALM = f"https://{HOST}/v2/token"
DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32
IMAGE = RegistryImage(HOST, "proj", "repo", "app", tag="v1", digest=DIGEST)
BY_TAG = RegistryImage(HOST, "proj", "repo", "app", tag="v1")
KEY = {
    "type": "service_account",
    "project_id": "proj",
    "private_key_id": "0123456789abcdef0123456789abcdef01234567",
    "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n",
    "client_email": "puller@proj.iam.gserviceaccount.com",
    "client_id": "123456789012345678901",
}
KEY_TEXT = json.dumps(KEY)
CHALLENGE = f'Bearer realm="{REALM}",service="{HOST}",scope="repository:proj/repo/app:pull"'


def respond(status: int, *, headers: Mapping[str, str] | None = None, body: Any = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers = CaseInsensitiveDict(headers or {})
    if body is not None:
        response._content = json.dumps(body).encode() if not isinstance(body, bytes) else body
        response.headers.setdefault("Content-Type", "application/json")
    else:
        response._content = b""
    return response


def challenge(header: str = CHALLENGE) -> requests.Response:
    return respond(401, headers={"WWW-Authenticate": header}, body={"errors": [{"code": "UNAUTHORIZED"}]})


def token(value: str = "tok-1", **extra: Any) -> requests.Response:
    return respond(200, body={"token": value, **extra})


def manifest(digest: str = DIGEST, media_type: str = "application/vnd.oci.image.index.v1+json") -> requests.Response:
    return respond(200, headers={"Docker-Content-Digest": digest, "Content-Type": media_type})


class ScriptedTransport(BaseAdapter):
    """Answers requests from a script, in order, and records what was asked."""

    def __init__(self, *answers: requests.Response) -> None:
        super().__init__()
        self.answers = list(answers)
        self.requests: list[requests.PreparedRequest] = []
        self.timeouts: list[Any] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.requests.append(request)
        self.timeouts.append(kwargs.get("timeout"))
        if not self.answers:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        response = self.answers.pop(0)
        response.request, response.url = request, request.url or ""
        return response

    def close(self) -> None:
        pass

    def then(self, *answers: requests.Response) -> ScriptedTransport:
        self.answers.extend(answers)
        return self

    @property
    def calls(self) -> list[tuple[str, str]]:
        return [(r.method or "", (r.url or "").split("?", 1)[0]) for r in self.requests]


def client_over(transport: ScriptedTransport, **kwargs: Any) -> RegistryClient:
    session = requests.Session()
    session.mount("https://", transport)
    session.mount("http://", transport)
    return RegistryClient(session=session, **kwargs)


@pytest.fixture
def credential() -> RegistryCredential:
    return RegistryCredential.from_key_file(KEY_TEXT)


# -- challenges -----------------------------------------------------------------------------------


def test_parses_a_gar_challenge():
    [parsed] = parse_challenges(CHALLENGE)
    assert parsed == Challenge("bearer", {"realm": REALM, "service": HOST, "scope": "repository:proj/repo/app:pull"})


def test_parses_several_challenges_with_quoted_commas_and_escapes():
    header = 'Basic realm="Registry, \\"main\\""  ,  BEARER Realm=https://auth.example/token, scope="a:b:pull,push"'
    basic, bearer = parse_challenges(header)
    assert basic == Challenge("basic", {"realm": 'Registry, "main"'})
    assert bearer.scheme == "bearer"
    assert bearer.realm == "https://auth.example/token"
    assert bearer.service is None
    assert bearer.params["scope"] == "a:b:pull,push"


@pytest.mark.parametrize("header", ["", "   ", '="x"', ",,,"])
def test_garbled_challenges_offer_nothing(header: str):
    assert parse_challenges(header) == []


# -- credentials ------------------------------------------------------------------------------------


def test_credential_never_shows_its_password(credential: RegistryCredential):
    for text in (repr(credential), str(credential), f"{credential}", credential.describe()):
        assert "PRIVATE KEY" not in text and "MIIEvQ" not in text
    assert credential.describe() == f"service account {KEY['client_email']} (key {KEY['private_key_id']})"
    # Registered with the redactor: a stray log line with the password is masked.
    assert KEY_TEXT not in redact_text(f"oops {credential.password}")


def test_fingerprint_is_short_stable_and_distinguishes_credentials(credential: RegistryCredential):
    assert credential.fingerprint == RegistryCredential.from_key_file(KEY_TEXT).fingerprint
    assert len(credential.fingerprint) == 16
    assert credential.fingerprint != RegistryCredential.from_key_file_base64(KEY_TEXT).fingerprint
    assert credential.fingerprint != RegistryCredential("oauth2accesstoken", "ya29.something-long").fingerprint


def test_base64_credentials_still_say_whose_key_they_are():
    credential = RegistryCredential("_json_key_base64", base64.b64encode(KEY_TEXT.encode()).decode())
    assert credential.client_email == KEY["client_email"]
    assert credential.key_id == KEY["private_key_id"]
    assert RegistryCredential.from_access_token("ya29.abcdefghijkl").describe() == "an OAuth access token"


@pytest.mark.parametrize(
    "text",
    [
        "not json at all",
        "[1, 2]",
        json.dumps({"client_email": "a@b"}),
        KEY_TEXT[:-30],
        json.dumps({**KEY, "type": "user"}),
    ],
)
def test_a_broken_key_file_is_a_permanent_error_that_does_not_quote_it(text: str):
    with pytest.raises(PermanentError) as info:
        RegistryCredential.from_key_file(text)
    assert info.value.code == "bad-key"
    assert "MIIEvQ" not in str(info.value) and info.value.__cause__ is None


# -- the token dance --------------------------------------------------------------------------------


def test_a_challenge_without_service_asks_the_realm_with_the_scope_alone(credential: RegistryCredential):
    """GAR's challenge sometimes names no ``service`` (docs/external-apis.md §2.1): then none is sent."""
    transport = ScriptedTransport(challenge(f'Bearer realm="{REALM}"'), token("tok-1", expires_in=3600), manifest())

    assert client_over(transport).resolve(IMAGE, credential).digest == DIGEST
    assert transport.requests[1].url == f"{REALM}?scope=repository%3Aproj%2Frepo%2Fapp%3Apull"


def test_cold_call_follows_the_challenge_then_warm_call_is_one_head(credential: RegistryCredential):
    transport = ScriptedTransport(challenge(), token("tok-1", expires_in=3600), manifest())
    client = client_over(transport)

    assert client.resolve(IMAGE, credential) == ManifestRef(DIGEST, "application/vnd.oci.image.index.v1+json")
    head, token_request, authed = transport.requests
    assert head.headers["Accept"] == MANIFEST_ACCEPT and "Authorization" not in head.headers
    assert token_request.url == f"{REALM}?scope=repository%3Aproj%2Frepo%2Fapp%3Apull&service={HOST}"
    user, _, password = base64.b64decode(token_request.headers["Authorization"].split()[1]).decode().partition(":")
    assert (user, password) == ("_json_key", KEY_TEXT)
    assert authed.headers["Authorization"] == "Bearer tok-1"
    assert authed.url == f"https://{HOST}/v2/proj/repo/app/manifests/{DIGEST}"

    transport.then(manifest())
    client.resolve(IMAGE, credential)
    assert len(transport.requests) == 4 and transport.requests[3].headers["Authorization"] == "Bearer tok-1"
    assert all(t == 10.0 for t in transport.timeouts)


def test_token_without_expires_in_lives_sixty_seconds_minus_margin(credential: RegistryCredential):
    now = [0.0]
    transport = ScriptedTransport(challenge(), respond(200, body={"access_token": "tok-a"}), manifest())
    client = client_over(transport, clock=lambda: now[0])
    client.resolve(IMAGE, credential)

    now[0] = 47.0
    transport.then(manifest())
    client.resolve(IMAGE, credential)
    assert transport.calls[-1][0] == "HEAD" and len(transport.requests) == 4

    now[0] = 49.0  # 60 s lifetime less a 12 s margin
    transport.then(token("tok-b"), manifest())
    client.resolve(IMAGE, credential)
    assert [r.method for r in transport.requests[4:]] == ["GET", "HEAD"]
    assert transport.requests[-1].headers["Authorization"] == "Bearer tok-b"


def test_cached_token_refused_is_replaced_once(credential: RegistryCredential):
    transport = ScriptedTransport(challenge(), token("old"), manifest())
    client = client_over(transport)
    client.resolve(IMAGE, credential)

    transport.then(challenge(), token("new"), manifest())
    assert client.resolve(IMAGE, credential).digest == DIGEST
    assert transport.requests[-1].headers["Authorization"] == "Bearer new"

    transport.then(manifest())  # and the new one is what is cached now
    client.resolve(IMAGE, credential)
    assert transport.requests[-1].headers["Authorization"] == "Bearer new"


def test_fresh_token_refused_is_final(credential: RegistryCredential):
    transport = ScriptedTransport(challenge(), token("t"), challenge(CHALLENGE + ',error="insufficient_scope"'))
    client = client_over(transport)

    with pytest.raises(CredentialsRefused) as info:
        client.resolve(IMAGE, credential)
    assert "roles/artifactregistry.reader on proj/repo" in info.value.reason
    assert KEY["client_email"] in info.value.reason
    assert len(transport.requests) == 3

    # The refused token is not cached: the next call asks for a new one.
    transport.then(token("t2"), manifest())
    assert client.resolve(IMAGE, credential).digest == DIGEST


def test_forbidden_with_a_fresh_token_is_refused(credential: RegistryCredential):
    transport = ScriptedTransport(challenge(), token(), respond(403, body={"errors": [{"code": "DENIED"}]}))
    with pytest.raises(CredentialsRefused, match="HTTP 403"):
        client_over(transport).resolve(IMAGE, credential)


def test_realm_that_moved_on_the_registry_host_is_followed(credential: RegistryCredential):
    moved = f'Bearer realm="https://{HOST}/v3/token",service="elsewhere"'
    transport = ScriptedTransport(challenge(), token("a"), manifest())
    client = client_over(transport)
    client.resolve(IMAGE, credential)
    client.forget()

    transport.then(token("b"), challenge(moved), token("c"), manifest())
    assert client.resolve(IMAGE, credential).digest == DIGEST
    assert transport.calls[-2] == ("GET", f"https://{HOST}/v3/token")
    assert "service=elsewhere" in (transport.requests[-2].url or "")


@pytest.mark.parametrize(
    "realm",
    [
        "https://auth.elsewhere.example/token",
        f"https://evil.example\\@{HOST}/v2/token",
        f"https://{HOST}:444/v2/token",
        f"https://user:pw@{HOST}/v2/token",
        f"http://{HOST}/v2/token",
        f"https://{HOST}.evil.example/v2/token",
    ],
)
def test_a_registry_naming_a_token_endpoint_off_its_host_gets_no_key(credential: RegistryCredential, realm: str):
    transport = ScriptedTransport(challenge(f'Bearer realm="{realm}",service="x"'))

    with pytest.raises(PermanentError) as refused:
        client_over(transport).resolve(IMAGE, credential)

    assert refused.value.code == "registry-realm-refused"
    assert len(transport.calls) == 1, "only the unauthenticated HEAD: the key file went nowhere"


def test_challenge_without_service_sends_none(credential: RegistryCredential):
    transport = ScriptedTransport(challenge(f'Bearer realm="{REALM}"'), token(), manifest())
    client_over(transport).resolve(IMAGE, credential)
    assert "service=" not in (transport.requests[1].url or "")


def test_basic_challenge_is_answered_and_remembered(credential: RegistryCredential):
    transport = ScriptedTransport(challenge('Basic realm="registry"'), manifest())
    client = client_over(transport, insecure_hosts=[HOST])
    client.resolve(IMAGE, credential)
    assert cast(str, transport.requests[1].headers["Authorization"]).startswith("Basic ")
    assert (transport.requests[0].url or "").startswith(f"http://{HOST}/v2/")

    transport.then(manifest())
    client.resolve(IMAGE, credential)
    assert len(transport.requests) == 3


def test_token_endpoint_refusal_carries_what_it_said(credential: RegistryCredential):
    refusal = respond(401, body={"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    transport = ScriptedTransport(challenge(), refusal)
    with pytest.raises(CredentialsRefused) as info:
        client_over(transport).resolve(IMAGE, credential)
    assert "invalid_grant: Invalid JWT Signature." in info.value.reason
    assert "token endpoint HTTP 401" in info.value.reason


def test_token_endpoint_without_a_token_is_transient(credential: RegistryCredential):
    transport = ScriptedTransport(challenge(), respond(200, body=b"<html>proxy</html>"))
    with pytest.raises(RegistryUnavailable, match="without a token"):
        client_over(transport).resolve(IMAGE, credential)


def test_401_without_any_challenge_is_reported(credential: RegistryCredential):
    transport = ScriptedTransport(respond(401))
    with pytest.raises(PermanentError, match="without a Bearer or Basic challenge") as info:
        client_over(transport).resolve(IMAGE, credential)
    assert info.value.code == "registry-error"


# -- the registry's answers ----------------------------------------------------------------------------


def _resolved(*answers: requests.Response, image: RegistryImage = IMAGE) -> ManifestRef:
    transport = ScriptedTransport(challenge(), token(), *answers)
    return client_over(transport).resolve(image, RegistryCredential.from_key_file(KEY_TEXT))


def test_by_tag_returns_whatever_digest_the_tag_names():
    assert _resolved(manifest(OTHER_DIGEST), image=BY_TAG).digest == OTHER_DIGEST


def test_by_digest_checks_the_answer():
    with pytest.raises(DigestMismatch) as info:
        _resolved(manifest(OTHER_DIGEST))
    assert OTHER_DIGEST in info.value.reason and DIGEST in info.value.reason


@pytest.mark.parametrize("header", [None, "", "md5:abc", "sha256:XYZ"])
def test_missing_or_invalid_digest_header_is_reported_not_guessed(header: str | None):
    headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    if header is not None:
        headers["Docker-Content-Digest"] = header
    with pytest.raises(PermanentError) as info:
        _resolved(respond(200, headers=headers))
    assert info.value.code == "registry-no-digest"
    assert "cannot be confirmed" in info.value.reason


def test_not_found():
    with pytest.raises(ImageNotFound, match=r"image .*app:v1@sha256:.* not found: deleted or never pushed"):
        _resolved(respond(404))


@pytest.mark.parametrize("status", [429, 500, 503])
def test_overloaded_or_broken_registry_is_transient(status: int):
    with pytest.raises(RegistryUnavailable, match=f"HTTP {status}"):
        _resolved(respond(status))


def test_other_statuses_are_permanent_and_quote_the_registry():
    body = {"errors": [{"code": "NAME_INVALID", "message": "invalid repository name"}]}
    with pytest.raises(PermanentError, match="NAME_INVALID: invalid repository name") as info:
        _resolved(respond(400, body=body))
    assert info.value.code == "registry-error"


def test_connection_errors_are_transient(credential: RegistryCredential):
    class Unreachable(ScriptedTransport):
        def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
            raise requests.ConnectionError("connection refused")

    with pytest.raises(RegistryUnavailable, match="could not be reached"):
        client_over(Unreachable()).resolve(IMAGE, credential)


# -- shared.adapters.http ------------------------------------------------------------------------------------------


def test_retry_policy_retries_reads_not_writes_and_caps_retry_after():
    retry = build_retry(retries=4, retry_after_cap=5.0)
    assert isinstance(retry, CappedRetry)
    assert retry.total == 4 and retry.connect == 4 and retry.status == 4
    assert retry.is_retry("GET", 503) and retry.is_retry("HEAD", 429)
    assert not retry.is_retry("POST", 503) and not retry.is_retry("GET", 404)
    assert retry.parse_retry_after("3600") == 5.0
    assert retry.new(total=1).parse_retry_after("3600") == 5.0  # survives urllib3's copies
    assert retry.parse_retry_after("2") == 2.0
    assert build_retry(allowed_methods={"post"}).is_retry("POST", 503)


def test_session_applies_a_default_timeout(monkeypatch: pytest.MonkeyPatch):
    seen: list[Any] = []

    def fake_send(self: HTTPAdapter, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        seen.append(kwargs.get("timeout"))
        return respond(204)

    monkeypatch.setattr(HTTPAdapter, "send", fake_send)
    session = build_session(timeout=3.5, user_agent="dataloop-gar-test")
    adapter = session.get_adapter("https://example.invalid/")
    assert isinstance(adapter, TimeoutHTTPAdapter)
    assert session.headers["User-Agent"] == "dataloop-gar-test"

    session.get("https://example.invalid/")
    session.get("https://example.invalid/", timeout=1.0)
    assert seen == [3.5, 1.0]


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def clear_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_without_a_proxy_the_environment_is_read_once_not_per_request(monkeypatch: pytest.MonkeyPatch):
    clear_proxies(monkeypatch)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/private-ca.pem")
    session = build_session()
    assert session.trust_env is False and session.verify == "/etc/ssl/private-ca.pem"

    def per_request_lookup(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the environment was read for a request")

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", per_request_lookup)
    monkeypatch.setattr(requests.sessions, "should_bypass_proxies", per_request_lookup)
    verified: list[Any] = []

    def send(self: HTTPAdapter, request: requests.PreparedRequest, **kw: Any) -> requests.Response:
        verified.append(kw["verify"])
        return respond(204)

    monkeypatch.setattr(HTTPAdapter, "send", send)
    session.get("https://example.invalid/")
    assert verified == ["/etc/ssl/private-ca.pem"]


def test_a_configured_proxy_is_still_honoured(monkeypatch: pytest.MonkeyPatch):
    clear_proxies(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "metadata.google.internal")
    session = build_session()
    assert session.trust_env is True
    used: list[Any] = []

    def send(self: HTTPAdapter, request: requests.PreparedRequest, **kw: Any) -> requests.Response:
        used.append(kw["proxies"])
        return respond(204)

    monkeypatch.setattr(HTTPAdapter, "send", send)
    session.get("https://example.invalid/")
    session.get("https://metadata.google.internal/")
    assert used[0].get("https") == "http://proxy.internal:3128"
    assert not used[1].get("https")


# -- a recorded challenge (``registry-challenge``) ----------------------------------------------------

RECORDED = f'Bearer realm="{REALM}",service="{HOST}"'


def test_challenge_header_reads_back_as_the_same_challenge():
    tricky = Challenge("bearer", {"realm": 'https://h/t?a="b",c', "service": "x\\y"})
    assert parse_challenges(tricky.header()) == [tricky]
    assert Challenge("bearer", {"realm": REALM, "service": HOST}).header() == RECORDED


def test_the_challenge_is_known_once_the_host_has_asked(credential: RegistryCredential):
    transport = ScriptedTransport(challenge(), token(), manifest())
    client = client_over(transport)
    assert client.challenge_for(HOST) is None
    client.resolve(IMAGE, credential)
    assert client.challenge_for(HOST) == RECORDED  # realm and service only: the scope is per request


def test_a_recorded_challenge_saves_a_cold_instance_the_anonymous_head(credential: RegistryCredential):
    transport = ScriptedTransport(token(), manifest())
    client = client_over(transport)
    assert client.expect_challenge(HOST, RECORDED)
    assert client.challenge_for(HOST) is None  # a hint is not the host's word until it works
    assert client.resolve(IMAGE, credential).digest == DIGEST
    assert transport.calls == [("GET", REALM), ("HEAD", f"https://{HOST}/v2/proj/repo/app/manifests/{DIGEST}")]
    assert transport.requests[1].headers["Authorization"] == "Bearer tok-1"
    assert client.challenge_for(HOST) == RECORDED


def test_a_stale_recorded_realm_costs_a_round_trip_not_a_verdict(credential: RegistryCredential):
    moved = f"https://{HOST}/v2/new-token"
    transport = ScriptedTransport(
        respond(404, body={"errors": [{"code": "NOT_FOUND"}]}),  # the recorded realm is gone
        challenge(f'Bearer realm="{moved}",service="{HOST}"'),
        token("tok-new"),
        manifest(),
    )
    client = client_over(transport)
    client.expect_challenge(HOST, RECORDED)
    assert client.resolve(IMAGE, credential).digest == DIGEST
    assert [url for _, url in transport.calls][:3] == [
        REALM,
        f"https://{HOST}/v2/proj/repo/app/manifests/{DIGEST}",
        moved,
    ]
    assert client.challenge_for(HOST) == f'Bearer realm="{moved}",service="{HOST}"'


def test_a_refused_key_is_still_refused_when_the_hint_is_dropped(credential: RegistryCredential):
    refused = respond(401, body={"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    transport = ScriptedTransport(refused, challenge(), respond(401, body={"error": "invalid_grant"}))
    client = client_over(transport)
    client.expect_challenge(HOST, RECORDED)
    with pytest.raises(CredentialsRefused):
        client.resolve(IMAGE, credential)
    assert [m for m, _ in transport.calls] == ["GET", "HEAD", "GET"]


@pytest.mark.parametrize(
    "header",
    [
        'Bearer realm="https://collector.example/v2/token",service="x"',  # another host: would send it the key
        f'Bearer realm="http://{HOST}/v2/token",service="{HOST}"',  # plain HTTP to a TLS registry
        f'Bearer realm="https://{HOST}.evil.example/token"',
        'Bearer service="no-realm"',
        "garbage",
        "",
    ],
)
def test_a_recorded_challenge_may_not_send_keys_anywhere_else(header: str, credential: RegistryCredential):
    client = client_over(ScriptedTransport(challenge(), token(), manifest()))
    assert not client.expect_challenge(HOST, header)
    client.resolve(IMAGE, credential)  # asks the registry, as if nothing had been recorded
    assert client.challenge_for(HOST) == RECORDED


def test_an_insecure_local_registry_may_record_an_http_realm_on_its_own_host():
    client = client_over(ScriptedTransport(), insecure_hosts={"127.0.0.1:5000"})
    assert client.expect_challenge("127.0.0.1:5000", 'Bearer realm="http://127.0.0.1:5001/token",service="local"')
    assert not client.expect_challenge("127.0.0.1:5002", 'Bearer realm="http://127.0.0.1:5001/token"')


def test_a_recorded_challenge_never_replaces_what_the_host_said(credential: RegistryCredential):
    transport = ScriptedTransport(challenge(), token("tok-1", expires_in=3600), manifest())
    client = client_over(transport)
    client.resolve(IMAGE, credential)
    assert not client.expect_challenge(HOST, f'Bearer realm="https://{HOST}/elsewhere"')
    transport.then(manifest())
    client.resolve(IMAGE, credential)
    assert transport.requests[-1].headers["Authorization"] == "Bearer tok-1"
