"""A stand-in for Dataloop's gateway: token login, registry integrations, services that pull.

It speaks the wire format the dtlpy SDK speaks (docs/external-apis.md §5):

* ``POST /token?default`` (no ``/api/v1``) takes ``user_credentials`` or ``refresh_token``
  grants and issues short-lived JWTs with ``exp``, signed with a local secret;
* every ``/api/v1`` call needs ``Authorization: Bearer <jwt>`` -- an issued ``id_token`` or
  an API key (itself a JWT) -- or gets 401 ``{"message": ...}``;
* integrations are organization-scoped, writable by org Admins/Owners only (403 otherwise),
  and are answered with ``metadata`` as a *list* of ``{name, value}``, never with options;
* every answer carries an ``x-request-id`` header; errors are JSON with ``message``.

What the real API does with a second integration of the same name is unconfirmed, so it is
a switch (``allow_duplicate_names``), on by default like an API that does not check.

A restarted service *really* pulls its runner image, as a kubelet would, after a short
delay so that clients must poll: it takes the org's registry integrations whose decoded
docker config has an ``auths`` key equal to the image's host (an exact string match, as the
kubelet's keyring does), and runs the registry v2 handshake itself with plain ``requests``
-- manifest, 401 challenge, token with Basic auth, manifest with the bearer token. Success
adds a ``runtimeStatus`` entry with ``status: true``; failure adds ``ErrImagePull`` and,
after one more failed try, ``ImagePullBackOff``. This is deliberately independent of the
project's registry client, so a bug there cannot hide a bug here.

Fault injection and call logs come from :class:`localcloud.wsgi.Instrumented`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from localcloud.wsgi import Instrumented

ADMIN_ROLES = frozenset({"owner", "admin"})
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _object_id() -> str:
    """Dataloop ids look like MongoDB ObjectIds: 24 hex digits."""
    return secrets.token_hex(12)


class DataloopApiError(Exception):
    """An error answer: ``status`` with a JSON ``{"message": ...}`` body.

    Not a :class:`~localcloud.google_errors.GoogleApiError`: Dataloop's gateway answers in
    its own shape, with no canonical code, so Google's error body would misrepresent it.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Principal:
    """A user (human or bot) and its role in each organization."""

    email: str
    roles: dict[str, str] = field(default_factory=dict)
    password: str | None = None


@dataclass
class PullRecord:
    """One pull the stand-in's kubelet attempted, for tests to inspect."""

    service_id: str
    image: str
    host: str
    integration_id: str | None
    ok: bool
    detail: str


def split_image(image: str) -> tuple[str, str, str]:
    """``(host, repository name, reference)`` of an image, as docker's reference grammar splits it."""
    rest = image
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, name = first, remainder
    else:
        host, name = "docker.io", rest
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    return host, name, digest or tag or "latest"


def _on_this_machine(url: str) -> bool:
    """Whether ``url`` points at a loopback address: the only kind the local cloud may call."""
    hostname = urlsplit(url).hostname or ""
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def docker_credentials(options: Any, host: str) -> tuple[str, str] | None:
    """The username/password a kubelet would present to ``host`` from integration ``options``.

    Only an ``auths`` key *equal* to ``host`` counts. ``auth`` (base64 ``user:password``)
    wins over ``username``/``password`` when both are present, as in docker's config loader.
    """
    try:
        encoded = options["spec"]["password"]
        config = json.loads(base64.b64decode(encoded, validate=True))
        entry = config["auths"][host]
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None
    if not isinstance(entry, dict):
        return None
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, _, password = base64.b64decode(auth, validate=True).decode().partition(":")
            return user, password
        except (ValueError, binascii.Error):
            return None
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return entry["username"], entry["password"]
    return None


