"""A local Cloud Logging read API: ``entries.list`` over REST, fed by the functions' own stdout.

In production nobody writes the functions' logs through the Logging API: Cloud Run reads each
JSON line a function prints and turns it into a LogEntry (``severity``, ``time`` and the
``logging.googleapis.com/*`` keys lifted out, everything else in ``jsonPayload``). This stand-in
does the same with the log files the local cloud already writes, reading what was appended
each time it is asked, so what ``history`` reads is what the functions really printed and no
function needs a line of code for it.

It answers ``POST /v2/entries:list`` as google-cloud-logging's HTTP client sends it
(``resourceNames``, ``filter``, ``orderBy``, ``pageSize``, ``pageToken``) and understands the
part of the Logging query language the operator CLI writes: comparisons (``=``, ``!=``,
``<``, ``<=``, ``>``, ``>=``, and ``:`` has, ``FIELD:*`` present) of a dotted field, whose
segments may be quoted, with a quoted or bare value, ``AND``, ``OR``, ``NOT`` and parentheses,
with OR binding tighter than AND as in the real language. Anything
else is refused with 400 INVALID_ARGUMENT, as Google refuses a filter it cannot parse, so a
query the stand-in cannot evaluate fails loudly instead of matching everything.

Unconfirmed details are marked where they are produced.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

from werkzeug.wrappers import Request, Response

from localcloud.google_errors import GoogleApiError
from localcloud.wsgi import Instrumented, ServerThread

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_LIFTED = {
    "severity": "severity",
    "logging.googleapis.com/labels": "labels",
    "logging.googleapis.com/trace": "trace",
    "logging.googleapis.com/spanId": "spanId",
    "logging.googleapis.com/insertId": "insertId",
}
_SEVERITIES = ("DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY")


# -- the query language subset ---------------------------------------------------------------------

_TOKEN = re.compile(
    r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<op><=|>=|!=|=|<|>|:)|(?P<paren>[()])|(?P<star>\*)'
    r"|(?P<word>[A-Za-z0-9_.\-+/@]+))"
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    column: int
    end: int  # where it ends in the query: a quoted field segment touches its neighbours


def _tokens(text: str) -> list[_Token]:
    found: list[_Token] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise _syntax_error(text, position + len(text[position:]) - len(text[position:].lstrip()))
        kind = match.lastgroup or "word"
        value = match.group(kind)
        if kind == "string":
            value = json.loads(value)
        found.append(_Token(kind, value, match.start(kind) + 1, match.end(kind)))
        position = match.end()
    return found


def _syntax_error(text: str, index: int) -> GoogleApiError:
    # unconfirmed text: Google names the line, column and token it stopped at
    token = text[index : index + 10].split()[0] if text[index:].strip() else "<end>"
    return GoogleApiError(400, f"Invalid filter: syntax error at line 1, column {index + 1}, token '{token}'")


Predicate = Callable[[dict[str, Any]], bool]


class _Parser:
    """Recursive descent over: conj := disj {AND disj}; disj := unary {OR unary};
    unary := [NOT|-] primary; primary := "(" conj ")" | FIELD OP VALUE."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0

    def parse(self) -> Predicate:
        if not self.tokens:
            return lambda entry: True
        predicate = self._conjunction()
        if self.at != len(self.tokens):
            self._fail()
        return predicate

    def _peek(self) -> _Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _take(self) -> _Token:
        token = self._peek()
        if token is None:
            self._fail()
        self.at += 1
        return token

    def _fail(self) -> NoReturn:
        token = self._peek()
        column = token.column if token else len(self.text) + 1
        raise _syntax_error(self.text, column - 1)

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "word" and token.text == word:
            self.at += 1
            return True
        return False

    def _conjunction(self) -> Predicate:
        parts = [self._disjunction()]
        while self._keyword("AND"):
            parts.append(self._disjunction())
        return parts[0] if len(parts) == 1 else (lambda entry: all(p(entry) for p in parts))

    def _disjunction(self) -> Predicate:
        parts = [self._unary()]
        while self._keyword("OR"):
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else (lambda entry: any(p(entry) for p in parts))

    def _unary(self) -> Predicate:
        if self._keyword("NOT"):
            inner = self._primary()
            return lambda entry: not inner(entry)
        return self._primary()

    def _primary(self) -> Predicate:
        token = self._take()
        if token.kind == "paren" and token.text == "(":
            inner = self._conjunction()
            closing = self._take()
            if closing.kind != "paren" or closing.text != ")":
                self.at -= 1
                self._fail()
            return inner
        if token.kind not in ("word", "string") or token.text in ("AND", "OR", "NOT"):
            self.at -= 1
            self._fail()
        path = self._path(token)
        operator = self._take()
        if operator.kind != "op":
            self.at -= 1
            self._fail()
        value = self._take()
        if value.kind == "star" and operator.text == ":":
            return _present(path)
        if value.kind not in ("string", "word") or value.text in ("AND", "OR", "NOT"):
            self.at -= 1
            self._fail()
        return _comparison(path, operator.text, value.text)

    def _path(self, first: _Token) -> tuple[str, ...]:
        """A field path, whose segments may be quoted (``details."team-a".platform``)."""
        pieces = [first]
        while (nxt := self._peek()) is not None and nxt.kind in ("word", "string") and nxt.column - 1 == pieces[-1].end:
            pieces.append(self._take())
        segments: list[str] = []
        for piece in pieces:
            segments.extend([piece.text] if piece.kind == "string" else [p for p in piece.text.split(".") if p])
        return tuple(segments)


