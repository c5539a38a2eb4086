"""Input limits: a hostile or broken peer cannot make a function hold more than a bounded amount.

Every place that reads outside data is pointed at a tiny WSGI app that answers the worst it
can: a 50 MB body (announced, or chunked without a length), a gzip bomb that inflates to
50 MB, or JSON nested 10 000 levels deep. The peers are the ones this system talks to over
HTTP with its own clients: a registry's token endpoint (``shared.adapters.registry``), Dataloop's
gateway and its ``/token`` login (``shared.adapters.dataloop``). Each case asserts a *bounded error*
(the project's own exception, with a message naming the peer), that it came *quickly*, and,
with ``tracemalloc``, that the peak memory the call allocated stays far below what the peer
sent. The inbound side (messages and requests) is bounded by ``shared.model.events`` and
``shared.model.request``; the last tests push oversized and pathological bodies at a real
functions-framework instance and check it answers and keeps serving.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, Unpack

import pytest
import requests

from localcloud.wsgi import ServerThread
from shared.adapters.dataloop.auth import jwt_claims
from shared.adapters.dataloop.client import DataloopClient
from shared.adapters.http import MAX_RESPONSE_BYTES
from shared.adapters.registry import RegistryClient, RegistryCredential
from shared.app.entrypoint import handle_event
from shared.core.errors import CredentialsRefused, RegistryUnavailable
from shared.model.dataloop import DataloopError, DataloopUnavailable
from shared.model.events import MAX_DATA_BYTES
from shared.model.images import RegistryImage
from shared.workflows.push import PushTester
from shared.workflows.reference_test import ReferenceTest
from tests.reliability.figures import record
from tests.unit.fakes import DIGEST, FakeDirectory, FakeKeys, FakeRegistry, FakeSink, integration, key_json

SENT_BYTES = 50 * 1024 * 1024
DEPTH = 10_000
#: What a bounded read may cost on top of the same call answered normally: the 4 MiB body
#: limit, a copy while joining, and slack. (The HTTP stack itself peaks at ~10 MB under
#: tracemalloc even for a 20-byte answer, server thread included; that part is measured and
#: subtracted, see ``baseline``.)
MEMORY_CEILING = 3 * MAX_RESPONSE_BYTES
TIME_CEILING = 5.0
#: The peer writes in small pieces, so what tracemalloc sees (it counts every thread) is the client.
_PIECE = b"x" * (64 * 1024)
#: 50 MB of zeros gzip to ~50 KB: what a decompression bomb looks like on the wire.
_BOMB = gzip.compress(b"\0" * SENT_BYTES, compresslevel=9)
DEEP_JSON = ("[" * DEPTH + "]" * DEPTH).encode()
DEEP_OBJECT = ('{"a":' * DEPTH + "1" + "}" * DEPTH).encode()

WSGI = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _big(announce: bool) -> WSGI:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = [("Content-Type", "application/json")]
        if announce:
            headers.append(("Content-Length", str(SENT_BYTES)))
        start_response("200 OK", headers)
        return (_PIECE for _ in range(SENT_BYTES // len(_PIECE)))

    return app


def _bomb(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Encoding", "gzip"), ("Content-Length", str(len(_BOMB)))],
    )
    return [_BOMB]


def _json(status: str, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> WSGI:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers])
        return [body]

    return app


ANSWERS: dict[str, WSGI] = {
    "50 MB with Content-Length": _big(announce=True),
    "50 MB chunked, no length": _big(announce=False),
    "gzip bomb inflating to 50 MB": _bomb,
    "JSON 10 000 levels deep": _json("200 OK", DEEP_JSON),
    "JSON object 10 000 levels deep": _json("200 OK", DEEP_OBJECT),
}


class HostilePeer:
    """One WSGI app on 127.0.0.1 whose answer the test swaps; everything else is a registry/gateway.

    It counts the answers still being written (after a client hangs up on a 50 MB answer, the
    server thread writes into the closed socket for a moment): :meth:`wait_idle` lets a
    measurement start only when no earlier answer can allocate inside it.
    """

    def __init__(self) -> None:
        self.answer: WSGI = _json("200 OK", b"{}")
        self.server = ServerThread(self).start()
        self._busy = 0
        self._idle = threading.Condition()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def wait_idle(self, timeout: float = 10.0) -> None:
        with self._idle:
            assert self._idle.wait_for(lambda: self._busy == 0, timeout), "the hostile peer is still answering"

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/v2/") and path != "/v2/token":  # the registry itself: always a token challenge
            challenge = f'Bearer realm="http://{self.host}/v2/token",service="hostile"'
            return _json("401 Unauthorized", b'{"errors":[]}', [("WWW-Authenticate", challenge)])(
                environ, start_response
            )
        with self._idle:
            self._busy += 1
        return self._tracked(self.answer(environ, start_response))

    def _tracked(self, body: Iterable[bytes]) -> Iterator[bytes]:
        try:
            yield from body
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()


@pytest.fixture(scope="module")
def peer() -> Iterator[HostilePeer]:
    hostile = HostilePeer()
    yield hostile
    hostile.server.stop()


@dataclass
class Measured:
    error: BaseException | None
    seconds: float
    peak_bytes: int


def measure(call: Callable[[], Any], peer: HostilePeer) -> Measured:
    """Run ``call`` and report what it raised, how long it took and its peak traced allocation."""
    peer.wait_idle()
    tracemalloc.start()
    started = time.monotonic()
    error: BaseException | None = None
    try:
        call()
    except Exception as exc:
        error = exc
    seconds = time.monotonic() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return Measured(error, seconds, peak)


@pytest.fixture(scope="module")
def baseline(peer: HostilePeer) -> int:
    """Peak traced memory of the same calls answered with 16 bytes of JSON (the HTTP stack's own)."""
    peer.answer = _json("200 OK", b'{"token": "tok"}')
    peaks = [measure(resolve_through(peer), peer).peak_bytes for _ in range(3)]
    peaks += [measure(lambda: dataloop_client(peer).integrations("org-1").list(), peer).peak_bytes for _ in range(3)]
    return max(peaks)


def assert_bounded(
    result: Measured, expected: type[BaseException] | tuple[type[BaseException], ...], scenario: str, baseline: int
) -> None:
    record(scenario, inputs=1)
    assert isinstance(result.error, expected), f"expected {expected}, got {result.error!r}"
    assert result.seconds < TIME_CEILING, f"took {result.seconds:.1f}s"
    extra = result.peak_bytes - baseline
    assert extra < MEMORY_CEILING, f"allocated {extra / 1e6:.1f} MB more than for a normal answer"


# -- a registry's token endpoint ---------------------------------------------------------------


def registry_client() -> RegistryClient:
    return RegistryClient(timeout=5.0, retries=0, insecure_hosts=[], backoff_factor=0.01)


def resolve_through(peer: HostilePeer) -> Callable[[], Any]:
    image = RegistryImage(peer.host, "proj", "repo", "app", "v1")
    client = registry_client()
    client.insecure_hosts = frozenset({peer.host})
    credential = RegistryCredential.from_key_file(key_json("k1"))
    return lambda: client.resolve(image, credential)


@pytest.mark.parametrize(
    "answer", ["50 MB with Content-Length", "50 MB chunked, no length", "gzip bomb inflating to 50 MB"]
)
def test_a_huge_token_answer_is_cut_off_as_a_transient_registry_failure(
    peer: HostilePeer, baseline: int, answer: str
) -> None:
    peer.answer = ANSWERS[answer]
    result = measure(resolve_through(peer), peer)
    assert_bounded(result, RegistryUnavailable, "limits: registry token endpoint", baseline)
    assert "ResponseTooLarge" in result.error.reason and peer.host in result.error.reason  # type: ignore[union-attr]


@pytest.mark.parametrize("answer", ["JSON 10 000 levels deep", "JSON object 10 000 levels deep"])
def test_a_token_answer_nested_ten_thousand_deep_is_no_token(peer: HostilePeer, baseline: int, answer: str) -> None:
    peer.answer = ANSWERS[answer]
    result = measure(resolve_through(peer), peer)
    assert_bounded(result, RegistryUnavailable, "limits: registry token endpoint", baseline)
    assert "without a token" in result.error.reason  # type: ignore[union-attr]


def test_a_refusal_whose_error_body_is_ten_thousand_deep_is_still_a_clear_refusal(
    peer: HostilePeer, baseline: int
) -> None:
    peer.answer = _json("401 Unauthorized", DEEP_OBJECT)
    result = measure(resolve_through(peer), peer)
    assert_bounded(result, CredentialsRefused, "limits: registry token endpoint", baseline)
    assert "puller@proj.iam.gserviceaccount.com" in result.error.reason  # type: ignore[union-attr]


# -- Dataloop's gateway --------------------------------------------------------------------------


class Identity(TypedDict, total=False):
    """How the client signs in: an API key, or a bot's username and password."""

    api_key: str
    username: str
    password: str


def dataloop_client(peer: HostilePeer, **identity: Unpack[Identity]) -> DataloopClient:
    if not identity:
        identity = {"api_key": "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"}
    return DataloopClient(base_url=f"http://{peer.host}/api/v1", timeout=5.0, retries=0, **identity)


@pytest.mark.parametrize(
    "answer", ["50 MB with Content-Length", "50 MB chunked, no length", "gzip bomb inflating to 50 MB"]
)
def test_a_huge_dataloop_answer_is_cut_off_as_dataloop_unavailable(
    peer: HostilePeer, baseline: int, answer: str
) -> None:
    peer.answer = ANSWERS[answer]
    client = dataloop_client(peer)
    result = measure(lambda: client.integrations("org-1").list(), peer)
    assert_bounded(result, DataloopUnavailable, "limits: Dataloop gateway", baseline)
    assert "ResponseTooLarge" in result.error.reason  # type: ignore[union-attr]


@pytest.mark.parametrize("status", ["200 OK", "500 Internal Server Error", "403 Forbidden"])
def test_a_dataloop_answer_nested_ten_thousand_deep_is_a_clear_dataloop_error(
    peer: HostilePeer, baseline: int, status: str
) -> None:
    peer.answer = _json(status, DEEP_OBJECT)
    client = dataloop_client(peer)
    result = measure(lambda: client.integrations("org-1").list(), peer)
    assert_bounded(result, DataloopError, "limits: Dataloop gateway", baseline)
    assert "x-request-id" in result.error.reason  # type: ignore[union-attr]
    assert len(result.error.reason) < 1000  # type: ignore[union-attr]


def test_a_bot_login_answered_ten_thousand_deep_is_a_clear_login_error(peer: HostilePeer, baseline: int) -> None:
    peer.answer = _json("200 OK", DEEP_OBJECT)
    client = dataloop_client(peer, username="bot@bot.dataloop.ai", password="a-password-of-the-bot")
    result = measure(lambda: client.integrations("org-1").list(), peer)
    assert_bounded(result, DataloopError, "limits: Dataloop gateway", baseline)
    assert "without an id_token" in result.error.reason  # type: ignore[union-attr]


def test_an_id_token_whose_claims_nest_ten_thousand_deep_is_treated_as_opaque(peer: HostilePeer) -> None:
    """The claims are only read for ``exp``; a token we cannot read is used until refused."""
    record("limits: Dataloop gateway", inputs=1)
    # 3 000 levels: past the parser's recursion limit, yet small enough for an HTTP header.
    claims = base64.urlsafe_b64encode(('{"a":' * 3000 + "1" + "}" * 3000).encode()).decode().rstrip("=")
    token = f"eyJhbGciOiJIUzI1NiJ9.{claims}.c2ln"
    assert jwt_claims(token) is None
    body = json.dumps({"id_token": token, "refresh_token": "r" * 20}).encode()
    answers = {"/token": _json("200 OK", body), "/api/v1/orgs/org-1/integrations": _json("200 OK", b"[]")}
    peer.answer = lambda environ, start_response: answers[environ["PATH_INFO"]](environ, start_response)
    client = dataloop_client(peer, username="bot@bot.dataloop.ai", password="a-password-of-the-bot")
    assert client.integrations("org-1").list() == []


# -- a key payload in Secret Manager that is not what anyone wrote -------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [DEEP_OBJECT, b'{"private_key_id": ' + b"7" * 5000 + b"}", b"\xff\xfe not even text"],
    ids=["nested 10 000 deep", "a 5000-digit number", "not UTF-8"],
)
def test_a_mangled_key_payload_fails_the_push_clearly_instead_of_looping(payload: bytes) -> None:
    """Secret Manager is ours, but a person (or a script) can write anything into a version; the push
    must then fail with ``bad-key`` (acknowledged, actionable), not raise forever as an unexpected error."""
    record("limits: key payloads read from Secret Manager", inputs=1)
    keys = FakeKeys({"dataloop-gar-team-a": {1: payload.decode("utf-8", "replace")}})
    registry = FakeRegistry(images={("us-central1-docker.pkg.dev", "proj/images/app"): {"v1": DIGEST}})
    tester = PushTester(FakeDirectory([integration()]), keys, ReferenceTest(registry))
    data = json.dumps({"action": "INSERT", "tag": "us-central1-docker.pkg.dev/proj/images/app:v1"}).encode()
    started = time.monotonic()
    outcome = handle_event(
        "reference-test", {"message": {"data": base64.b64encode(data).decode()}}, tester.handle, FakeSink()
    )
    assert time.monotonic() - started < TIME_CEILING
    assert (outcome.status.value, outcome.code) == ("failed", "bad-key"), outcome
    assert "expected a service-account key file" in outcome.reason and registry.calls == []


