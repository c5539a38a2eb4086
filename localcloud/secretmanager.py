"""A local Secret Manager (REST v1) for the real ``google-cloud-secret-manager`` client.

Google ships no Secret Manager emulator, yet the secret *is* this system's database
(DESIGN.md 3.1): labels find managed integrations, annotations hold their state and the
rotation lease, version aliases mark ``current``/``previous``/``pending`` keys, and the
secret's etag guards every write. So the stand-in reproduces the service's documented
contract rather than a convenient approximation of it, because the project's adapter is
tested through the generated client against exactly this wire format:

- paths, verbs, query parameters and bodies as the generated REST transport sends them
  (``projects/{project}/secrets`` only; location-scoped paths answer UNIMPLEMENTED);
- Google's JSON error body ``{"error": {"code", "message", "status"}}``. The REST client
  picks the exception class from the HTTP status alone, so 409 ALREADY_EXISTS surfaces as
  ``google.api_core.exceptions.Conflict`` and 400 FAILED_PRECONDITION as ``BadRequest``;
  the gRPC-only subclasses (``AlreadyExists``, ``FailedPrecondition``) never appear;
- etags: opaque quoted strings, renewed by every modification of the resource they belong
  to (even a no-op), never by a change to another resource (adding a version leaves the
  secret's etag alone); a stale etag fails with 400 FAILED_PRECONDITION, as the etags page
  of the Secret Manager documentation states;
- ``latest`` is the most recently *created* version whatever its state, so accessing it when
  it is disabled or destroyed fails with FAILED_PRECONDITION, as the real service does;
- event notifications to a secret's topics (``TOPIC_CONFIGURED``, ``SECRET_*``) with the
  documented attributes, handed to a hook rather than to Pub/Sub so that the local cloud
  decides where they go; ``fire_due_rotations`` plays Secret Manager's rotation scheduler;
- access as conditional role bindings shape it (:class:`CallerAccess`), for callers known by
  their bearer token: outside its reach a call answers 403 PERMISSION_DENIED "Permission
  'PERMISSION' denied for resource 'NAME' (or it may not exist)." (the wording of real
  responses quoted in public issue threads, the name as the request gave it), decided before
  the resource is looked up, so that the answer is the same whether it exists or not. Which
  permission each method needs, and that listing and creating are checked on the project,
  is each method's "Authorization requires" line in the REST reference.

Where the documentation is silent the stand-in chooses the stricter behaviour, so code
that passes here also passes against the real service: destroying a version that an alias
still names is refused, mutating calls accept only version numbers (not aliases), and
filters outside the documented fields are rejected as INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import secrets as _random
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug.wrappers import Request, Response

from localcloud.google_errors import GoogleApiError

log = logging.getLogger(__name__)

PublishHook = Callable[[str, dict[str, str], bytes], None]
Clock = Callable[[], datetime]

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_ANNOTATIONS_BYTES = 16 * 1024  # total must be *less* than this
MAX_LABELS = 64
MAX_ALIASES = 50
MAX_TOPICS = 10
MAX_PAGE_SIZE = 25000
MIN_ROTATION_LEAD = timedelta(seconds=300)
MIN_ROTATION_PERIOD = timedelta(seconds=3600)
MAX_ROTATION_SPAN = timedelta(seconds=3153600000)  # 100 years, both for the lead and the period

STATES = ("STATE_UNSPECIFIED", "ENABLED", "DISABLED", "DESTROYED")


# -- errors ------------------------------------------------------------------------------


def invalid(message: str) -> GoogleApiError:
    return GoogleApiError(400, message)


def precondition(message: str) -> GoogleApiError:
    return GoogleApiError(400, message, "FAILED_PRECONDITION")


def not_found(message: str) -> GoogleApiError:
    return GoogleApiError(404, message)


def already_exists(message: str) -> GoogleApiError:
    return GoogleApiError(409, message)


def unimplemented(message: str) -> GoogleApiError:
    return GoogleApiError(501, message)


def permission_denied(permission: str, resource: str) -> GoogleApiError:
    """Google's refusal, worded alike whether or not ``resource`` exists, so it reveals nothing."""
    return GoogleApiError(403, f"Permission '{permission}' denied for resource '{resource}' (or it may not exist).")


def unauthenticated() -> GoogleApiError:
    return GoogleApiError(
        401,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
        "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
    )


# -- wire formats ------------------------------------------------------------------------


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli), the checksum Secret Manager verifies on ``payload.dataCrc32c``."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _crc32c_table()

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)


def parse_timestamp(text: str, what: str) -> datetime:
    """An RFC 3339 timestamp as the JSON mapping of ``google.protobuf.Timestamp`` allows."""
    match = _RFC3339.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise invalid(f"Invalid value at '{what}': '{text}' is not an RFC 3339 timestamp.")
    year, month, day, hour, minute, second, frac, _z, sign, off_h, off_m = match.groups()
    micros = int((frac or "0").ljust(9, "0")[:6])
    try:
        stamp = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tzinfo=UTC)
    except ValueError:
        raise invalid(f"Invalid value at '{what}': '{text}' is not a valid date.") from None
    if sign:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        stamp = stamp - offset if sign == "+" else stamp + offset
    return stamp