class DataloopGateway:
    """The stand-in. Serve it with ``ServerThread(gateway)``; drive faults via ``gateway.instrumented``.

    The kubelet reaches registries on this machine only: ``registries`` maps an image host
    (say ``us-central1-docker.pkg.dev``) to the local registry that plays it
    (``http://127.0.0.1:PORT``), so images and ``auths`` keys can use real GAR names; a
    loopback host not in the map is reached directly, over plain HTTP when it is listed in
    ``insecure_registries``. Any other host fails like an unresolvable name, without traffic.
    """

    def __init__(
        self,
        *,
        token_lifetime_seconds: float = 3600.0,
        refresh_lifetime_seconds: float = 30 * 86400.0,
        allow_duplicate_names: bool = True,
        pull_delay_seconds: float = 0.2,
        pull_backoff_seconds: float = 0.2,
        pull_timeout_seconds: float = 5.0,
        insecure_registries: Iterable[str] = (),
        registries: Mapping[str, str] | None = None,
        secret: str | None = None,
    ) -> None:
        self.token_lifetime_seconds = token_lifetime_seconds
        self.refresh_lifetime_seconds = refresh_lifetime_seconds
        self.allow_duplicate_names = allow_duplicate_names
        self.pull_delay_seconds = pull_delay_seconds
        self.pull_backoff_seconds = pull_backoff_seconds
        self.pull_timeout_seconds = pull_timeout_seconds
        self.insecure_registries = set(insecure_registries)
        self.registries = dict(registries or {})
        self._secret = secret or secrets.token_urlsafe(32)
        self._lock = threading.RLock()
        self._principals: dict[str, Principal] = {}
        self._orgs: dict[str, str] = {}
        self._revoked_keys: set[str] = set()
        self._not_before: dict[str, float] = {}  # email -> tokens issued before are refused
        self._refresh_tokens: dict[str, tuple[str, float]] = {}  # token -> (email, expiry)
        self._integrations: dict[str, dict[str, Any]] = {}
        self._services: dict[str, dict[str, Any]] = {}
        self._runtime: dict[str, list[dict[str, Any]]] = {}
        self._generation: dict[str, int] = {}
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        #: ``user_credentials`` / ``refresh_token`` grants, in order, with the outcome.
        self.grants: list[tuple[str, bool]] = []
        #: ``reloadServices`` values seen on credential updates.
        self.reloads: list[bool] = []
        self.pulls: list[PullRecord] = []
        #: Every request that reached the API (not those answered by an injected fault):
        #: method, path, query, Authorization header and JSON body, for wire assertions.
        self.received: list[dict[str, Any]] = []
        self.instrumented = Instrumented(self._app, "dataloop")
        self._routes = Map(
            [
                Rule("/token", endpoint="token", methods=["POST"]),
                Rule("/api/v1/orgs/<org>/integrations", endpoint="integrations", methods=["GET", "POST", "PATCH"]),
                Rule("/api/v1/orgs/<org>/integrations/<iid>", endpoint="integration", methods=["GET", "DELETE"]),
                Rule("/api/v1/services/<sid>", endpoint="service", methods=["GET", "PATCH"]),
                Rule("/api/v1/services/<sid>/status", endpoint="status", methods=["GET"]),
                Rule("/api/v1/services/<sid>/<any(restart, stop, resume):action>", endpoint="action", methods=["POST"]),
            ],
            strict_slashes=False,
        )

    # -- set-up, used by fixtures and tests ------------------------------------------
    def add_org(self, name: str = "org", org_id: str | None = None) -> str:
        org_id = org_id or _object_id()
        with self._lock:
            self._orgs[org_id] = name
        return org_id

    def add_member(self, email: str, org_id: str, role: str = "member", *, password: str | None = None) -> None:
        """Give ``email`` a ``role`` in ``org_id`` (owner, admin, member, ...); a password makes it a bot user."""
        with self._lock:
            principal = self._principals.setdefault(email, Principal(email))
            principal.roles[org_id] = role
            if password is not None:
                principal.password = password

    def issue_api_key(self, email: str, *, lifetime_seconds: float = 365 * 86400.0) -> str:
        """An API key for a known user: a long-lived JWT, as Dataloop's are."""
        with self._lock:
            if email not in self._principals:
                raise KeyError(f"unknown user {email!r}; add_member first")
        now = time.time()
        claims = {"email": email, "sub": email, "typ": "apikey", "iat": now, "exp": now + lifetime_seconds}
        return self._sign({**claims, "jti": uuid.uuid4().hex})

    def revoke_api_key(self, api_key: str) -> None:
        with self._lock:
            self._revoked_keys.add(api_key)

    def revoke_sessions(self, email: str) -> None:
        """Refuse every id token issued to ``email`` so far (as a password change would)."""
        with self._lock:
            self._not_before[email] = time.time()

    def revoke_refresh_tokens(self, email: str | None = None) -> None:
        with self._lock:
            for token, (owner, _) in list(self._refresh_tokens.items()):
                if email is None or owner == email:
                    del self._refresh_tokens[token]

    def add_service(
        self,
        org_id: str,
        name: str,
        runner_image: str,
        *,
        project_id: str | None = None,
        service_id: str | None = None,
    ) -> str:
        service_id = service_id or _object_id()
        now = _now_iso()
        with self._lock:
            self._services[service_id] = {
                "id": service_id,
                "name": name,
                "orgId": org_id,
                "projectId": project_id or _object_id(),
                "packageId": _object_id(),
                "packageRevision": "1.0.0",
                "runtime": {"podType": "regular-xs", "concurrency": 10, "runnerImage": runner_image},
                "versions": {"dtlpy": "1.126.0"},
                "active": True,
                "createdAt": now,
                "updatedAt": now,
            }
            self._runtime[service_id] = []
        return service_id

    def stored_integrations(self, org_id: str | None = None) -> list[dict[str, Any]]:
        """Integrations as stored: ``{"public": <what the API answers>, "options": <as sent>}``.

        The options are what the API never returns; tests read them to check the wire.
        """
        with self._lock:
            return [
                json.loads(json.dumps(i))
                for i in self._integrations.values()
                if org_id is None or i["public"]["org"] == org_id
            ]

    def runtime_status(self, service_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._runtime[service_id]]

    def close(self) -> None:
        """Stop pending pulls and wait for their threads."""
        self._closing.set()
        for thread in list(self._threads):
            thread.join(timeout=self.pull_timeout_seconds * 3)

    # -- WSGI -------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Every answer, injected faults included, gets an ``x-request-id``."""
        request_id = str(uuid.uuid4())

        def with_request_id(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            if not any(k.lower() == "x-request-id" for k, _ in headers):
                headers = [*headers, ("x-request-id", request_id)]
            return start_response(status, headers, *args)

        return self.instrumented(environ, with_request_id)

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            body_json = json.loads(request.get_data() or b"null")
        except ValueError:
            body_json = None
        with self._lock:
            self.received.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "query": request.query_string.decode(),
                    "authorization": request.headers.get("Authorization"),
                    "content_type": request.headers.get("Content-Type"),
                    "body": request.get_data(),
                    "json": body_json,
                }
            )
        try:
            endpoint, args = self._routes.bind_to_environ(environ).match()
            if endpoint == "token":
                body = self._token(request)
            else:
                principal = self._authenticate(request)
                body = getattr(self, f"_on_{endpoint}")(request, principal, **args)
            status = 200
        except DataloopApiError as exc:
            status, body = exc.status, {"message": exc.message}
        except MethodNotAllowed:
            status, body = 405, {"message": "Method Not Allowed"}
        except NotFound:
            status, body = 404, {"message": f"Cannot {request.method} {request.path}"}
        except HTTPException as exc:
            status, body = exc.code or 500, {"message": exc.description or "error"}
        response = Response(
            b"" if body is None else json.dumps(body), status=status, content_type="application/json; charset=utf-8"
        )
        return response(environ, start_response)

    # -- auth ---------------------------------------------------------------------------
    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def _issue(self, email: str) -> dict[str, Any]:
        now = time.time()
        token = self._sign(
            {
                "email": email,
                "sub": email,
                "typ": "id",
                "iat": now,
                "exp": now + self.token_lifetime_seconds,
                "jti": uuid.uuid4().hex,
            }
        )
        return {"id_token": token, "token_type": "Bearer", "expires_in": int(self.token_lifetime_seconds)}

    def _token(self, request: Request) -> dict[str, Any]:
        body = self._json(request)
        grant = body.get("type")
        if grant == "user_credentials":
            username, password = body.get("username"), body.get("password")
            with self._lock:
                principal = self._principals.get(username) if isinstance(username, str) else None
                ok = principal is not None and principal.password is not None and principal.password == password
                self.grants.append((grant, ok))
            if not ok or not isinstance(username, str):
                raise DataloopApiError(401, "Wrong email or password.")
            answer = self._issue(username)
            refresh = secrets.token_urlsafe(32)
            with self._lock:
                self._refresh_tokens[refresh] = (username, time.time() + self.refresh_lifetime_seconds)
            return {**answer, "refresh_token": refresh}
        if grant == "refresh_token":
            token = body.get("refresh_token")
            with self._lock:
                owner, expiry = self._refresh_tokens.get(token, (None, 0.0)) if isinstance(token, str) else (None, 0.0)
                ok = owner is not None and expiry > time.time()
                self.grants.append((grant, ok))
            if not ok or owner is None:
                raise DataloopApiError(401, "Unknown or expired refresh token.")
            return self._issue(owner)
        raise DataloopApiError(400, "type must be 'user_credentials' or 'refresh_token'")

    def _authenticate(self, request: Request) -> Principal:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise DataloopApiError(401, "Missing authorization token")
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], options={"require": ["exp", "email"]})
        except jwt.ExpiredSignatureError:
            raise DataloopApiError(401, "jwt expired") from None
        except jwt.InvalidTokenError:
            raise DataloopApiError(401, "invalid token") from None
        with self._lock:
            if token in self._revoked_keys:
                raise DataloopApiError(401, "API key revoked")
            if claims.get("typ") == "id" and claims.get("iat", 0) < self._not_before.get(claims["email"], 0):
                raise DataloopApiError(401, "token revoked")
            principal = self._principals.get(claims["email"])
        if principal is None:
            raise DataloopApiError(401, "unknown user")
        return principal

    def _org_role(self, principal: Principal, org: str, *, write: bool) -> None:
        with self._lock:
            if org not in self._orgs:
                raise DataloopApiError(404, f"Organization not found: {org}")
            role = principal.roles.get(org)
        if role is None:
            raise DataloopApiError(403, "Forbidden: not a member of this organization")
        if write and role not in ADMIN_ROLES:
            raise DataloopApiError(
                403, f"Forbidden: role '{role}' may not manage integrations; org Admin or Owner required"
            )

    @staticmethod
    def _json(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(request.get_data() or b"null")
        except ValueError:
            raise DataloopApiError(400, "Invalid JSON body") from None
        if not isinstance(body, dict):
            raise DataloopApiError(400, "Request body must be a JSON object")
        return body

    # -- integrations -------------------------------------------------------------------
    def _on_integrations(self, request: Request, principal: Principal, org: str) -> Any:
        self._org_role(principal, org, write=request.method != "GET")
        if request.method == "GET":
            with self._lock:
                return [i["public"] for i in self._integrations.values() if i["public"]["org"] == org]
        if request.method == "POST":
            return self._create_integration(request, principal, org)
        return self._update_integration(request, org)

    def _create_integration(self, request: Request, principal: Principal, org: str) -> dict[str, Any]:
        body = self._json(request)
        kind, name, options = body.get("type"), body.get("name"), body.get("options")
        if not isinstance(kind, str) or not kind:
            raise DataloopApiError(400, "type is required")
        if not isinstance(name, str) or not name.strip():
            raise DataloopApiError(400, "name is required")
        if not isinstance(options, dict):
            raise DataloopApiError(400, "options must be an object")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise DataloopApiError(400, "metadata must be an object")
        if kind == "private-registry":
            self._check_registry_options(options)
        now = _now_iso()
        integration_id = _object_id()
        public = {
            "id": integration_id,
            "name": name,
            "type": kind,
            "org": org,
            "createdAt": now,
            "creator": principal.email,
            "updatedAt": now,
            "url": f"{request.host_url.rstrip('/')}/api/v1/orgs/{org}/integrations/{integration_id}",
            "metadata": [{"name": k, "value": v} for k, v in metadata.items()],
        }
        with self._lock:
            if not self.allow_duplicate_names and any(
                i["public"]["org"] == org and i["public"]["name"] == name for i in self._integrations.values()
            ):
                raise DataloopApiError(409, f"Integration with name '{name}' already exists")
            self._integrations[integration_id] = {"public": public, "options": options}
        return public

    def _update_integration(self, request: Request, org: str) -> dict[str, Any]:
        body = self._json(request)
        integration_id = body.get("integrationId")
        if not isinstance(integration_id, str) or not integration_id:
            raise DataloopApiError(400, "integrationId is required")
        credentials, name = body.get("credentials"), body.get("name")
        if credentials is None and name is None:
            raise DataloopApiError(400, "nothing to update: give credentials and/or name")
        with self._lock:
            stored = self._integrations.get(integration_id)
            if stored is None or stored["public"]["org"] != org:
                raise DataloopApiError(404, f"Integration not found: {integration_id}")
            kind = stored["public"]["type"]
        if credentials is not None:
            if not isinstance(credentials, dict) or not isinstance(credentials.get("options"), dict):
                raise DataloopApiError(400, "credentials.options must be an object")
            if credentials.get("type") != kind:
                raise DataloopApiError(400, f"credentials.type must be '{kind}'")
            if kind == "private-registry":
                self._check_registry_options(credentials["options"])
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise DataloopApiError(400, "name must be a non-empty string")
        with self._lock:
            if credentials is not None:
                stored["options"] = credentials["options"]
            if name is not None:
                stored["public"]["name"] = name
            stored["public"]["updatedAt"] = _now_iso()
            self.reloads.append(request.args.get("reloadServices") == "true")
            return dict(stored["public"])

    @staticmethod
    def _check_registry_options(options: dict[str, Any]) -> None:
        """Refuse registry options no kubelet could use (checked where the platform would fail later)."""
        spec = options.get("spec")
        if not isinstance(options.get("name"), str) or not isinstance(spec, dict):
            raise DataloopApiError(400, "private-registry options need 'name' and 'spec'")
        password = spec.get("password")
        if isinstance(password, str):
            try:
                config = json.loads(base64.b64decode(password, validate=True))
            except (ValueError, binascii.Error):
                raise DataloopApiError(400, "spec.password must be a base64 docker config") from None
            if not isinstance(config, dict) or not isinstance(config.get("auths"), dict) or not config["auths"]:
                raise DataloopApiError(400, "docker config must have a non-empty 'auths' object")
        elif not {"accessKeyId", "secretAccessKey"} <= set(spec):  # ECR's shape
            raise DataloopApiError(400, "spec.password is required")

    def _on_integration(self, request: Request, principal: Principal, org: str, iid: str) -> Any:
        self._org_role(principal, org, write=request.method == "DELETE")
        with self._lock:
            stored = self._integrations.get(iid)
            if stored is None or stored["public"]["org"] != org:
                raise DataloopApiError(404, f"Integration not found: {iid}")
            if request.method == "DELETE":
                del self._integrations[iid]
                return None
            return dict(stored["public"])

    # -- services -----------------------------------------------------------------------
    def _service_for(self, principal: Principal, sid: str) -> dict[str, Any]:
        with self._lock:
            service = self._services.get(sid)
            if service is None:
                raise DataloopApiError(404, f"Service not found: {sid}")
            if service["orgId"] not in principal.roles:
                raise DataloopApiError(403, "Forbidden: no access to this service's project")
            return service

    def _on_service(self, request: Request, principal: Principal, sid: str) -> dict[str, Any]:
        service = self._service_for(principal, sid)
        if request.method == "GET":
            with self._lock:
                return json.loads(json.dumps(service))
        body = self._json(request)
        if body.get("id") not in (None, sid):
            raise DataloopApiError(400, "id in body does not match the path")
        runtime = body.get("runtime")
        if not isinstance(runtime, dict) or not isinstance(runtime.get("runnerImage", ""), str):
            raise DataloopApiError(400, "runtime must be an object with a string runnerImage")
        with self._lock:
            kept = {k: service[k] for k in ("id", "orgId", "createdAt")}
            service.clear()
            service.update({**body, **kept, "updatedAt": _now_iso()})
            return json.loads(json.dumps(service))

    def _on_status(self, request: Request, principal: Principal, sid: str) -> dict[str, Any]:
        self._service_for(principal, sid)
        with self._lock:
            return {"id": sid, "runtimeStatus": [dict(e) for e in self._runtime[sid]]}

    def _on_action(self, request: Request, principal: Principal, sid: str, action: str) -> dict[str, Any]:
        service = self._service_for(principal, sid)
        with self._lock:
            self._generation[sid] = generation = self._generation.get(sid, 0) + 1
            service["active"] = action != "stop"
            image = (service.get("runtime") or {}).get("runnerImage", "")
            org = service["orgId"]
            snapshot = json.loads(json.dumps(service))
        if action in ("restart", "resume"):
            thread = threading.Thread(
                target=self._kubelet, args=(sid, generation, image, org), name=f"dataloop-pull:{sid}", daemon=True
            )
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()
        return snapshot

    # -- the kubelet ----------------------------------------------------------------------
    def _kubelet(self, sid: str, generation: int, image: str, org: str) -> None:
        """Pull like a kubelet: try, report ErrImagePull, back off, try once more, ImagePullBackOff."""
        if self._closing.wait(self.pull_delay_seconds):
            return
        ok, detail = self._pull(sid, image, org)
        if ok:
            self._report(sid, generation, True, None, detail)
            return
        if not self._report(sid, generation, False, "ErrImagePull", detail):
            return
        if self._closing.wait(self.pull_backoff_seconds):
            return
        ok, detail = self._pull(sid, image, org)
        if ok:
            self._report(sid, generation, True, None, detail)
        else:
            self._report(sid, generation, False, "ImagePullBackOff", f'Back-off pulling image "{image}": {detail}')

    def _report(self, sid: str, generation: int, ok: bool, reason: str | None, message: str) -> bool:
        with self._lock:
            if self._generation.get(sid) != generation:
                return False  # a newer restart owns the status now
            entry: dict[str, Any] = {
                "replicaId": f"{self._services[sid]['name']}-{generation}",
                "status": ok,
                "message": message,
                "createdAt": _now_iso(),
            }
            if reason:
                entry["reason"] = reason
            self._runtime[sid].append(entry)
            return True

    def _pull(self, sid: str, image: str, org: str) -> tuple[bool, str]:
        host, name, reference = split_image(image)
        with self._lock:
            candidates = sorted(
                (i for i in self._integrations.values() if i["public"]["org"] == org),
                key=lambda i: i["public"]["createdAt"],
            )
            keyring = [
                (i["public"]["id"], creds)
                for i in candidates
                if i["public"]["type"] == "private-registry"
                and (creds := docker_credentials(i["options"], host)) is not None
            ]
        attempts: list[tuple[str | None, tuple[str, str] | None]] = [*keyring] or [(None, None)]
        detail = ""
        for integration_id, creds in attempts:
            ok, detail = self._pull_with(host, name, reference, creds)
            with self._lock:
                self.pulls.append(PullRecord(sid, image, host, integration_id, ok, detail))
            if ok:
                return True, f'Successfully pulled image "{image}"'
        return False, f'Failed to pull image "{image}": {detail}'

    def _pull_with(self, host: str, name: str, reference: str, creds: tuple[str, str] | None) -> tuple[bool, str]:
        base = self.registries.get(host) or f"{'http' if host in self.insecure_registries else 'https'}://{host}"
        url = f"{base.rstrip('/')}/v2/{name}/manifests/{reference}"
        if not _on_this_machine(url):
            return False, f"dial tcp: lookup {host}: no such host (the local cloud reaches only local registries)"
        headers = {"Accept": MANIFEST_ACCEPT}
        timeout = self.pull_timeout_seconds
        try:
            response = requests.get(url, headers=headers, timeout=timeout, allow_redirects=False)
            if response.status_code == 401:
                challenge = response.headers.get("WWW-Authenticate", "")
                scheme_name, _, rest = challenge.partition(" ")
                params = dict(_CHALLENGE_PARAM.findall(rest))
                if scheme_name.lower() == "bearer" and params.get("realm"):
                    if not _on_this_machine(params["realm"]):
                        return False, f"token realm of {host} is not on this machine"
                    query = {"scope": params.get("scope") or f"repository:{name}:pull"}
                    if params.get("service"):
                        query["service"] = params["service"]
                    grant = requests.get(
                        params["realm"], params=query, auth=creds, timeout=timeout, allow_redirects=False
                    )
                    if grant.status_code != 200:
                        return False, f"pulling from host {host} failed: {grant.status_code} {grant.reason}"
                    answer = grant.json()
                    token = answer.get("token") or answer.get("access_token")
                    if not token:
                        return False, f"pulling from host {host} failed: token endpoint gave no token"
                    response = requests.get(
                        url,
                        headers={**headers, "Authorization": f"Bearer {token}"},
                        timeout=timeout,
                        allow_redirects=False,
                    )
                elif scheme_name.lower() == "basic" and creds is not None:
                    response = requests.get(url, headers=headers, auth=creds, timeout=timeout, allow_redirects=False)
        except (requests.RequestException, ValueError) as exc:
            return False, f"pulling from host {host} failed: {type(exc).__name__}"
        if response.status_code == 200:
            digest = response.headers.get("Docker-Content-Digest")
            if reference.startswith("sha256:") and digest and digest != reference:
                return False, f"manifest digest {digest} does not match {reference}"
            return True, "pulled"
        return False, f"pulling from host {host} failed: {response.status_code} {response.reason}"
