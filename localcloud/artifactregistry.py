"""A local Artifact Registry API: repositories and their IAM policies, over REST.

Provisioning grants a service account read access to one repository, and the local
registry's token endpoint asks who may pull (docs/external-apis.md §1.4, §7.2), so the part of Artifact
Registry this project needs is the repository IAM policy: ``getIamPolicy``,
``setIamPolicy`` (optimistic concurrency on ``etag``: a stale etag is ``409 ABORTED``) and
``testIamPermissions``, plus repository create/get/list/delete. It speaks the v1 REST
surface the real ``ArtifactRegistryClient(transport="rest")`` uses, errors included
(``{"error": {"code", "message", "status"}}``). Create and delete are long-running
operations; they complete at once and are returned done, as the client accepts.

Unconfirmed details are marked where they are produced.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request, Response

from localcloud.google_errors import GoogleApiError
from localcloud.wsgi import Instrumented, ServerThread

#: Roles whose holders may pull images (the reference test and Dataloop need only reader).
READ_ROLES = frozenset(
    {
        "roles/artifactregistry.reader",
        "roles/artifactregistry.writer",
        "roles/artifactregistry.repoAdmin",
        "roles/artifactregistry.admin",
        "roles/viewer",
        "roles/editor",
        "roles/owner",
    }
)
#: The etag IAM returns for a resource that has never had a policy.
EMPTY_POLICY_ETAG = b"\x00\x20\x01"  # "ACAB"
CONCURRENT_CHANGE = (
    "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff."
)
_MEMBER_PREFIXES = (
    "user:",
    "serviceAccount:",
    "group:",
    "domain:",
    "principal://",
    "principalSet://",
    "deleted:",
    "projectOwner:",
    "projectEditor:",
    "projectViewer:",
)
_FORMATS = {
    "FORMAT_UNSPECIFIED": 0,
    "DOCKER": 1,
    "MAVEN": 2,
    "NPM": 3,
    "APT": 5,
    "YUM": 6,
    "PYTHON": 8,
    "KFP": 9,
    "GO": 10,
    "GENERIC": 11,
    "RUBY": 12,
}
_MODES = {"MODE_UNSPECIFIED": 0, "STANDARD_REPOSITORY": 1, "VIRTUAL_REPOSITORY": 2, "REMOTE_REPOSITORY": 3}
_REPOSITORY_ID = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
_PARENT = r"projects/(?P<project>[^/:]+)/locations/(?P<location>[^/:]+)"
_ROUTES = [
    ("GET", re.compile(rf"/v1/{_PARENT}/repositories"), "list_repositories"),
    ("POST", re.compile(rf"/v1/{_PARENT}/repositories"), "create_repository"),
    ("GET", re.compile(rf"/v1/(?P<name>{_PARENT}/repositories/[^/:]+)"), "get_repository"),
    ("DELETE", re.compile(rf"/v1/(?P<name>{_PARENT}/repositories/[^/:]+)"), "delete_repository"),
    ("GET", re.compile(rf"/v1/(?P<name>{_PARENT}/repositories/[^/:]+):getIamPolicy"), "get_iam_policy"),
    ("POST", re.compile(rf"/v1/(?P<name>{_PARENT}/repositories/[^/:]+):setIamPolicy"), "set_iam_policy"),
    ("POST", re.compile(rf"/v1/(?P<name>{_PARENT}/repositories/[^/:]+):testIamPermissions"), "test_iam_permissions"),
    ("GET", re.compile(rf"/v1/(?P<name>{_PARENT}/operations/[^/:]+)"), "get_operation"),
]


def _not_found() -> GoogleApiError:
    return GoogleApiError(404, "Requested entity was not found.")


def _rfc3339(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Policy:
    """A resource's IAM policy: bindings of role to members, versioned by an opaque etag."""

    bindings: list[dict[str, Any]] = field(default_factory=list)
    etag: bytes = EMPTY_POLICY_ETAG
    version: int = 0

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"etag": base64.b64encode(self.etag).decode()}
        if self.bindings:
            body = {"version": self.version or 1, **body, "bindings": copy.deepcopy(self.bindings)}
        return body

    def members_with(self, roles: Iterable[str]) -> set[str]:
        wanted = set(roles)
        return {
            member
            for binding in self.bindings
            if binding.get("role") in wanted and not binding.get("condition")  # conditions are not evaluated here
            for member in binding.get("members", [])
        }