def format_timestamp(stamp: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as Google's JSON mapping writes timestamps."""
    stamp = stamp.astimezone(UTC)
    base = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{stamp.microsecond:06d}Z" if stamp.microsecond else f"{base}Z"


_DURATION = re.compile(r"^(-?\d+)(?:\.(\d{1,9}))?s$")


def parse_duration(text: Any, what: str) -> timedelta:
    """A ``google.protobuf.Duration`` in its JSON form (``"3600s"``, ``"1.5s"``)."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise invalid(f"Invalid value at '{what}': '{text}' is not a duration such as \"3600s\".")
    seconds, frac = match.groups()
    sign = -1 if seconds.startswith("-") else 1
    micros = int((frac or "0").ljust(9, "0")[:6])
    return timedelta(seconds=int(seconds)) + sign * timedelta(microseconds=micros)


def format_duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds:.6f}".rstrip("0") + "s"


def _new_etag() -> str:
    """An opaque quoted etag (AIP-154), as the service returns them."""
    return f'"{_random.token_hex(7)}"'


def _pick(body: Mapping[str, Any], camel: str, snake: str) -> Any:
    """A field by its JSON (camelCase) or proto (snake_case) name; the JSON mapping accepts both."""
    return body[camel] if camel in body else body.get(snake)


def _camel_to_snake(path: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m.group(1).lower(), path)


# -- validation --------------------------------------------------------------------------

_SECRET_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
_ANNOTATION_KEY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_TOPIC = re.compile(r"^projects/[^/]+/topics/[^/]+$")


def _is_label_letter(ch: str) -> bool:
    return unicodedata.category(ch) in ("Ll", "Lo")


def _is_label_char(ch: str) -> bool:
    return _is_label_letter(ch) or unicodedata.category(ch).startswith("N") or ch in "_-"


def validate_labels(labels: Mapping[str, str]) -> None:
    """Label rules from the Secret resource reference (PCRE classes \\p{Ll}, \\p{Lo}, \\p{N})."""
    if len(labels) > MAX_LABELS:
        raise invalid(f"A secret may have at most {MAX_LABELS} labels; got {len(labels)}.")
    for key, value in labels.items():
        if not isinstance(value, str):
            raise invalid(f"Label value for key [{key}] must be a string.")
        if not (1 <= len(key) <= 63) or len(key.encode()) > 128:
            raise invalid(f"Label key [{key}] must be 1 to 63 characters and at most 128 bytes.")
        if not _is_label_letter(key[0]) or not all(_is_label_char(ch) for ch in key):
            raise invalid(
                f"Label key [{key}] must start with a lowercase letter and contain only lowercase letters, digits, '_' and '-'."
            )
        if len(value) > 63 or len(value.encode()) > 128:
            raise invalid(f"Label value for key [{key}] must be at most 63 characters and 128 bytes.")
        if not all(_is_label_char(ch) for ch in value):
            raise invalid(
                f"Label value [{value}] for key [{key}] may contain only lowercase letters, digits, '_' and '-'."
            )


def validate_annotations(annotations: Mapping[str, str]) -> None:
    total = 0
    for key, value in annotations.items():
        if not isinstance(value, str):
            raise invalid(f"Annotation value for key [{key}] must be a string.")
        if len(key.encode()) > 128 or not _ANNOTATION_KEY.match(key):
            raise invalid(
                f"Annotation key [{key}] must be 1 to 63 characters, begin and end with an alphanumeric character "
                "and contain only alphanumerics, '-', '_' and '.'."
            )
        total += len(key.encode()) + len(value.encode())
    if total >= MAX_ANNOTATIONS_BYTES:
        raise invalid(f"The total size of annotation keys and values must be less than 16KiB; got {total} bytes.")


def validate_topics(topics: list[str]) -> None:
    if len(topics) > MAX_TOPICS:
        raise invalid(f"A secret may have at most {MAX_TOPICS} topics; got {len(topics)}.")
    for topic in topics:
        if not _TOPIC.match(topic):
            raise invalid(f"Topic name [{topic}] must be of the form projects/*/topics/*.")


# -- state -------------------------------------------------------------------------------


@dataclass
class Version:
    """One secret version; ``payload`` is None once destroyed."""

    number: int
    create_time: datetime
    payload: bytes | None
    checksum: int
    client_checksum: bool
    etag: str = field(default_factory=_new_etag)
    state: str = "ENABLED"
    destroy_time: datetime | None = None
    scheduled_destroy_time: datetime | None = None


@dataclass
class Rotation:
    next_time: datetime | None = None
    period: timedelta | None = None

    @property
    def is_set(self) -> bool:
        return self.next_time is not None or self.period is not None


@dataclass
class Secret:
    """A secret and its versions, keyed in the store by (canonical project, secret id)."""

    project: str
    secret_id: str
    sequence: int
    create_time: datetime
    replication: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    topics: list[str] = field(default_factory=list)
    rotation: Rotation = field(default_factory=Rotation)
    version_aliases: dict[str, int] = field(default_factory=dict)
    expire_time: datetime | None = None
    version_destroy_ttl: timedelta | None = None
    etag: str = field(default_factory=_new_etag)
    versions: dict[int, Version] = field(default_factory=dict)

    @property
    def latest(self) -> Version | None:
        return self.versions[max(self.versions)] if self.versions else None


@dataclass(frozen=True)
class Notification:
    """One message Secret Manager would publish to a topic."""

    topic: str
    attributes: dict[str, str]
    data: bytes

    @property
    def event_type(self) -> str:
        return self.attributes.get("eventType", "")

    def json(self) -> Any:
        return json.loads(self.data) if self.data else None


# -- list filters ------------------------------------------------------------------------

_FILTER_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        (?P<neg>-)(?=[A-Za-z_(]) |
        (?P<field>[A-Za-z_][\w.\-]*)\s*(?P<op><=|>=|!=|=|:|<|>)\s*(?P<value>"(?:[^"\\]|\\.)*"|[^\s()"]+) |
        (?P<word>[^\s()]+)
    )""",
    re.VERBOSE,
)

Predicate = Callable[[Any], bool]
Getter = Callable[[Any, str], list[Any]]


@dataclass(frozen=True)
class FilterFields:
    """What a resource can be filtered on: field (or map prefix such as ``labels.``) -> kind."""

    kinds: Mapping[str, str]
    getter: Getter

    def kind_of(self, name: str) -> str:
        if name in self.kinds:
            return self.kinds[name]
        for prefix, kind in self.kinds.items():
            if prefix.endswith(".") and name.startswith(prefix) and len(name) > len(prefix):
                return kind
        raise invalid(f"Invalid filter: unsupported field [{name}].")


