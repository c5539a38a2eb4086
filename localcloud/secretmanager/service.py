"""The local Secret Manager's WSGI app and in-memory store (the package docstring has its contract)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from localcloud.google_errors import GoogleApiError
from localcloud.secretmanager.access import PERMISSIONS, CallerAccess, TokenResolver
from localcloud.secretmanager.errors import (
    already_exists,
    invalid,
    not_found,
    permission_denied,
    precondition,
    unauthenticated,
    unimplemented,
)
from localcloud.secretmanager.filter import FilterFields, ListFilter
from localcloud.secretmanager.model import STATES, Notification, Rotation, Secret, Version
from localcloud.secretmanager.validation import (
    ALIAS,
    MAX_PAYLOAD_BYTES,
    SECRET_ID,
    check_aliases,
    check_etag,
    check_rotation,
    read_aliases,
    read_expiration,
    read_replication,
    read_rotation,
    read_string_map,
    read_topics,
    validate_annotations,
    validate_labels,
    validate_topics,
)
from localcloud.secretmanager.wire import (
    camel_to_snake,
    crc32c,
    format_duration,
    format_timestamp,
    new_etag,
    parse_duration,
    parse_timestamp,
    pick,
)

log = logging.getLogger(__name__)

PublishHook = Callable[[str, dict[str, str], bytes], None]
Clock = Callable[[], datetime]

MAX_PAGE_SIZE = 25000


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
                secret.etag = new_etag()
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
        if handler not in PERMISSIONS:
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
        permission, scope = PERMISSIONS[handler]
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
        elif aliases and ALIAS.match(ref):
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

    # -- secrets -------------------------------------------------------------------------
    def create_secret(self, call: _Call) -> dict[str, Any]:
        secret_id = call.query.get("secretId", "")
        if not secret_id:
            raise invalid("secret_id is required.")
        if not SECRET_ID.match(secret_id):
            raise invalid(
                f"Secret id [{secret_id}] must be 1 to 255 characters of letters, numerals, hyphens and underscores."
            )
        body = call.body
        now = self.clock()
        replication = read_replication(body)
        labels = read_string_map(body, "labels", "labels")
        annotations = read_string_map(body, "annotations", "annotations")
        topics = read_topics(body)
        aliases = read_aliases(body)
        rotation = read_rotation(body)
        validate_labels(labels)
        validate_annotations(annotations)
        validate_topics(topics)
        check_rotation(rotation, topics, now, new_time=True)
        destroy_ttl = pick(body, "versionDestroyTtl", "version_destroy_ttl")
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
                expire_time=read_expiration(body, now),
                version_destroy_ttl=parse_duration(destroy_ttl, "secret.version_destroy_ttl") if destroy_ttl else None,
            )
            check_aliases(secret, aliases)
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
            path = camel_to_snake(raw)
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
            check_etag(body.get("etag"), secret.etag, "secret")
            labels, annotations = dict(secret.labels), dict(secret.annotations)
            aliases, topics = dict(secret.version_aliases), list(secret.topics)
            rotation = Rotation(secret.rotation.next_time, secret.rotation.period)
            expire_time, destroy_ttl = secret.expire_time, secret.version_destroy_ttl
            requested = read_rotation(body)
            new_time = False
            for path in paths:
                if path == "labels":
                    labels = read_string_map(body, "labels", "labels")
                elif path == "annotations":
                    annotations = read_string_map(body, "annotations", "annotations")
                elif path == "version_aliases":
                    aliases = read_aliases(body)
                elif path == "topics":
                    topics = read_topics(body)
                elif path == "rotation":
                    rotation, new_time = requested, True
                elif path == "rotation.next_rotation_time":
                    rotation.next_time, new_time = requested.next_time, True
                elif path == "rotation.rotation_period":
                    rotation.period = requested.period
                elif path in ("expire_time", "ttl"):
                    expire_time = read_expiration(body, now)
                elif path == "version_destroy_ttl":
                    ttl = pick(body, "versionDestroyTtl", "version_destroy_ttl")
                    destroy_ttl = parse_duration(ttl, "secret.version_destroy_ttl") if ttl else None
            validate_labels(labels)
            validate_annotations(annotations)
            validate_topics(topics)
            check_aliases(secret, aliases)
            check_rotation(rotation, topics, now, new_time=new_time)
            secret.labels, secret.annotations, secret.topics = labels, annotations, topics
            secret.version_aliases, secret.rotation = aliases, rotation
            secret.expire_time, secret.version_destroy_ttl = expire_time, destroy_ttl
            secret.etag = new_etag()
            events = self._topic_configured(secret) if "topics" in paths else []
            events += self._secret_events(secret, "SECRET_UPDATE", now)
            result = self._secret_json(secret, call.project)
        self._dispatch(events)
        return result

    def delete_secret(self, call: _Call) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            secret = self._lookup(call.project, call.params["secret"])
            check_etag(call.query.get("etag"), secret.etag, "secret")
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
        given = pick(payload, "dataCrc32c", "data_crc32c")
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
            check_etag(call.body.get("etag"), version.etag, "secret version")
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
            version.etag = new_etag()
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
        version.etag = new_etag()

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