def parse_filter(text: str) -> Predicate:
    """The predicate ``text`` means, or GoogleApiError 400 if it is outside the subset."""
    return _Parser(text).parse()


def _field(entry: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = entry
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _timestamp(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _present(path: tuple[str, ...]) -> Predicate:
    """``FIELD:*``: the field is there, whatever its value."""
    return lambda entry: _field(entry, path) is not None


def _comparison(path: tuple[str, ...], operator: str, wanted: str) -> Predicate:
    def compare(actual: Any) -> bool:
        if actual is None or isinstance(actual, dict):
            return False
        if operator == ":":  # "has": the value holds the text, ignoring case
            return wanted.lower() in str(actual).lower()
        if path == ("timestamp",):
            left, right = _timestamp(str(actual)), _timestamp(wanted)
            if left is None or right is None:
                return False
            ordered: tuple[Any, Any] = (left, right)
        elif path == ("severity",):
            ordered = (_severity_rank(str(actual)), _severity_rank(wanted))
        else:
            ordered = (str(actual).lower(), wanted.lower())  # string comparison ignores case, as documented
        left, right = ordered
        return {
            "=": left == right,
            "!=": left != right,
            "<": left < right,
            "<=": left <= right,
            ">": left > right,
            ">=": left >= right,
        }[operator]

    def predicate(entry: dict[str, Any]) -> bool:
        actual = _field(entry, path)
        if isinstance(actual, list):  # unconfirmed: a repeated field matches when any element does
            return any(compare(item) for item in actual)
        return compare(actual)

    if path == ("timestamp",) and _timestamp(wanted) is None:
        raise GoogleApiError(400, f'Invalid timestamp: "{wanted}"')  # unconfirmed text
    return predicate


def _severity_rank(name: str) -> int:
    upper = name.upper()
    return _SEVERITIES.index(upper) if upper in _SEVERITIES else 0


# -- the entries ---------------------------------------------------------------------------------


@dataclass
class _Followed:
    path: Path
    service: str
    offset: int = 0


@dataclass
class LoggingState:
    """Every LogEntry the local project holds, and the log files it reads more from."""

    project: str
    location: str = "us-central1"
    entries: list[dict[str, Any]] = field(default_factory=list)
    _followed: list[_Followed] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sequence: int = 0

    def follow(self, path: Path, service: str) -> None:
        """Read ``path`` (a function's stdout, JSON lines) as Cloud Run reads service ``service``'s."""
        with self._lock:
            self._followed.append(_Followed(Path(path), service))

    def write(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Store one LogEntry as given (tests), filling in what the API would."""
        with self._lock:
            return self._store(dict(entry))

    def from_line(self, line: str, service: str) -> dict[str, Any]:
        """The LogEntry Cloud Run makes of one line a service printed."""
        stdout = f"projects/{self.project}/logs/{quote('run.googleapis.com/stdout', safe='')}"
        entry: dict[str, Any] = {
            "logName": stdout,
            "resource": {
                "type": "cloud_run_revision",
                "labels": {"project_id": self.project, "location": self.location, "service_name": service},
            },
        }
        try:
            payload = json.loads(line)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            entry["logName"] = stdout.replace("stdout", "stderr")  # tracebacks and server chatter
            entry["textPayload"] = line
            return entry
        for key, target in _LIFTED.items():
            if key in payload:
                entry[target] = payload.pop(key)
        if "time" in payload:
            entry["timestamp"] = payload.pop("time")
        entry["jsonPayload"] = payload
        return entry

    def _store(self, entry: dict[str, Any]) -> dict[str, Any]:
        self._sequence += 1
        now = datetime.now(UTC)
        moment = _timestamp(str(entry.get("timestamp", ""))) or now
        entry["timestamp"] = _rfc3339(moment)
        entry.setdefault("receiveTimestamp", _rfc3339(now))
        entry.setdefault("insertId", f"{self._sequence:016x}")
        entry.setdefault("severity", "DEFAULT")
        entry["_order"] = (moment, self._sequence)
        self.entries.append(entry)
        return entry

    def _ingest(self) -> None:
        for followed in self._followed:
            try:
                with followed.path.open("rb") as handle:
                    handle.seek(followed.offset)
                    chunk = handle.read()
            except FileNotFoundError:
                continue
            complete = chunk.rfind(b"\n") + 1  # a line still being written is read next time
            followed.offset += complete
            for raw in chunk[:complete].decode("utf-8", "replace").splitlines():
                if raw.strip():
                    self._store(self.from_line(raw, followed.service))

    def list_entries(
        self, resource_names: list[str], filter_text: str, order_by: str, page_size: int, page_token: str
    ) -> tuple[list[dict[str, Any]], str | None]:
        if not resource_names:
            raise GoogleApiError(400, "resourceNames: At least one resource name must be specified.")  # unconfirmed
        for name in resource_names:
            if not re.fullmatch(r"(projects|organizations|folders|billingAccounts)/[^/]+(/.*)?", name):
                raise GoogleApiError(400, f"Invalid resource name: {name}")  # unconfirmed text
        descending = _order(order_by)
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise GoogleApiError(400, f"pageSize must be between 0 and {MAX_PAGE_SIZE}")  # unconfirmed text
        predicate = parse_filter(filter_text)
        after = _cursor(page_token, filter_text, order_by) if page_token else None
        projects = {name.split("/")[1] for name in resource_names if name.startswith("projects/")}
        with self._lock:
            self._ingest()
            held = [e for e in self.entries if self.project in projects and predicate(e)]
        held.sort(key=lambda e: e["_order"], reverse=descending)
        if after is not None:
            held = [e for e in held if (e["_order"] < after if descending else e["_order"] > after)]
        size = page_size or DEFAULT_PAGE_SIZE
        page, rest = held[:size], held[size:]
        token = _token(page[-1]["_order"], filter_text, order_by) if rest else None
        return [{k: v for k, v in e.items() if k != "_order"} for e in page], token


def _order(order_by: str) -> bool:
    spoken = " ".join(order_by.split()).lower()
    if spoken in ("", "timestamp", "timestamp asc"):
        return False
    if spoken == "timestamp desc":
        return True
    raise GoogleApiError(400, f"Invalid orderBy: {order_by}; only timestamp asc or desc is supported")  # unconfirmed


def _token(order: tuple[datetime, int], filter_text: str, order_by: str) -> str:
    """Opaque to the client: where the page ended, and which query it belongs to."""
    raw = json.dumps([order[0].isoformat(), order[1], filter_text, order_by])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _cursor(token: str, filter_text: str, order_by: str) -> tuple[datetime, int]:
    try:
        moment, sequence, filtered, ordered = json.loads(base64.urlsafe_b64decode(token.encode()))
        if (filtered, ordered) != (filter_text, order_by):
            raise ValueError("another query")
        return datetime.fromisoformat(moment), int(sequence)
    except (ValueError, TypeError):
        raise GoogleApiError(400, "Invalid page token") from None  # unconfirmed text


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- the REST surface ------------------------------------------------------------------------------


class CloudLoggingApp:
    """The WSGI app: ``POST /v2/entries:list`` and nothing else of the Logging API."""

    def __init__(self, state: LoggingState) -> None:
        self.state = state
        #: Each request body as received, so a wire test can say what the client really sent.
        self.received: list[Any] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            body = self._dispatch(request)
            response = Response(json.dumps(body), status=200, content_type="application/json")
        except GoogleApiError as error:
            response = Response(json.dumps(error.body()), status=error.code, content_type="application/json")
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> dict[str, Any]:
        if request.path != "/v2/entries:list":
            raise GoogleApiError(404, f"The requested URL {request.path} was not found on this server.")
        if request.method != "POST":
            raise GoogleApiError(405, f"Method {request.method} is not allowed for {request.path}")  # unconfirmed
        try:
            body = json.loads(request.data or b"{}")
        except ValueError:
            raise GoogleApiError(400, "Invalid JSON payload received.") from None
        self.received.append(body)
        if not isinstance(body, dict):
            raise GoogleApiError(400, "Invalid JSON payload received.")
        try:
            page_size = int(body.get("pageSize") or 0)
        except (TypeError, ValueError):
            raise GoogleApiError(400, f"Invalid value at 'page_size' (TYPE_INT32), {body['pageSize']!r}") from None
        entries, token = self.state.list_entries(
            list(body.get("resourceNames") or []),
            str(body.get("filter") or ""),
            str(body.get("orderBy") or ""),
            page_size,
            str(body.get("pageToken") or ""),
        )
        answer: dict[str, Any] = {"entries": entries} if entries else {}
        if token:
            answer["nextPageToken"] = token
        return answer


class CloudLoggingStandIn:
    """The local Logging API: state, instrumented app, and its server on 127.0.0.1."""

    def __init__(self, state: LoggingState | None = None, *, project: str = "local-project") -> None:
        self.state = state or LoggingState(project)
        self.api = CloudLoggingApp(self.state)
        self.app = Instrumented(self.api, name="logging")
        self.server = ServerThread(self.app)
        self.url = self.server.url

    def start(self) -> CloudLoggingStandIn:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def client(self) -> Any:
        """A real ``google.cloud.logging.Client`` on its HTTP transport, anonymous, pointed here."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import logging as cloud_logging

        return cloud_logging.Client(
            project=self.state.project,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
            _use_grpc=False,
        )

    def __enter__(self) -> CloudLoggingStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
