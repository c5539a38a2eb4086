"""RegistryClient against a real registry (distribution 2.8) and the GAR-like token endpoint.

Remote calls are counted on both sides: the token endpoint's own call log, and a
``requests`` response hook on the client's session for the registry.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from localcloud.registry import LocalRegistry
from localcloud.registry_auth import TOKEN_PATH, RegistryTokenEndpoint, TokenSigningKey
from localcloud.wsgi import Fault, ServerThread
from shared.adapters.registry import MANIFEST_ACCEPT, RegistryClient, RegistryCredential
from shared.core.errors import (
    CredentialsRefused,
    DigestMismatch,
    ImageNotFound,
    PermanentError,
    RegistryUnavailable,
    TransientError,
)
from shared.model.images import RegistryImage
from tests.fixtures.registry import (
    REGISTRY_ISSUER,
    REGISTRY_SERVICE,
    TEST_PROJECT,
    TEST_SCOPE,
    PushedImage,
    RegistryKeys,
    RegistryStack,
)

pytestmark = pytest.mark.wire

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class SessionCalls:
    """Every response the client's session saw: method, host and path, and issued tokens."""

    def __init__(self, client: RegistryClient) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.tokens: list[str] = []
        self.accept: list[str] = []
        self._lock = threading.Lock()
        client.session.hooks["response"].append(self._record)

    def _record(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        parts = urlsplit(response.url)
        with self._lock:
            self.calls.append((response.request.method or "", parts.netloc, parts.path))
            if parts.path == TOKEN_PATH and response.status_code == 200:
                body = response.json()
                self.tokens.extend(t for t in (body.get("token"), body.get("access_token")) if t)
            if response.request.method == "HEAD":
                self.accept.append(cast(str, response.request.headers.get("Accept", "")))

    def heads(self, host: str) -> int:
        with self._lock:
            return sum(1 for method, netloc, _ in self.calls if method == "HEAD" and netloc == host)

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()


def counting_client(local_registry: RegistryStack, **kwargs: Any) -> tuple[RegistryClient, SessionCalls]:
    client = local_registry.client(**kwargs)
    return client, SessionCalls(client)


# -- passing -----------------------------------------------------------------------------------


def test_resolves_by_digest(local_registry: RegistryStack, registry_keys: RegistryKeys, registry_image: PushedImage):
    client, calls = counting_client(local_registry)
    credential = registry_keys.credential(registry_keys.new_key())

    ref = client.resolve(registry_image.by_digest, credential)

    assert ref.digest == registry_image.digest
    assert ref.media_type == OCI_MANIFEST
    assert calls.accept and all(a == MANIFEST_ACCEPT for a in calls.accept)
    # The token endpoint was asked for exactly what a pull needs, for the pushed repository.
    assert [parse_qs(c["query"]) for c in local_registry.token_calls()] == [
        {"scope": [f"repository:{TEST_SCOPE}/hello:pull"], "service": [REGISTRY_SERVICE]}
    ]


def test_resolves_by_tag_to_the_pushed_digest(
    local_registry: RegistryStack, registry_keys: RegistryKeys, registry_image: PushedImage
):
    client = local_registry.client()
    credential = registry_keys.credential(registry_keys.new_key())

    assert client.resolve(registry_image.by_tag, credential).digest == registry_image.digest


def test_json_key_base64_and_oauth2accesstoken_usernames(
    local_registry: RegistryStack, registry_keys: RegistryKeys, registry_image: PushedImage
):
    key = registry_keys.new_key()
    as_base64 = RegistryCredential.from_key_file_base64(key.json_text)
    assert as_base64.username == "_json_key_base64"
    assert as_base64.password == base64.b64encode(key.json_text.encode()).decode()
    access_token = RegistryCredential.from_access_token(registry_keys.new_access_token(key.client_email))
    assert access_token.username == "oauth2accesstoken"
    client = local_registry.client()

    for credential in (as_base64, access_token):
        assert client.resolve(registry_image.by_digest, credential).digest == registry_image.digest
    # Different credentials never share a cached token.
    assert len(local_registry.token_calls()) == 2


# -- fewest remote calls -----------------------------------------------------------------------------


def test_warm_call_is_exactly_one_head(
    local_registry: RegistryStack, registry_keys: RegistryKeys, registry_image: PushedImage
):
    client, calls = counting_client(local_registry)
    credential = registry_keys.credential(registry_keys.new_key())

    client.resolve(registry_image.by_digest, credential)
    assert (len(local_registry.token_calls()), calls.heads(local_registry.host)) == (1, 2)  # challenge, token, HEAD

    local_registry.token_server.reset()
    calls.clear()
    for _ in range(3):
        client.resolve(registry_image.by_digest, credential)
        client.resolve(registry_image.by_tag, credential)  # same repository: same scope, same token
    assert local_registry.token_calls() == []
    assert len(calls.calls) == 6
    assert {(method, host) for method, host, _ in calls.calls} == {("HEAD", local_registry.host)}


def test_new_repository_on_a_known_host_goes_straight_to_the_token_endpoint(
    local_registry: RegistryStack, registry_keys: RegistryKeys, registry_image: PushedImage
):
    other = local_registry.push("other-image", "v1")
    client, calls = counting_client(local_registry)
    credential = registry_keys.credential(registry_keys.new_key())
    client.resolve(registry_image.by_digest, credential)
    local_registry.token_server.reset()
    calls.clear()

    assert client.resolve(other.by_digest, credential).digest == other.digest

    assert len(local_registry.token_calls()) == 1  # a new scope needs a new token…
    assert calls.heads(local_registry.host) == 1  # …but no second challenge


def test_token_is_refreshed_shortly_before_it_expires(
    local_registry: RegistryStack, registry_keys: RegistryKeys, registry_image: PushedImage
):
    now = [10_000.0]
    client, calls = counting_client(local_registry, clock=lambda: now[0])
    credential = registry_keys.credential(registry_keys.new_key())
    lifetime = local_registry.endpoint.expires_in
    client.resolve(registry_image.by_digest, credential)

    now[0] += lifetime - 31  # still outside the refresh margin: cached
    client.resolve(registry_image.by_digest, credential)
    assert len(local_registry.token_calls()) == 1

    now[0] += 2  # inside the margin: a new token, straight from the known realm
    calls.clear()
    client.resolve(registry_image.by_digest, credential)
    assert len(local_registry.token_calls()) == 2
    assert calls.heads(local_registry.host) == 1


def test_concurrent_cold_calls_share_one_token(
    local_registry: RegistryStack, registry_keys: RegistryKeys, registry_image: PushedImage
):
    client = local_registry.client()
    credential = registry_keys.credential(registry_keys.new_key())
    results: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(12)

    def work() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(client.resolve(registry_image.by_digest, credential).digest)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert results == [registry_image.digest] * 12
    assert len(local_registry.token_calls()) == 1


# -- refused -------------------------------------------------------------------------------------------


def test_unknown_key_is_refused_at_the_token_endpoint(
    local_registry: RegistryStack, registry_keys: RegistryKeys, registry_image: PushedImage
):
    key = registry_keys.unknown_key()
    client = local_registry.client()

    with pytest.raises(CredentialsRefused) as info:
        client.resolve(registry_image.by_digest, registry_keys.credential(key))

    reason = info.value.reason
    assert key.client_email in reason and key.key_id in reason
    assert f"roles/artifactregistry.reader on {TEST_SCOPE}" in reason
    assert "invalid_grant" in reason  # what the token endpoint said, passed on
    assert info.value.code == "credentials-refused"
    assert isinstance(info.value, PermanentError)
    assert len(local_registry.token_calls()) == 1  # a refusal is not retried


def test_revoked_key_is_refused(
    local_registry: RegistryStack, registry_keys: RegistryKeys, registry_image: PushedImage
):
    key = registry_keys.new_key()
    credential = registry_keys.credential(key)
    client = local_registry.client()
    assert client.resolve(registry_image.by_digest, credential).digest == registry_image.digest

    registry_keys.revoke(key)
    client.forget(credential)  # a cached token stays valid until it expires, as on GAR

    with pytest.raises(CredentialsRefused, match=key.client_email):
        client.resolve(registry_image.by_digest, credential)
    with pytest.raises(CredentialsRefused):
        local_registry.client().resolve(registry_image.by_digest, credential)


def test_key_without_pull_permission_is_refused_by_the_registry(
    local_registry: RegistryStack, registry_keys: RegistryKeys, registry_image: PushedImage
):
    key = registry_keys.new_key(repositories=(f"{TEST_PROJECT}/another-repo",))
    client, calls = counting_client(local_registry)

    with pytest.raises(CredentialsRefused) as info:
        client.resolve(registry_image.by_digest, registry_keys.credential(key))

    assert "HTTP 401" in info.value.reason and key.client_email in info.value.reason
    # The token endpoint issued a token without pull; the registry refused it once, no loop.
    assert len(local_registry.token_calls()) == 1
    assert calls.heads(local_registry.host) == 2


def test_key_without_pull_permission_is_refused_at_the_token_endpoint_the_same_way(
    local_registry: RegistryStack, registry_keys: RegistryKeys, registry_image: PushedImage
):
    """GAR may refuse such a key before any token is issued (docs/external-apis.md §2.4)."""
    key = registry_keys.new_key(repositories=(f"{TEST_PROJECT}/another-repo",))
    client, calls = counting_client(local_registry)
    local_registry.endpoint.deny_at_token_endpoint = True
    try:
        with pytest.raises(CredentialsRefused) as info:
            client.resolve(registry_image.by_digest, registry_keys.credential(key))
    finally:
        local_registry.endpoint.deny_at_token_endpoint = False

    reason = info.value.reason
    assert "token endpoint HTTP 403" in reason and "DENIED" in reason and key.client_email in reason
    assert f"roles/artifactregistry.reader on {TEST_SCOPE}" in reason  # what to do about it
    assert len(local_registry.token_calls()) == 1 and calls.heads(local_registry.host) == 1  # no token, no retry


def test_cached_token_the_registry_no_longer_takes_is_replaced_once(
    local_registry: RegistryStack, registry_keys: RegistryKeys
):
    """The registry restarts trusting a new issuer certificate: cached tokens die, keys don't."""
    first_key = TokenSigningKey.generate()
    endpoint = RegistryTokenEndpoint(
        local_registry.endpoint.authority,
        first_key,
        service=REGISTRY_SERVICE,
        issuer=REGISTRY_ISSUER,
        admin_username=local_registry.admin_username,
        admin_password=local_registry.admin_password,
    )
    with ServerThread(endpoint) as token_thread:
        registry = LocalRegistry(
            token_realm=token_thread.url + TOKEN_PATH,
            service=REGISTRY_SERVICE,
            issuer=REGISTRY_ISSUER,
            root_cert_pem=first_key.certificate_pem,
        ).start()
        try:
            pushed = local_registry.push(registry=registry)
            client, calls = counting_client(local_registry, insecure_hosts=[registry.host])
            credential = registry_keys.credential(registry_keys.new_key())
            client.resolve(pushed.by_digest, credential)
            assert len(endpoint.issued) == 2  # the push, then our pull token

            registry.stop()
            second_key = TokenSigningKey.generate()
            endpoint.signing_key = second_key
            registry.trust(second_key.certificate_pem)
            registry.start()
            calls.clear()

            assert client.resolve(pushed.by_digest, credential).digest == pushed.digest
            assert len(endpoint.issued) == 3
            assert calls.heads(registry.host) == 2  # refused cached token, then the new one
        finally:
            registry.close()


# -- not found, mismatch ----------------------------------------------------------------------------------


def test_deleted_image_is_not_found(local_registry: RegistryStack, registry_keys: RegistryKeys):
    pushed = local_registry.push("doomed", "v1")
    client = local_registry.client()
    credential = registry_keys.credential(registry_keys.new_key())
    assert client.resolve(pushed.by_digest, credential).digest == pushed.digest

    local_registry.delete(pushed)

    with pytest.raises(ImageNotFound) as info:
        client.resolve(pushed.by_digest, credential)
    assert str(pushed.by_digest) in info.value.reason and "deleted or never pushed" in info.value.reason
    with pytest.raises(ImageNotFound):  # the tag went with the manifest
        client.resolve(pushed.by_tag, credential)


def test_never_pushed_tag_is_not_found(
    local_registry: RegistryStack, registry_keys: RegistryKeys, registry_image: PushedImage
):
    client = local_registry.client()
    credential = registry_keys.credential(registry_keys.new_key())
    missing = RegistryImage(local_registry.host, TEST_PROJECT, "test-repo", "hello", tag="no-such-tag")

    with pytest.raises(ImageNotFound, match="no-such-tag"):
        client.resolve(missing, credential)


def test_digest_mismatch_when_the_registry_answers_for_another_manifest(
    local_registry: RegistryStack, registry_keys: RegistryKeys, registry_image: PushedImage
):
    """A registry (or a caching proxy in front of it) that answers for the wrong manifest."""
    client = local_registry.client()
    other = "sha256:" + "0" * 64

    def lie(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if response.request.method == "HEAD" and response.status_code == 200:
            response.headers["Docker-Content-Digest"] = other

    client.session.hooks["response"].append(lie)

    with pytest.raises(DigestMismatch) as info:
        client.resolve(registry_image.by_digest, registry_keys.credential(registry_keys.new_key()))
    assert other in info.value.reason and registry_image.digest in info.value.reason


# -- unavailable ---------------------------------------------------------------------------------------------


def test_registry_down_fails_fast_as_transient_and_recovers_on_restart(
    local_registry: RegistryStack, registry_keys: RegistryKeys
):
    registry = local_registry.spare_registry().start()
    try:
        pushed = local_registry.push(registry=registry)
        client = local_registry.client(insecure_hosts=[registry.host], retries=2, backoff_factor=0.05)
        credential = registry_keys.credential(registry_keys.new_key())
        assert client.resolve(pushed.by_digest, credential).digest == pushed.digest

        registry.stop()
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable) as info:
            client.resolve(pushed.by_digest, credential)
        assert time.monotonic() - started < 3.0
        assert isinstance(info.value, TransientError)
        assert registry.host in info.value.reason

        registry.start()
        assert client.resolve(pushed.by_digest, credential).digest == pushed.digest
    finally:
        registry.close()


def test_token_endpoint_503_once_is_retried(
    local_registry: RegistryStack, registry_keys: RegistryKeys, registry_image: PushedImage
):
    local_registry.token_server.inject(Fault(path=TOKEN_PATH, status=503, count=1))
    client = local_registry.client()

    assert client.resolve(registry_image.by_digest, registry_keys.credential(registry_keys.new_key())).digest == (
        registry_image.digest
    )
    assert len(local_registry.token_calls()) == 2


def test_token_endpoint_429_retry_after_is_honoured(
    local_registry: RegistryStack, registry_keys: RegistryKeys, registry_image: PushedImage
):
    local_registry.token_server.inject(Fault(path=TOKEN_PATH, status=429, headers={"Retry-After": "1"}, count=1))
    client = local_registry.client()
    started = time.monotonic()

    client.resolve(registry_image.by_digest, registry_keys.credential(registry_keys.new_key()))

    assert time.monotonic() - started >= 1.0
    assert len(local_registry.token_calls()) == 2


def test_token_endpoint_down_for_good_is_transient_after_bounded_retries(
    local_registry: RegistryStack, registry_keys: RegistryKeys, registry_image: PushedImage
):
    local_registry.token_server.inject(Fault(path=TOKEN_PATH, status=503, count=100))
    client = local_registry.client(retries=2)

    with pytest.raises(RegistryUnavailable, match="HTTP 503"):
        client.resolve(registry_image.by_digest, registry_keys.credential(registry_keys.new_key()))
    assert len(local_registry.token_calls()) == 3


# -- secrets -----------------------------------------------------------------------------------------------------


def test_no_secret_in_errors_or_logs(
    local_registry: RegistryStack,
    registry_keys: RegistryKeys,
    registry_image: PushedImage,
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.DEBUG)
    good, revoked, unknown = registry_keys.new_key(), registry_keys.new_key(), registry_keys.unknown_key()
    registry_keys.revoke(revoked)
    access_token = registry_keys.new_access_token("nobody@test-project.iam.gserviceaccount.com", ())
    client, calls = counting_client(local_registry)
    failures: list[BaseException] = []

    def expect_failure(action: Callable[[], object]) -> None:
        with pytest.raises(Exception) as info:
            action()
        failures.append(info.value)

    client.resolve(registry_image.by_digest, registry_keys.credential(good))
    expect_failure(lambda: client.resolve(registry_image.by_digest, registry_keys.credential(revoked)))
    expect_failure(
        lambda: client.resolve(registry_image.by_digest, RegistryCredential.from_key_file_base64(unknown.json_text))
    )
    expect_failure(lambda: client.resolve(registry_image.by_digest, RegistryCredential.from_access_token(access_token)))
    local_registry.token_server.inject(Fault(path=TOKEN_PATH, status=503, count=100))
    expect_failure(
        lambda: local_registry.client(retries=1).resolve(registry_image.by_digest, registry_keys.credential(unknown))
    )
    expect_failure(lambda: RegistryCredential.from_key_file(good.json_text[:-20]))

    secrets = [access_token, *calls.tokens]
    for key in (good, revoked, unknown):
        pem_lines = key.as_dict()["private_key"].splitlines()[1:-1]  # any one line of the key is a leak
        secrets += [key.json_text, key.json_base64, *pem_lines]
    assert calls.tokens, "the good key should have been issued a token"
    assert len(failures) == 5
    texts = [caplog.text] + [f"{exc!s} {exc!r} {getattr(exc, 'reason', '')}" for exc in failures]
    texts += [repr(registry_keys.credential(good)), str(RegistryCredential.from_access_token(access_token))]
    for text in texts:
        for secret in secrets:
            assert secret not in text


# -- untrusted hosts: a key file goes only to the registry's own host -------------------------------------


class Attacker:
    """A server on loopback that records whatever reaches it, credentials included."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        self.seen.append({"path": environ.get("PATH_INFO", ""), "authorization": environ.get("HTTP_AUTHORIZATION", "")})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"token": "attacker", "expires_in": 300}']


@pytest.mark.parametrize(
    "realm",
    [
        "http://127.0.0.2:{port}\\@{registry}/token",  # urllib.parse reads the host as {registry}
        "http://127.0.0.2:{port}/token",
        "http://user@127.0.0.2:{port}/token",
    ],
)
def test_a_recorded_challenge_never_sends_the_key_file_to_another_host(
    local_registry: RegistryStack, registry_keys: RegistryKeys, registry_image: PushedImage, realm: str
) -> None:
    attacker = Attacker()
    with ServerThread(attacker, host="127.0.0.2") as evil:  # loopback, but another host
        client, calls = counting_client(local_registry)
        credential = registry_keys.credential(registry_keys.new_key())
        quoted = realm.format(port=evil.port, registry=local_registry.host).replace(
            "\\", "\\\\"
        )  # RFC 9110 quoted-string
        header = f'Bearer realm="{quoted}",service="x"'

        client.expect_challenge(local_registry.host, header)  # an edited registry-challenge annotation
        ref = client.resolve(registry_image.by_digest, credential)

    assert attacker.seen == [], "the key file reached another host"
    assert ref.digest == registry_image.digest  # the registry itself was asked, and answered
    assert all(netloc != f"127.0.0.2:{evil.port}" for _, netloc, _ in calls.calls)


def test_a_record_whose_registry_host_was_edited_is_not_rotated_or_probed(
    local_registry: RegistryStack,
) -> None:
    from shared.model.integrations import ManagedIntegration
    from shared.model.record import SecretRecord

    for edited in ("evil.example", f"evil.example\\@{local_registry.host}", "us-central1-docker.pkg.dev:8443"):
        record = SecretRecord(
            "projects/p/secrets/dataloop-gar-team-a",
            annotations={"registry-host": edited, "repositories": "p/r"},
            version_aliases={},
            etag="e",
        )
        with pytest.raises(PermanentError) as refused:
            ManagedIntegration.from_secret(record)
        assert refused.value.code == "bad-integration" and "registry-host" in refused.value.reason
        with pytest.raises(PermanentError) as unsent:
            local_registry.client().resolve(
                RegistryImage(edited, "p", "r", "app", tag="v1"), RegistryCredential("_json_key", "{}")
            )
        assert unsent.value.code == "registry-host-refused"