class ArtifactRegistryState:
    """Repositories, their policies and project-level grants. Thread-safe.

    ``member_exists`` lets the IAM stand-in veto ``serviceAccount:`` members that do not
    exist, as setIamPolicy does ("Service account X does not exist.").
    """

    def __init__(self, member_exists: Callable[[str], bool] | None = None) -> None:
        self._lock = threading.RLock()
        self.member_exists = member_exists
        self._repositories: dict[str, dict[str, Any]] = {}
        self._policies: dict[str, Policy] = {}
        self._operations: dict[str, dict[str, Any]] = {}
        self._project_grants: dict[str, set[tuple[str, str]]] = {}
        self.caller_permissions: set[str] | None = None
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._repositories.clear()
            self._policies.clear()
            self._operations.clear()
            self._project_grants.clear()
            self.caller_permissions = None  # None: the caller holds every permission

    # -- repositories ------------------------------------------------------------------
    def create_repository(
        self, project: str, location: str, repository_id: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Create a repository (``body`` is the REST ``Repository``; format defaults to DOCKER here)."""
        if not repository_id:
            raise GoogleApiError(400, "Invalid resource field value in the request.")  # unconfirmed text
        if _REPOSITORY_ID.fullmatch(repository_id) is None:
            raise GoogleApiError(400, f"Invalid repository ID: {repository_id}")  # unconfirmed text
        name = f"projects/{project}/locations/{location}/repositories/{repository_id}"
        now = _rfc3339(dt.datetime.now(dt.UTC))
        repository = {k: v for k, v in (body or {}).items() if k not in ("name", "createTime", "updateTime")}
        repository.setdefault("format", "DOCKER")
        repository.setdefault("mode", "STANDARD_REPOSITORY")
        repository.update(name=name, createTime=now, updateTime=now)
        repository["format"] = _enum_name(repository["format"], _FORMATS)
        repository["mode"] = _enum_name(repository["mode"], _MODES)
        with self._lock:
            if name in self._repositories:
                raise GoogleApiError(409, "the repository already exists")
            self._repositories[name] = repository
            return copy.deepcopy(repository)

    def get_repository(self, name: str) -> dict[str, Any]:
        with self._lock:
            if name not in self._repositories:
                raise _not_found()
            return copy.deepcopy(self._repositories[name])

    def list_repositories(self, project: str, location: str) -> list[dict[str, Any]]:
        prefix = f"projects/{project}/locations/{location}/repositories/"
        with self._lock:
            return [copy.deepcopy(r) for n, r in sorted(self._repositories.items()) if n.startswith(prefix)]

    def find_repositories(self, project: str, repository_id: str, location: str | None = None) -> list[str]:
        """Names of repositories ``project/repository_id`` (in ``location``, or anywhere)."""
        with self._lock:
            return [
                name
                for name in self._repositories
                if name.startswith(f"projects/{project}/locations/")
                and name.endswith(f"/repositories/{repository_id}")
                and (location is None or name.split("/")[3] == location)
            ]

    def delete_repository(self, name: str) -> None:
        with self._lock:
            if self._repositories.pop(name, None) is None:
                raise _not_found()
            self._policies.pop(name, None)

    # -- policies ------------------------------------------------------------------------
    def get_policy(self, resource: str) -> Policy:
        with self._lock:
            if resource not in self._repositories:
                raise _not_found()
            return copy.deepcopy(self._policies.get(resource, Policy()))

    def set_policy(self, resource: str, bindings: list[dict[str, Any]], etag: bytes | None = None) -> Policy:
        """Replace the policy; a given ``etag`` must be the current one (else 409 ABORTED)."""
        cleaned = self._validated(bindings)
        with self._lock:
            current = self.get_policy(resource)
            if etag and etag != current.etag:
                raise GoogleApiError(409, CONCURRENT_CHANGE, "ABORTED")
            new = Policy(bindings=cleaned, etag=b"\x07\x06" + secrets.token_bytes(6), version=1)
            self._policies[resource] = new
            return copy.deepcopy(new)

    def add_binding(self, resource: str, role: str, member: str) -> Policy:
        """Test helper: grant ``role`` to ``member`` on a repository, as a read-modify-write."""
        with self._lock:
            policy = self.get_policy(resource)
            for binding in policy.bindings:
                if binding["role"] == role and not binding.get("condition"):
                    if member not in binding["members"]:
                        binding["members"].append(member)
                    break
            else:
                policy.bindings.append({"role": role, "members": [member]})
            return self.set_policy(resource, policy.bindings, policy.etag)

    def grant_project_role(self, project: str, role: str, member: str) -> None:
        """Test helper: a project-level grant (read access to every repository of ``project``)."""
        with self._lock:
            self._project_grants.setdefault(project, set()).add((role, member))

    def readers(self, repository: str) -> set[str]:
        """Members allowed to pull from ``repository`` (its policy plus project-level grants)."""
        project = repository.split("/")[1]
        with self._lock:
            members = self._policies.get(repository, Policy()).members_with(READ_ROLES)
            members |= {member for role, member in self._project_grants.get(project, set()) if role in READ_ROLES}
        return members

    def _validated(self, bindings: list[dict[str, Any]]) -> list[dict[str, Any]]:
        cleaned: list[dict[str, Any]] = []
        for binding in bindings:
            role = binding.get("role", "")
            if not isinstance(role, str) or not re.match(
                r"(roles/|projects/[^/]+/roles/|organizations/\d+/roles/)", role
            ):
                raise GoogleApiError(
                    400, f"Role ({role}) does not exist in the resource's hierarchy."
                )  # unconfirmed text
            members = list(dict.fromkeys(binding.get("members", [])))
            for member in members:
                if member not in ("allUsers", "allAuthenticatedUsers") and not member.startswith(_MEMBER_PREFIXES):
                    raise GoogleApiError(400, f"Invalid member: {member}")  # unconfirmed text
                if (
                    member.startswith("serviceAccount:")
                    and self.member_exists is not None
                    and not self.member_exists(member.removeprefix("serviceAccount:"))
                ):
                    raise GoogleApiError(
                        400, f"Service account {member.removeprefix('serviceAccount:')} does not exist."
                    )
            if members:  # IAM drops bindings left without members
                cleaned.append({**copy.deepcopy(binding), "members": members})
        return cleaned

    # -- operations ------------------------------------------------------------------------
    def record_operation(self, project: str, location: str, response: dict[str, Any]) -> dict[str, Any]:
        name = f"projects/{project}/locations/{location}/operations/{uuid.uuid4()}"
        operation = {
            "name": name,
            "metadata": {"@type": "type.googleapis.com/google.devtools.artifactregistry.v1.OperationMetadata"},
            "done": True,
            "response": response,
        }
        with self._lock:
            self._operations[name] = operation
        return copy.deepcopy(operation)

    def get_operation(self, name: str) -> dict[str, Any]:
        with self._lock:
            if name not in self._operations:
                raise _not_found()
            return copy.deepcopy(self._operations[name])


def _enum_name(value: Any, names: dict[str, int]) -> str:
    if isinstance(value, int):
        return next((n for n, v in names.items() if v == value), str(value))
    return str(value)


class ArtifactRegistryApp:
    """The WSGI app: routes the v1 REST paths to :class:`ArtifactRegistryState`."""

    def __init__(self, state: ArtifactRegistryState) -> None:
        self.state = state

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            body = self._dispatch(request)
            response = Response(json.dumps(body), status=200, content_type="application/json")
        except GoogleApiError as error:
            response = Response(json.dumps(error.body()), status=error.code, content_type="application/json")
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> dict[str, Any]:
        for method, pattern, action in _ROUTES:
            match = pattern.fullmatch(request.path)
            if match is not None and request.method == method:
                return getattr(self, action)(request, match.groupdict(), _ints_for_enums(request))
        raise GoogleApiError(404, f"The requested URL {request.path} was not found on this server.")

    # -- handlers ------------------------------------------------------------------------------
    def list_repositories(self, request: Request, params: dict[str, str], ints: bool) -> dict[str, Any]:
        repositories = self.state.list_repositories(params["project"], params["location"])
        page_size = min(int(request.args.get("pageSize") or 1000), 1000)
        token = request.args.get("pageToken", "")
        start = int(token) if token.isdigit() else 0
        page = [_render(r, ints) for r in repositories[start : start + page_size]]
        body: dict[str, Any] = {"repositories": page} if page else {}
        if start + page_size < len(repositories):
            body["nextPageToken"] = str(start + page_size)
        return body

    def create_repository(self, request: Request, params: dict[str, str], ints: bool) -> dict[str, Any]:
        repository = self.state.create_repository(
            params["project"], params["location"], request.args.get("repositoryId", ""), _json(request)
        )
        response = {"@type": "type.googleapis.com/google.devtools.artifactregistry.v1.Repository"}
        response.update(_render(repository, ints))
        return self.state.record_operation(params["project"], params["location"], response)

    def get_repository(self, request: Request, params: dict[str, str], ints: bool) -> dict[str, Any]:
        return _render(self.state.get_repository(params["name"]), ints)

    def delete_repository(self, request: Request, params: dict[str, str], ints: bool) -> dict[str, Any]:
        self.state.delete_repository(params["name"])
        empty = {"@type": "type.googleapis.com/google.protobuf.Empty"}
        return self.state.record_operation(params["project"], params["location"], empty)

    def get_iam_policy(self, request: Request, params: dict[str, str], ints: bool) -> dict[str, Any]:
        version = request.args.get("options.requestedPolicyVersion", "0")
        if version not in ("0", "1", "3"):
            raise GoogleApiError(400, f"Invalid requested policy version: {version}")  # unconfirmed text
        return self.state.get_policy(params["name"]).to_json()

    def set_iam_policy(self, request: Request, params: dict[str, str], ints: bool) -> dict[str, Any]:
        policy = _json(request).get("policy") or {}
        etag_text = policy.get("etag")
        try:
            etag = base64.b64decode(etag_text, validate=True) if etag_text else None
        except ValueError:
            raise GoogleApiError(400, "Invalid value at 'policy.etag' (TYPE_BYTES)") from None
        return self.state.set_policy(params["name"], policy.get("bindings", []), etag).to_json()

    def test_iam_permissions(self, request: Request, params: dict[str, str], ints: bool) -> dict[str, Any]:
        self.state.get_repository(params["name"])
        asked = _json(request).get("permissions", [])
        for permission in asked:
            if not permission.startswith("artifactregistry.") or "*" in permission:
                raise GoogleApiError(
                    400, f"Permission {permission} is not valid for this resource."
                )  # unconfirmed text
        held = self.state.caller_permissions
        granted = [p for p in asked if held is None or p in held]
        return {"permissions": granted} if granted else {}

    def get_operation(self, request: Request, params: dict[str, str], ints: bool) -> dict[str, Any]:
        return self.state.get_operation(params["name"])


def _ints_for_enums(request: Request) -> bool:
    """The generated REST clients ask for ``$alt=json;enum-encoding=int``; honour it."""
    return "enum-encoding=int" in request.args.get("$alt", "")


def _render(repository: dict[str, Any], ints: bool) -> dict[str, Any]:
    if not ints:
        return repository
    return {
        **repository,
        "format": _FORMATS.get(repository["format"], 0),
        "mode": _MODES.get(repository["mode"], 0),
    }


def _json(request: Request) -> dict[str, Any]:
    if not request.data:
        return {}
    try:
        body = json.loads(request.data)
    except ValueError:
        raise GoogleApiError(400, "Invalid JSON payload received.") from None
    if not isinstance(body, dict):
        raise GoogleApiError(400, "Invalid JSON payload received.")
    return body


class ArtifactRegistryStandIn:
    """The local Artifact Registry API: state, instrumented app, and its server on 127.0.0.1."""

    def __init__(self, state: ArtifactRegistryState | None = None) -> None:
        self.state = state or ArtifactRegistryState()
        self.app = Instrumented(ArtifactRegistryApp(self.state), name="artifactregistry")
        self.server = ServerThread(self.app)
        self.url = self.server.url

    def start(self) -> ArtifactRegistryStandIn:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def reset(self) -> None:
        self.state.reset()
        self.app.reset()

    def client(self) -> Any:
        """A real ``ArtifactRegistryClient`` (REST, anonymous) pointed at this server."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud.artifactregistry_v1 import ArtifactRegistryClient

        return ArtifactRegistryClient(
            transport="rest", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.url}
        )

    def __enter__(self) -> ArtifactRegistryStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