class ListFilter:
    """The documented subset of the list-filter language (AIP-160) that the service accepts.

    Comparisons ``field:value`` (has / substring, ``*`` wildcard, ``:*`` presence), ``=``,
    ``!=`` and, on timestamps, ``< <= > >=``; combined with ``AND`` (or juxtaposition),
    ``OR`` (which binds tighter, as in AIP-160), ``NOT``/``-`` and parentheses. Anything
    else, including a bare word, is INVALID_ARGUMENT rather than silently matching.
    """

    def __init__(self, text: str, fields: FilterFields) -> None:
        self.text = text
        self.fields = fields
        self._tokens = self._tokenize(text)
        self._pos = 0
        self.predicate: Predicate = (lambda _r: True) if not self._tokens else self._expression()
        if self._pos != len(self._tokens):
            raise invalid(f"Invalid filter [{text}]: unexpected {self._describe(self._tokens[self._pos])}.")

    def matches(self, resource: Any) -> bool:
        return self.predicate(resource)

    # grammar ----------------------------------------------------------------------------
    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, Any]]:
        tokens: list[tuple[str, Any]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _FILTER_TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise invalid(f"Invalid filter [{text}] at offset {pos}.")
            pos = match.end()
            if match.group("lparen"):
                tokens.append(("(", None))
            elif match.group("rparen"):
                tokens.append((")", None))
            elif match.group("neg"):
                tokens.append(("NOT", None))
            elif match.group("field"):
                value = match.group("value")
                if value.startswith('"'):
                    value = re.sub(r"\\(.)", r"\1", value[1:-1])
                tokens.append(("cmp", (match.group("field"), match.group("op"), value)))
            elif match.group("word") in ("AND", "OR", "NOT"):
                tokens.append((match.group("word"), None))
            else:
                raise invalid(f"Invalid filter [{text}]: [{match.group('word')}] is not a comparison.")
        return tokens

    @staticmethod
    def _describe(token: tuple[str, Any]) -> str:
        return f"'{token[0]}'" if token[0] != "cmp" else "comparison"

    def _peek(self) -> str | None:
        return self._tokens[self._pos][0] if self._pos < len(self._tokens) else None

    def _expression(self) -> Predicate:
        terms = [self._disjunction()]
        while self._peek() not in (None, ")"):
            if self._peek() == "AND":
                self._pos += 1
            terms.append(self._disjunction())
        return terms[0] if len(terms) == 1 else (lambda r: all(t(r) for t in terms))

    def _disjunction(self) -> Predicate:
        terms = [self._unary()]
        while self._peek() == "OR":
            self._pos += 1
            terms.append(self._unary())
        return terms[0] if len(terms) == 1 else (lambda r: any(t(r) for t in terms))

    def _unary(self) -> Predicate:
        kind = self._peek()
        if kind == "NOT":
            self._pos += 1
            inner = self._unary()
            return lambda r: not inner(r)
        if kind == "(":
            self._pos += 1
            inner = self._expression()
            if self._peek() != ")":
                raise invalid(f"Invalid filter [{self.text}]: missing ')'.")
            self._pos += 1
            return inner
        if kind == "cmp":
            _, (name, op, value) = self._tokens[self._pos]
            self._pos += 1
            return self._comparison(name, op, value)
        raise invalid(f"Invalid filter [{self.text}]: expected a comparison, got {kind or 'end of input'}.")

    # comparisons ------------------------------------------------------------------------
    def _comparison(self, name: str, op: str, value: str) -> Predicate:
        kind = self.fields.kind_of(name)
        getter = self.fields.getter
        if kind == "presence":
            if (op, value) != (":", "*"):
                raise invalid(f"Invalid filter: [{name}] supports only '{name}:*'.")
            return lambda r: bool(getter(r, name))
        if kind == "time":
            if op == ":":
                raise invalid(f"Invalid filter: [{name}] is a timestamp; compare it with =, !=, <, <=, > or >=.")
            bound = parse_timestamp(value, "filter")
            compare = _ORDERINGS[op]
            return lambda r: any(compare(v, bound) for v in getter(r, name))
        if kind.startswith("enum"):
            allowed = kind.split(":", 1)[1].split(",")
            if op not in (":", "=", "!=") or value not in allowed:
                raise invalid(f"Invalid filter: [{name}] accepts one of {', '.join(allowed)} with ':', '=' or '!='.")
            if op == "!=":
                return lambda r: value not in getter(r, name)
            return lambda r: value in getter(r, name)
        # strings
        if op == ":":
            if value == "*":
                return lambda r: bool(getter(r, name))
            pattern = re.compile(".*".join(re.escape(part) for part in value.split("*")))
            return lambda r: any(pattern.search(v) for v in getter(r, name))
        if op == "=":
            return lambda r: value in getter(r, name)
        if op == "!=":
            return lambda r: value not in getter(r, name)
        raise invalid(f"Invalid filter: operator '{op}' is not supported on [{name}].")


_ORDERINGS: dict[str, Callable[[datetime, datetime], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


# -- who may call what ------------------------------------------------------------------

LIST_PERMISSION = "secretmanager.secrets.list"
CREATE_PERMISSION = "secretmanager.secrets.create"

#: The permission each method checks and what it is checked on: the project (``parent``),
#: the secret, or the version the path names (the REST reference's "Authorization requires
#: the following IAM permission on the specified resource" line of each method).
_PERMISSIONS: dict[str, tuple[str, str]] = {
    "create_secret": (CREATE_PERMISSION, "project"),
    "list_secrets": (LIST_PERMISSION, "project"),
    "get_secret": ("secretmanager.secrets.get", "secret"),
    "update_secret": ("secretmanager.secrets.update", "secret"),
    "delete_secret": ("secretmanager.secrets.delete", "secret"),
    "add_secret_version": ("secretmanager.versions.add", "secret"),
    "list_secret_versions": ("secretmanager.versions.list", "secret"),
    "get_secret_version": ("secretmanager.versions.get", "version"),
    "access_secret_version": ("secretmanager.versions.access", "version"),
    "disable_secret_version": ("secretmanager.versions.disable", "version"),
    "enable_secret_version": ("secretmanager.versions.enable", "version"),
    "destroy_secret_version": ("secretmanager.versions.destroy", "version"),
}

TokenResolver = Callable[[str], str | None]


@dataclass(frozen=True)
class CallerAccess:
    """Where one caller's Secret Manager roles reach, as conditional role bindings define it.

    The deployment (deploy/access.py) grants each function its Secret Manager roles on the
    project under ``resource.name.startsWith("projects/NUMBER/secrets/dataloop-gar-")``, plus
    one secret's own binding for the Dataloop credentials, plus (for listing and creating) a
    ``resource.type == "cloudresourcemanager.googleapis.com/Project"`` clause. This is that,
    and only that: *where* the roles reach, not *which* roles; inside its reach a caller may
    call every method.

    - ``prefixes``: full resource-name prefixes, matched against the name IAM evaluates,
      which names the project by *number* whatever form the request used (Secret Manager's
      IAM conditions documentation). A prefix written with the project id matches nothing,
      as it would on Google. Version calls match on the version's name, which starts with
      its secret's.
    - ``secrets``: secret ids whose own IAM policy grants the caller a role (a binding on
      the secret, no condition): the secret and all its versions.
    - ``project_permissions``: what the caller may do on the project itself, i.e. list
      secrets and create them. Google checks both on the parent project (the REST reference
      of ``secrets.list`` and ``secrets.create``), so a condition on ``resource.name`` of a
      secret neither grants them nor filters what a granted list returns: a caller allowed
      to list sees every secret of the project, names and metadata, even ones it could not
      read. The default grants both, as the deployment's project-level clause does for the
      functions that list or create.
    """

    prefixes: tuple[str, ...] = ()
    secrets: frozenset[str] = frozenset()
    project_permissions: frozenset[str] = frozenset({LIST_PERMISSION, CREATE_PERMISSION})

    def allows(self, permission: str, scope: str, resource: str, secret_id: str) -> bool:
        if scope == "project":
            return permission in self.project_permissions
        return secret_id in self.secrets or any(resource.startswith(prefix) for prefix in self.prefixes)


# -- the service -------------------------------------------------------------------------

_SECRET_MUTABLE_PATHS = (
    "labels",
    "annotations",
    "version_aliases",
    "topics",
    "rotation",
    "rotation.next_rotation_time",
    "rotation.rotation_period",
    "expire_time",
    "ttl",
    "version_destroy_ttl",
)

Route = tuple[str, re.Pattern[str], str]
_SEG = r"(?P<{}>[^/:]+)"
_SECRET = r"/v1/projects/" + _SEG.format("project") + r"/secrets/" + _SEG.format("secret")
_VERSION = _SECRET + r"/versions/" + _SEG.format("version")
ROUTES: list[Route] = [
    ("POST", re.compile(r"^/v1/projects/" + _SEG.format("project") + r"/secrets$"), "create_secret"),
    ("GET", re.compile(r"^/v1/projects/" + _SEG.format("project") + r"/secrets$"), "list_secrets"),
    ("GET", re.compile("^" + _SECRET + "$"), "get_secret"),
    ("PATCH", re.compile("^" + _SECRET + "$"), "update_secret"),
    ("DELETE", re.compile("^" + _SECRET + "$"), "delete_secret"),
    ("POST", re.compile("^" + _SECRET + ":addVersion$"), "add_secret_version"),
    ("GET", re.compile("^" + _SECRET + "/versions$"), "list_secret_versions"),
    ("GET", re.compile("^" + _VERSION + "$"), "get_secret_version"),
    ("GET", re.compile("^" + _VERSION + ":access$"), "access_secret_version"),
    ("POST", re.compile("^" + _VERSION + ":disable$"), "disable_secret_version"),
    ("POST", re.compile("^" + _VERSION + ":enable$"), "enable_secret_version"),
    ("POST", re.compile("^" + _VERSION + ":destroy$"), "destroy_secret_version"),
    ("POST", re.compile(r"^/_standin/fire-due-rotations$"), "control_fire_due_rotations"),
]


@dataclass
class _Call:
    """One parsed request: path parameters, query, JSON body and how to encode enums."""

    params: dict[str, str]
    query: Mapping[str, str]
    body: dict[str, Any]
    int_enums: bool

    @property
    def project(self) -> str:
        return self.params["project"]


class SecretManagerStandIn:
    """The WSGI app and in-memory state of the local Secret Manager.

    Args:
        project_numbers: project id -> project number. Requests may name a project either way
            (both reach the same secrets); responses echo the form the request used, and event
            notifications carry ``projects/NUMBER/secrets/ID`` as the real service sends them.
        publish_hook: called as ``hook(topic, attributes, data)`` for every notification, after
            the operation's state change is committed and outside the store's lock, so a hook
            may call back into the stand-in. Every notification is also kept in ``published``.
        clock: source of "now" (UTC), replaceable so tests can move time.

    Who is calling: Google knows a caller by the OAuth 2 access token in ``Authorization:
    Bearer``; so does the stand-in, once ``authenticate`` resolves tokens to principals (the
    IAM stand-in's :meth:`~localcloud.iam.IamState.principal_for_access_token` does, for the
    tokens it mints). A token it cannot resolve is answered 401 UNAUTHENTICATED. A request
    without a token (the local cloud's clients use anonymous credentials) and a principal
    with no :meth:`restrict` entry hold every permission, so everything that ran before
    access control existed runs unchanged; only a restricted principal's calls are checked,
    before the request is looked at any further, and a call outside its reach is answered
    403 PERMISSION_DENIED in the same words whether or not the resource exists.
    """

    def __init__(
        self,
        project_numbers: Mapping[str, str] | None = None,
        publish_hook: PublishHook | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.project_numbers = dict(project_numbers or {})
        self.publish_hook = publish_hook
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.published: list[Notification] = []
        self._secrets: dict[tuple[str, str], Secret] = {}
        self._sequence = 0
        self._lock = threading.RLock()
        self._ticker: threading.Thread | None = None
        self._ticker_stop = threading.Event()
        self.authenticate: TokenResolver | None = None
        self._access: dict[str, CallerAccess] = {}

    # -- in-process controls -------------------------------------------------------------
    def reset(self) -> None:
        """Forget every secret, recorded notification and access rule (the hook and clock stay)."""
        with self._lock:
            self._secrets.clear()
            self.published.clear()
            self._access.clear()
            self.authenticate = None

    def restrict(self, principal: str, access: CallerAccess) -> None:
        """From now on check ``principal``'s calls (its email, as ``authenticate`` returns it) against ``access``."""
        with self._lock:
            self._access[principal] = access

    def unrestrict(self, principal: str) -> None:
        with self._lock:
            self._access.pop(principal, None)

    def notifications(self, event_type: str | None = None) -> list[Notification]:
        with self._lock:
            return [n for n in self.published if event_type is None or n.event_type == event_type]

    def fire_due_rotations(self, now: datetime | None = None) -> list[str]:
        """Send SECRET_ROTATE for every secret whose next_rotation_time has passed.

        As the real scheduler does, the secret's next_rotation_time then moves on by its
        rotation_period (past ``now``, so a long pause fires once, not once per missed
        period); without a period the schedule is cleared. The secret's etag is renewed, since
        its stored rotation changed (the documentation does not say; a renewed etag is the
        stricter case for callers holding an old one). Returns the secrets' names.
        """
        now = now or self.clock()
        fired: list[str] = []
        events: list[Notification] = []
        with self._lock:
            for secret in self._secrets.values():
                due = secret.rotation.next_time
                if due is None or due > now:
                    continue
                if secret.rotation.period:
                    while due <= now:
                        due += secret.rotation.period
                    secret.rotation.next_time = due
                else:
                    secret.rotation = Rotation()
                secret.etag = _new_etag()
                fired.append(self._secret_name(secret, self._notify_project(secret)))
                events += self._secret_events(secret, "SECRET_ROTATE", now)
        self._dispatch(events)
        return fired

    def tick(self, now: datetime | None = None) -> None:
        """Everything the service does on its own as time passes: rotations, expiry, delayed destroys."""
        now = now or self.clock()
        self.fire_due_rotations(now)
        events: list[Notification] = []
        with self._lock:
            for key, secret in list(self._secrets.items()):
                if secret.expire_time is not None and secret.expire_time <= now:
                    events += self._secret_events(secret, "SECRET_DELETE", now, {"deleteType": "EXPIRATION"})
                    del self._secrets[key]
                    continue
                for version in secret.versions.values():
                    if version.scheduled_destroy_time is not None and version.scheduled_destroy_time <= now:
                        self._destroy_now(version, now)
                        events += self._version_events(secret, version, "SECRET_VERSION_DESTROY", now)
        self._dispatch(events)

    def start_ticker(self, interval_seconds: float = 1.0) -> None:
        """Run :meth:`tick` in the background, for the demo and end-to-end runs."""
        if self._ticker is not None:
            return
        self._ticker_stop.clear()

        def run() -> None:
            while not self._ticker_stop.wait(interval_seconds):
                try:
                    self.tick()
                except Exception:  # keep ticking; a hook failure must not stop the scheduler
                    log.exception("secret manager stand-in: tick failed")

        self._ticker = threading.Thread(target=run, name="secretmanager-ticker", daemon=True)
        self._ticker.start()

    def stop_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker_stop.set()
            self._ticker.join(timeout=5)
            self._ticker = None

    # -- WSGI ----------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            status, payload = self._handle(request)
        except GoogleApiError as error:
            status, payload = error.code, error.body()
        except Exception:
            log.exception("secret manager stand-in: internal error")
            status, payload = 500, GoogleApiError(500, "Internal error encountered.").body()
        response = Response(json.dumps(payload), status=status, content_type="application/json; charset=UTF-8")
        return response(environ, start_response)

    def _handle(self, request: Request) -> tuple[int, Any]:
        path = request.path
        matched_path = False
        for method, pattern, handler in ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            matched_path = True
            if method != request.method:
                continue
            params = match.groupdict()
            self._authorize(request, handler, params)  # before the body or the store is looked at
            call = _Call(
                params=params,
                query=request.args,
                body=self._body(request),
                int_enums="enum-encoding=int" in request.args.get("$alt", ""),
            )
            return 200, getattr(self, handler)(call)
        if "/locations/" in path or path.endswith((":getIamPolicy", ":setIamPolicy", ":testIamPermissions")):
            raise unimplemented(f"{request.method} {path} is not implemented by the local Secret Manager.")
        if matched_path:
            raise not_found(f"Method {request.method} is not defined for {path}.")
        raise not_found(f"The requested URL {path} was not found on this server.")

    def _authorize(self, request: Request, handler: str, params: Mapping[str, str]) -> None:
        """Refuse a restricted caller's call outside its reach (see :class:`CallerAccess`)."""
        if handler not in _PERMISSIONS:
            return  # the stand-in's own controls, no Google method
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        resolve = self.authenticate
        if not token or scheme.lower() != "bearer" or resolve is None:
            return
        principal = resolve(token.strip())
        if principal is None:
            raise unauthenticated()
        with self._lock:
            access = self._access.get(principal)
        if access is None:
            return
        permission, scope = _PERMISSIONS[handler]
        project, secret_id = params["project"], params.get("secret", "")
        shown = f"projects/{project}"  # the refusal names the resource as the request did
        evaluated = f"projects/{self._number(project)}"  # IAM evaluates it by project number
        if scope != "project":
            shown += f"/secrets/{secret_id}"
            evaluated += f"/secrets/{secret_id}"
        if scope == "version":
            shown += f"/versions/{params['version']}"
            evaluated += f"/versions/{params['version']}"
        if not access.allows(permission, scope, evaluated, secret_id):
            raise permission_denied(permission, shown)

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        raw = request.get_data()
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise invalid("Invalid JSON payload received.") from None
        if not isinstance(body, dict):
            raise invalid("Invalid JSON payload received: expected an object.")
        return body

    # -- naming --------------------------------------------------------------------------
    def _canonical(self, project: str) -> str:
        for project_id, number in self.project_numbers.items():
            if project == number:
                return project_id
        return project

    def _number(self, project: str) -> str:
        """The project's number if known (the form IAM conditions see), else as given."""
        canonical = self._canonical(project)
        return self.project_numbers.get(canonical, canonical)

    def _notify_project(self, secret: Secret) -> str:
        return self.project_numbers.get(secret.project, secret.project)

    @staticmethod
    def _secret_name(secret: Secret, project: str) -> str:
        return f"projects/{project}/secrets/{secret.secret_id}"

    def _lookup(self, project: str, secret_id: str) -> Secret:
        secret = self._secrets.get((self._canonical(project), secret_id))
        if secret is None:
            raise not_found(f"Secret [projects/{project}/secrets/{secret_id}] not found.")
        return secret

    def _resolve(self, call: _Call, secret: Secret, *, aliases: bool) -> Version:
        """The version a path names: a number, ``latest`` or (for get/access) an alias."""
        ref = call.params["version"]
        name = f"projects/{call.project}/secrets/{secret.secret_id}/versions/{ref}"
        if ref.isdigit():
            version = secret.versions.get(int(ref))
        elif ref == "latest" and aliases:
            version = secret.latest
            if version is None:
                raise not_found(
                    f"Secret [projects/{call.project}/secrets/{secret.secret_id}] not found or has no versions."
                )
        elif aliases and _ALIAS.match(ref):
            number = secret.version_aliases.get(ref)
            version = secret.versions.get(number) if number is not None else None
        else:
            raise invalid(f"Invalid version id [{ref}]: this method accepts only a version number.")
        if version is None:
            raise not_found(f"Secret Version [{name}] not found.")
        return version

    # -- rendering -----------------------------------------------------------------------
    def _secret_json(self, secret: Secret, project: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self._secret_name(secret, project),
            "replication": secret.replication,
            "createTime": format_timestamp(secret.create_time),
        }
        if secret.labels:
            out["labels"] = dict(secret.labels)
        if secret.topics:
            out["topics"] = [{"name": topic} for topic in secret.topics]
        if secret.expire_time is not None:
            out["expireTime"] = format_timestamp(secret.expire_time)
        out["etag"] = secret.etag
        if secret.rotation.is_set:
            rotation: dict[str, str] = {}
            if secret.rotation.next_time is not None:
                rotation["nextRotationTime"] = format_timestamp(secret.rotation.next_time)
            if secret.rotation.period is not None:
                rotation["rotationPeriod"] = format_duration(secret.rotation.period)
            out["rotation"] = rotation
        if secret.version_aliases:
            out["versionAliases"] = {alias: str(number) for alias, number in secret.version_aliases.items()}
        if secret.annotations:
            out["annotations"] = dict(secret.annotations)
        if secret.version_destroy_ttl is not None:
            out["versionDestroyTtl"] = format_duration(secret.version_destroy_ttl)
        return out

    def _version_json(self, secret: Secret, version: Version, project: str, int_enums: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": f"{self._secret_name(secret, project)}/versions/{version.number}",
            "createTime": format_timestamp(version.create_time),
        }
        if version.destroy_time is not None:
            out["destroyTime"] = format_timestamp(version.destroy_time)
        out["state"] = STATES.index(version.state) if int_enums else version.state
        if "automatic" in secret.replication:
            out["replicationStatus"] = {"automatic": {}}
        else:
            replicas = secret.replication["userManaged"]["replicas"]
            out["replicationStatus"] = {"userManaged": {"replicas": [{"location": r["location"]} for r in replicas]}}
        out["etag"] = version.etag
        if version.client_checksum:
            out["clientSpecifiedPayloadChecksum"] = True
        if version.scheduled_destroy_time is not None:
            out["scheduledDestroyTime"] = format_timestamp(version.scheduled_destroy_time)
        return out

    # -- notifications -------------------------------------------------------------------
    def _attributes(self, secret: Secret, event_type: str, now: datetime) -> dict[str, str]:
        return {
            "eventType": event_type,
            "dataFormat": "JSON_API_V1",
            "secretId": self._secret_name(secret, self._notify_project(secret)),
            "timestamp": now.astimezone(UTC).isoformat(),
        }

    def _secret_events(
        self, secret: Secret, event_type: str, now: datetime, extra: Mapping[str, str] | None = None
    ) -> list[Notification]:
        attributes = self._attributes(secret, event_type, now) | dict(extra or {})
        data = json.dumps(self._secret_json(secret, self._notify_project(secret))).encode()
        return [Notification(topic, dict(attributes), data) for topic in secret.topics]

    def _version_events(self, secret: Secret, version: Version, event_type: str, now: datetime) -> list[Notification]:
        project = self._notify_project(secret)
        attributes = self._attributes(secret, event_type, now)
        attributes["versionId"] = f"{self._secret_name(secret, project)}/versions/{version.number}"
        data = json.dumps(self._version_json(secret, version, project)).encode()
        return [Notification(topic, dict(attributes), data) for topic in secret.topics]

    @staticmethod
    def _topic_configured(secret: Secret) -> list[Notification]:
        """The test message sent to every topic when a secret's topics are set (no data)."""
        return [Notification(topic, {"eventType": "TOPIC_CONFIGURED"}, b"") for topic in secret.topics]

    def _dispatch(self, events: list[Notification]) -> None:
        if not events:
            return
        with self._lock:
            self.published.extend(events)
        hook = self.publish_hook
        if hook is None:
            return
        for event in events:
            try:
                hook(event.topic, dict(event.attributes), event.data)
            except Exception:
                # The real service publishes best-effort once the operation has succeeded.
                log.warning(
                    "secret manager stand-in: publishing %s to %s failed", event.event_type, event.topic, exc_info=True
                )

    # -- request parsing -----------------------------------------------------------------
    def _replication(self, body: Mapping[str, Any]) -> dict[str, Any]:
        replication = body.get("replication")
        if not isinstance(replication, dict) or not replication:
            raise invalid(
                "Secret.replication is required: set either replication.automatic or replication.userManaged."
            )
        automatic = replication.get("automatic")
        user_managed = _pick(replication, "userManaged", "user_managed")
        if (automatic is not None) == (user_managed is not None):
            raise invalid("Exactly one of replication.automatic and replication.userManaged must be set.")
        if automatic is not None:
            return {"automatic": {}}
        replicas = user_managed.get("replicas") if isinstance(user_managed, dict) else None
        if not replicas or not all(isinstance(r, dict) and r.get("location") for r in replicas):
            raise invalid("replication.userManaged.replicas must name at least one location.")
        return {"userManaged": {"replicas": [{"location": r["location"]} for r in replicas]}}

    @staticmethod
    def _string_map(body: Mapping[str, Any], camel: str, snake: str) -> dict[str, str]:
        value = _pick(body, camel, snake)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise invalid(f"Invalid value at 'secret.{snake}': expected a map.")
        return dict(value)

    @staticmethod
    def _topics(body: Mapping[str, Any]) -> list[str]:
        topics = body.get("topics") or []
        if not isinstance(topics, list) or not all(
            isinstance(t, dict) and isinstance(t.get("name"), str) for t in topics
        ):
            raise invalid("Invalid value at 'secret.topics': expected a list of {\"name\": ...}.")
        return [t["name"] for t in topics]

    @staticmethod
    def _aliases(body: Mapping[str, Any]) -> dict[str, int]:
        raw = _pick(body, "versionAliases", "version_aliases") or {}
        if not isinstance(raw, dict):
            raise invalid("Invalid value at 'secret.version_aliases': expected a map.")
        aliases: dict[str, int] = {}
        for alias, number in raw.items():
            try:
                aliases[alias] = int(number)
            except (TypeError, ValueError):
                raise invalid(f"Invalid value at 'secret.version_aliases[{alias}]': expected an int64.") from None
        return aliases

    @staticmethod
    def _rotation(body: Mapping[str, Any]) -> Rotation:
        raw = body.get("rotation") or {}
        if not isinstance(raw, dict):
            raise invalid("Invalid value at 'secret.rotation': expected an object.")
        next_time = _pick(raw, "nextRotationTime", "next_rotation_time")
        period = _pick(raw, "rotationPeriod", "rotation_period")
        return Rotation(
            next_time=parse_timestamp(next_time, "secret.rotation.next_rotation_time") if next_time else None,
            period=parse_duration(period, "secret.rotation.rotation_period") if period else None,
        )

    def _expiration(self, body: Mapping[str, Any], now: datetime) -> datetime | None:
        expire = _pick(body, "expireTime", "expire_time")
        ttl = body.get("ttl")
        if expire and ttl:
            raise invalid("Only one of secret.expire_time and secret.ttl may be set.")
        if ttl:
            span = parse_duration(ttl, "secret.ttl")
            if span <= timedelta(0):
                raise invalid("secret.ttl must be positive.")
            return now + span
        if expire:
            stamp = parse_timestamp(expire, "secret.expire_time")
            if stamp <= now:
                raise invalid("secret.expire_time must be in the future.")
            return stamp
        return None

    def _check_aliases(self, secret: Secret, aliases: Mapping[str, int]) -> None:
        if len(aliases) > MAX_ALIASES:
            raise invalid(f"A secret may have at most {MAX_ALIASES} version aliases; got {len(aliases)}.")
        for alias, number in aliases.items():
            if not _ALIAS.match(alias) or alias in ("latest", "NEW"):
                raise invalid(
                    f"Version alias [{alias}] must start with a letter, be at most 63 letters, digits, '-' or '_', "
                    "and must not be 'latest' or 'NEW'."
                )
            version = secret.versions.get(number)
            if version is None:
                raise invalid(f"Version alias [{alias}] refers to version [{number}], which does not exist.")
            if version.state == "DESTROYED":
                raise invalid(f"Version alias [{alias}] refers to version [{number}], which is destroyed.")

    def _check_rotation(self, rotation: Rotation, topics: list[str], now: datetime, *, new_time: bool) -> None:
        if not rotation.is_set:
            return
        if not topics:
            raise invalid("A secret with a rotation policy must have at least one topic (Secret.topics).")
        if rotation.period is not None:
            if rotation.next_time is None:
                raise invalid("rotation.next_rotation_time must be set when rotation.rotation_period is set.")
            if rotation.period.microseconds:
                raise invalid("rotation.rotation_period must be a whole number of seconds.")
            if not (MIN_ROTATION_PERIOD <= rotation.period <= MAX_ROTATION_SPAN):
                raise invalid("rotation.rotation_period must be at least 3600s and at most 3153600000s.")
        if new_time and rotation.next_time is not None:
            if rotation.next_time < now + MIN_ROTATION_LEAD:
                raise invalid("rotation.next_rotation_time must be at least 300s (5 min) in the future.")
            if rotation.next_time > now + MAX_ROTATION_SPAN:
                raise invalid("rotation.next_rotation_time must be at most 3153600000s (100 years) in the future.")

    @staticmethod
    def _check_etag(given: str | None, current: str, what: str) -> None:
        if given and given != current:
            raise precondition(f"The etag provided in the request does not match the current etag of the {what}.")

    # -- secrets -------------------------------------------------------------------------
    def create_secret(self, call: _Call) -> dict[str, Any]:
        secret_id = call.query.get("secretId", "")
        if not secret_id:
            raise invalid("secret_id is required.")
        if not _SECRET_ID.match(secret_id):
            raise invalid(
                f"Secret id [{secret_id}] must be 1 to 255 characters of letters, numerals, hyphens and underscores."
            )
        body = call.body
        now = self.clock()
        replication = self._replication(body)
        labels = self._string_map(body, "labels", "labels")
        annotations = self._string_map(body, "annotations", "annotations")
        topics = self._topics(body)
        aliases = self._aliases(body)
        rotation = self._rotation(body)
        validate_labels(labels)
        validate_annotations(annotations)
        validate_topics(topics)
        self._check_rotation(rotation, topics, now, new_time=True)
        destroy_ttl = _pick(body, "versionDestroyTtl", "version_destroy_ttl")
        with self._lock:
            key = (self._canonical(call.project), secret_id)
            if key in self._secrets:
                raise already_exists(f"Secret [projects/{call.project}/secrets/{secret_id}] already exists.")
            self._sequence += 1
            secret = Secret(
                project=key[0],
                secret_id=secret_id,
                sequence=self._sequence,
                create_time=now,
                replication=replication,
                labels=labels,
                annotations=annotations,
                topics=topics,
                rotation=rotation,
                expire_time=self._expiration(body, now),
                version_destroy_ttl=parse_duration(destroy_ttl, "secret.version_destroy_ttl") if destroy_ttl else None,
            )
            self._check_aliases(secret, aliases)
            self._secrets[key] = secret
            events = self._topic_configured(secret) + self._secret_events(secret, "SECRET_CREATE", now)
            result = self._secret_json(secret, call.project)
        self._dispatch(events)
        return result

    def get_secret(self, call: _Call) -> dict[str, Any]:
        with self._lock:
            return self._secret_json(self._lookup(call.project, call.params["secret"]), call.project)

    def list_secrets(self, call: _Call) -> dict[str, Any]:
        project = call.project
        text = call.query.get("filter", "")

        def values(secret: Secret, name: str) -> list[Any]:
            if name == "name":
                return [secret.secret_id, self._secret_name(secret, project)]
            if name.startswith("labels."):
                key = name[len("labels.") :]
                return [secret.labels[key]] if key in secret.labels else []
            if name == "create_time":
                return [secret.create_time]
            if name == "expire_time":
                return [secret.expire_time] if secret.expire_time else []
            if name == "rotation.next_rotation_time":
                return [secret.rotation.next_time] if secret.rotation.next_time else []
            if name == "replication.automatic":
                return ["automatic"] if "automatic" in secret.replication else []
            if name == "replication.user_managed.replicas.location":
                return [r["location"] for r in secret.replication.get("userManaged", {}).get("replicas", [])]
            if name == "topics.name":
                return list(secret.topics)
            return []

        fields = FilterFields(
            {
                "name": "string",
                "labels.": "string",
                "create_time": "time",
                "expire_time": "time",
                "rotation.next_rotation_time": "time",
                "replication.automatic": "presence",
                "replication.user_managed.replicas.location": "string",
                "topics.name": "string",
            },
            values,
        )
        matcher = ListFilter(text, fields)
        with self._lock:
            canonical = self._canonical(project)
            items = sorted(
                (s for s in self._secrets.values() if s.project == canonical),
                key=lambda s: s.sequence,
                reverse=True,  # newest first, as ListSecretsResponse documents
            )
            total = len(items)
            selected = [s for s in items if matcher.matches(s)]
            page, token = self._page(call, selected, lambda s: s.sequence, scope=f"secrets|{canonical}|{text}")
            out: dict[str, Any] = {}
            if page:
                out["secrets"] = [self._secret_json(s, project) for s in page]
            if token:
                out["nextPageToken"] = token
            if total and not text:  # total_size is 0 (omitted) when a filter is set
                out["totalSize"] = total
            return out

    def update_secret(self, call: _Call) -> dict[str, Any]:
        mask = [p.strip() for p in call.query.get("updateMask", "").split(",") if p.strip()]
        if not mask:
            raise invalid("update_mask is required and must name at least one field.")
        paths: list[str] = []
        for raw in mask:
            path = _camel_to_snake(raw)
            if path == "*":
                paths += ["labels", "annotations", "version_aliases", "topics", "rotation", "expire_time"]
                paths += ["version_destroy_ttl"]
            elif path in _SECRET_MUTABLE_PATHS:
                paths.append(path)
            else:
                raise invalid(f"Invalid update_mask path [{raw}]: the field does not exist or cannot be updated.")
        body = call.body
        now = self.clock()
        with self._lock:
            secret = self._lookup(call.project, call.params["secret"])
            self._check_etag(body.get("etag"), secret.etag, "secret")
            labels, annotations = dict(secret.labels), dict(secret.annotations)
            aliases, topics = dict(secret.version_aliases), list(secret.topics)
            rotation = Rotation(secret.rotation.next_time, secret.rotation.period)
            expire_time, destroy_ttl = secret.expire_time, secret.version_destroy_ttl
            requested = self._rotation(body)
            new_time = False
            for path in paths:
                if path == "labels":
                    labels = self._string_map(body, "labels", "labels")
                elif path == "annotations":
                    annotations = self._string_map(body, "annotations", "annotations")
                elif path == "version_aliases":
                    aliases = self._aliases(body)
                elif path == "topics":
                    topics = self._topics(body)
                elif path == "rotation":
                    rotation, new_time = requested, True
                elif path == "rotation.next_rotation_time":
                    rotation.next_time, new_time = requested.next_time, True
                elif path == "rotation.rotation_period":
                    rotation.period = requested.period
                elif path in ("expire_time", "ttl"):
                    expire_time = self._expiration(body, now)
                elif path == "version_destroy_ttl":
                    ttl = _pick(body, "versionDestroyTtl", "version_destroy_ttl")
                    destroy_ttl = parse_duration(ttl, "secret.version_destroy_ttl") if ttl else None
            validate_labels(labels)
            validate_annotations(annotations)
            validate_topics(topics)
            self._check_aliases(secret, aliases)
            self._check_rotation(rotation, topics, now, new_time=new_time)
            secret.labels, secret.annotations, secret.topics = labels, annotations, topics
            secret.version_aliases, secret.rotation = aliases, rotation
            secret.expire_time, secret.version_destroy_ttl = expire_time, destroy_ttl
            secret.etag = _new_etag()
            events = self._topic_configured(secret) if "topics" in paths else []
            events += self._secret_events(secret, "SECRET_UPDATE", now)
            result = self._secret_json(secret, call.project)
        self._dispatch(events)
        return result

    def delete_secret(self, call: _Call) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            secret = self._lookup(call.project, call.params["secret"])
            self._check_etag(call.query.get("etag"), secret.etag, "secret")
            del self._secrets[(secret.project, secret.secret_id)]
            events = self._secret_events(secret, "SECRET_DELETE", now, {"deleteType": "REQUESTED"})
        self._dispatch(events)
        return {}

    # -- versions ------------------------------------------------------------------------
    def add_secret_version(self, call: _Call) -> dict[str, Any]:
        payload = call.body.get("payload")
        if not isinstance(payload, dict) or not payload.get("data"):
            raise invalid("Field [payload] is required.")
        try:
            data = base64.b64decode(payload["data"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            try:
                data = base64.urlsafe_b64decode(payload["data"])
            except (binascii.Error, ValueError, TypeError):
                raise invalid("Invalid value at 'payload.data': not valid base64.") from None
        if len(data) > MAX_PAYLOAD_BYTES:
            raise invalid(f"Secret payload must be at most 65536 bytes; got {len(data)} bytes.")
        checksum = crc32c(data)
        given = _pick(payload, "dataCrc32c", "data_crc32c")
        if given is not None:
            try:
                given_value = int(given)
            except (TypeError, ValueError):
                raise invalid("Invalid value at 'payload.data_crc32c': expected an int64.") from None
            if given_value != checksum:
                raise invalid("Checksum mismatch: payload.data_crc32c does not match the CRC32C of payload.data.")
        now = self.clock()
        with self._lock:
            secret = self._lookup(call.project, call.params["secret"])
            number = max(secret.versions, default=0) + 1
            version = Version(number, now, data, checksum, client_checksum=given is not None)
            secret.versions[number] = version
            events = self._version_events(secret, version, "SECRET_VERSION_ADD", now)
            result = self._version_json(secret, version, call.project, call.int_enums)
        self._dispatch(events)
        return result

    def get_secret_version(self, call: _Call) -> dict[str, Any]:
        with self._lock:
            secret = self._lookup(call.project, call.params["secret"])
            version = self._resolve(call, secret, aliases=True)
            return self._version_json(secret, version, call.project, call.int_enums)

    def access_secret_version(self, call: _Call) -> dict[str, Any]:
        with self._lock:
            secret = self._secrets.get((self._canonical(call.project), call.params["secret"]))
            if secret is None:
                raise not_found(
                    f"Secret [projects/{call.project}/secrets/{call.params['secret']}] not found or has no versions."
                )
            version = self._resolve(call, secret, aliases=True)
            name = f"{self._secret_name(secret, call.project)}/versions/{version.number}"
            if version.state != "ENABLED" or version.payload is None:
                raise precondition(f"Secret Version [{name}] is in {version.state} state.")
            return {
                "name": name,
                "payload": {"data": base64.b64encode(version.payload).decode(), "dataCrc32c": str(version.checksum)},
            }

    def list_secret_versions(self, call: _Call) -> dict[str, Any]:
        text = call.query.get("filter", "")
        project = call.project

        def values(item: tuple[Secret, Version], name: str) -> list[Any]:
            secret, version = item
            if name == "name":
                return [str(version.number), f"{self._secret_name(secret, project)}/versions/{version.number}"]
            if name == "state":
                return [version.state]
            if name == "create_time":
                return [version.create_time]
            if name == "destroy_time":
                return [version.destroy_time] if version.destroy_time else []
            return []

        fields = FilterFields(
            {
                "name": "string",
                "state": "enum:ENABLED,DISABLED,DESTROYED",
                "create_time": "time",
                "destroy_time": "time",
            },
            values,
        )
        matcher = ListFilter(text, fields)
        with self._lock:
            secret = self._lookup(project, call.params["secret"])
            items = [secret.versions[n] for n in sorted(secret.versions, reverse=True)]
            selected = [v for v in items if matcher.matches((secret, v))]
            scope = f"versions|{secret.project}|{secret.secret_id}|{text}"
            page, token = self._page(call, selected, lambda v: v.number, scope=scope)
            out: dict[str, Any] = {}
            if page:
                out["versions"] = [self._version_json(secret, v, project, call.int_enums) for v in page]
            if token:
                out["nextPageToken"] = token
            if items and not text:
                out["totalSize"] = len(items)
            return out

    def disable_secret_version(self, call: _Call) -> dict[str, Any]:
        return self._change_state(call, "DISABLED", "SECRET_VERSION_DISABLE")

    def enable_secret_version(self, call: _Call) -> dict[str, Any]:
        return self._change_state(call, "ENABLED", "SECRET_VERSION_ENABLE")

    def destroy_secret_version(self, call: _Call) -> dict[str, Any]:
        return self._change_state(call, "DESTROYED", "SECRET_VERSION_DESTROY")

    def _change_state(self, call: _Call, target: str, event_type: str) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            secret = self._lookup(call.project, call.params["secret"])
            version = self._resolve(call, secret, aliases=False)
            name = f"{self._secret_name(secret, call.project)}/versions/{version.number}"
            self._check_etag(call.body.get("etag"), version.etag, "secret version")
            if version.state == "DESTROYED":
                raise precondition(f"Secret Version [{name}] is in DESTROYED state.")
            if target == "DESTROYED":
                named_by = sorted(a for a, n in secret.version_aliases.items() if n == version.number)
                if named_by:
                    raise precondition(
                        f"Secret Version [{name}] is referenced by version aliases {named_by}; remove them before destroying it."
                    )
                if secret.version_destroy_ttl:
                    version.state = "DISABLED"
                    version.scheduled_destroy_time = now + secret.version_destroy_ttl
                    event_type = "SECRET_VERSION_DESTROY_SCHEDULED"
                else:
                    self._destroy_now(version, now)
            else:
                version.state = target
                version.scheduled_destroy_time = None  # enabling/disabling cancels a delayed destroy
            version.etag = _new_etag()
            events = self._version_events(secret, version, event_type, now)
            result = self._version_json(secret, version, call.project, call.int_enums)
        self._dispatch(events)
        return result

    @staticmethod
    def _destroy_now(version: Version, now: datetime) -> None:
        version.state = "DESTROYED"
        version.payload = None
        version.destroy_time = now
        version.scheduled_destroy_time = None
        version.etag = _new_etag()

    # -- paging --------------------------------------------------------------------------
    @staticmethod
    def _page(call: _Call, items: list[Any], key: Callable[[Any], int], *, scope: str) -> tuple[list[Any], str]:
        """One page of ``items`` (sorted by descending ``key``) and the token for the next.

        The token is a cursor (the last key served) bound to the list's parent and filter,
        so pages stay stable while secrets are added and a token replayed against another
        query is refused, as Google APIs refuse it.
        """
        raw_size = call.query.get("pageSize", "0") or "0"
        try:
            size = int(raw_size)
        except ValueError:
            raise invalid(f"Invalid value at 'page_size': '{raw_size}'.") from None
        if size < 0:
            raise invalid("page_size must not be negative.")
        size = min(size or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
        digest = hashlib.sha256(scope.encode()).hexdigest()[:16]
        token = call.query.get("pageToken", "")
        if token:
            try:
                cursor = json.loads(base64.urlsafe_b64decode(token.encode()))
                after, bound = int(cursor["after"]), cursor["scope"]
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise invalid("Invalid page_token.") from None
            if bound != digest:
                raise invalid("Invalid page_token: it belongs to a different list request.")
            items = [item for item in items if key(item) < after]
        page = items[:size]
        if len(items) <= size:
            return page, ""
        cursor_json = json.dumps({"after": key(page[-1]), "scope": digest}).encode()
        return page, base64.urlsafe_b64encode(cursor_json).decode()

    # -- control over HTTP (for a local cloud running in another process) ----------------
    def control_fire_due_rotations(self, call: _Call) -> dict[str, Any]:
        at = call.body.get("now")
        fired = self.fire_due_rotations(parse_timestamp(at, "now") if at else None)
        return {"fired": fired}