# -- inbound: a functions-framework instance ----------------------------------------------------------

SOURCE = Path(__file__).resolve().parents[2] / "functions" / "on_push" / "main.py"


@pytest.fixture
def on_push(run_function: Any, pubsub: Any, secretmanager: Any) -> Any:
    results = pubsub.topic("results")
    collector = pubsub.collector(results)
    function = run_function(
        "on_push",
        SOURCE,
        env={
            "GCP_PROJECT": secretmanager.project,
            "SECRET_MANAGER_ENDPOINT": secretmanager.url,
            "RESULTS_TOPIC": results,
            "HTTP_TIMEOUT_SECONDS": "3",
            "HTTP_RETRIES": "0",
            **pubsub.emulator.env(),
        },
    )
    return function, collector


def push_body(data: bytes) -> dict[str, Any]:
    return {"message": {"data": base64.b64encode(data).decode(), "messageId": "m-limits"}, "subscription": "s"}


def test_a_function_answers_hostile_bodies_promptly_and_keeps_serving(on_push: Any) -> None:
    function, collector = on_push
    hostile = {
        "push body nested 10 000 deep": DEEP_OBJECT,
        "20 MB push body": b'{"message": {"data": "' + b"A" * (20 * 1024 * 1024) + b'"}}',
        "message data over the limit": json.dumps(push_body(b'"' + b"a" * (MAX_DATA_BYTES + 10) + b'"')).encode(),
        "message data nested 10 000 deep": json.dumps(push_body(DEEP_JSON)).encode(),
    }
    for name, body in hostile.items():
        started = time.monotonic()
        response = requests.post(function.url, data=body, headers={"Content-Type": "application/json"}, timeout=30)
        record("limits: inbound push bodies", inputs=1)
        assert time.monotonic() - started < TIME_CEILING, name
        assert response.status_code in (200, 400, 413, 500), (name, response.status_code)
        # Still serving: a well-formed (if uninteresting) message is answered and acknowledged.
        ok = requests.post(
            function.url, json=push_body(b'{"action": "DELETE", "tag": "h.example/p/r/i:t"}'), timeout=30
        )
        assert ok.status_code == 200, name
    rejected = [m.json for m in collector.drain(quiet_seconds=1.0) if m.json["status"] == "rejected"]
    reasons = " | ".join(r["reason"] for r in rejected)
    assert "limit" in reasons and "deeper than" in reasons, reasons
