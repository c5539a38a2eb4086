"""Provisioning requests, version 1: what an operator may ask of the ``requests`` function.

A request is one JSON object ``{"version": 1, "action": ..., "request_id"?: ..., ...}``.
This module is the one place that says which fields each action takes, and it answers a
bad request with *every* problem at once, each prefixed by the JSON-pointer path of the
field (``/repositories/0: ...``), so that an operator fixes a request in one round trip.

Validation is deliberately plain Python over a small declarative table (no pydantic:
its import would cost every cold start more than the rest of the function). Values are
checked against anchored ASCII patterns, which also keeps anything that looks like an
injection (quotes, slashes, whitespace, control or non-ASCII characters) out of the
names that end up in resource paths, IAM members and log lines. Error messages describe
what was expected and never echo a rejected value, so a hostile request cannot write
into the logs through its own rejection.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from shared.core.errors import RejectedMessage
from shared.model.events import parse_json
from shared.model.images import RegistryImage, checked_registry_host, location_of, registry_host
from shared.model.integrations import SECRET_PREFIX

VERSION = 1
#: A request is a few hundred bytes; this is far above any honest one and far below
#: what Pub/Sub would carry, so a flood of junk costs nothing to refuse.
MAX_REQUEST_BYTES = 16 * 1024
#: More problems than this are summarised: the first ones are enough to fix a request.
MAX_REPORTED_ERRORS = 25
MAX_REPOSITORIES = 20

INTEGRATION_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,38}[a-z0-9]")
_ORG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
_LOCATION = re.compile(r"[a-z][a-z0-9-]{0,61}[a-z0-9]")
_REPOSITORY = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
_ACCOUNT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
_ACCOUNT_EMAIL = re.compile(
    r"[a-z0-9][a-z0-9-]{0,62}@[a-z0-9][a-z0-9-]*(?:\.[a-z0-9][a-z0-9-]*)*\.gserviceaccount\.com"
)
SERVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_PRINTABLE_KEY = re.compile(r"[A-Za-z0-9_.-]{1,40}")

#: Bounds on a rotation period, in days: the minimum is Secret Manager's (docs/external-apis.md §4.4), the 10-year cap ours.
MIN_ROTATION_DAYS = 1 / 24
MAX_ROTATION_DAYS = 3650.0

# -- the requests ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceAccountChoice:
    """Either an account to create (``create``: its account id) or an existing one (``email``)."""

    create: str | None = None
    email: str | None = None

    def email_in(self, project: str) -> str:
        """The account's email; a created account lives in the integration's project."""
        return self.email or f"{self.create}@{project}.iam.gserviceaccount.com"


@dataclass(frozen=True)
class Canary:
    """A Dataloop service and image the platform-level pull check may use."""

    image: RegistryImage
    service_id: str | None = None


@dataclass(frozen=True)
class ProvisionRequest:
    action: ClassVar[str] = "provision"

    name: str
    org_id: str
    project: str
    location: str
    repositories: tuple[str, ...]
    service_account: ServiceAccountChoice
    registry_host: str
    canary: Canary | None = None
    rotation_period_days: float | None = None
    test_image: RegistryImage | None = None
    request_id: str | None = None
    #: Take over an existing Dataloop integration of this name that the system did not create.
    adopt_integration: bool = False

    @property
    def secret_id(self) -> str:
        return SECRET_PREFIX + self.name

    @property
    def repository_scopes(self) -> tuple[str, ...]:
        """``PROJECT/REPOSITORY`` for each repository: what IAM grants and images are matched on."""
        return tuple(f"{self.project}/{r}" for r in self.repositories)

    @property
    def image_to_test(self) -> RegistryImage | None:
        return self.test_image or (self.canary.image if self.canary else None)


@dataclass(frozen=True)
class DeprovisionRequest:
    action: ClassVar[str] = "deprovision"

    name: str
    keep_secret: bool = False
    request_id: str | None = None

    @property
    def secret_id(self) -> str:
        return SECRET_PREFIX + self.name


@dataclass(frozen=True)
class RotateRequest:
    action: ClassVar[str] = "rotate"

    name: str
    force: bool = False
    dry_run: bool = False
    request_id: str | None = None

    @property
    def secret_id(self) -> str:
        return SECRET_PREFIX + self.name


@dataclass(frozen=True)
class ImageTestRequest:
    """``test``: pull-check ``image`` with the current key of ``name`` (or of every covering integration)."""

    action: ClassVar[str] = "test"

    image: RegistryImage
    name: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class StatusRequest:
    """``status``; ``compliance`` adds every managed account's keys from IAM (one list call per account)."""

    action: ClassVar[str] = "status"

    name: str | None = None
    request_id: str | None = None
    compliance: bool = False


Request = ProvisionRequest | DeprovisionRequest | RotateRequest | ImageTestRequest | StatusRequest


class InvalidRequest(RejectedMessage):
    """The request breaks the schema; ``errors`` lists every problem with its field path."""

    code = "invalid-request"

    def __init__(self, errors: list[str], *, action: str | None = None, request_id: str | None = None) -> None:
        self.errors = list(errors)
        self.action = action
        self.request_id = request_id
        what = f"invalid {action} request" if action else "invalid request"
        super().__init__(f"{what}: " + "; ".join(self.errors))


# -- a tiny declarative validator ----------------------------------------------------------------

_INVALID = object()  # a field's checker found a problem (already recorded)


class _Problems:
    """Collects ``PATH: message`` lines, in the order fields are declared."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, path: str, message: str) -> object:
        self.lines.append(f"{path or '/'}: {message}")
        return _INVALID


Check = Callable[[Any, str, _Problems], Any]


@dataclass(frozen=True)
class Field:
    """One member of a JSON object: how to check it, and whether it must be there."""

    name: str
    check: Check
    required: bool = False
    hint: str = ""  # appended to "required" so the operator learns the shape too


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _pointer_token(key: str) -> str:
    """A member name as a JSON-pointer token, shown only if it is short and tame."""
    if not _PRINTABLE_KEY.fullmatch(key):
        return "<unprintable name>"
    return key.replace("~", "~0").replace("/", "~1")


def text(pattern: re.Pattern[str], expected: str) -> Check:
    """A string that fully matches ``pattern``; ``expected`` says what that means, in words."""

    def check(value: Any, path: str, problems: _Problems) -> Any:
        if not isinstance(value, str):
            return problems.add(path, f"must be a string, got {_json_type(value)}")
        if not pattern.fullmatch(value):
            return problems.add(path, f"must be {expected}")
        return value

    return check


def boolean(value: Any, path: str, problems: _Problems) -> Any:
    if not isinstance(value, bool):
        return problems.add(path, f"must be true or false, got {_json_type(value)}")
    return value


def number(low: float, high: float, expected: str) -> Check:
    def check(value: Any, path: str, problems: _Problems) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return problems.add(path, f"must be a number, got {_json_type(value)}")
        if not low <= value <= high:  # NaN fails this too
            return problems.add(path, f"must be {expected}")
        return float(value)

    return check


def registry_host_text(value: Any, path: str, problems: _Problems) -> Any:
    """A registry host, by the check the registry client applies before it sends a key."""
    if not isinstance(value, str):
        return problems.add(path, f"must be a string, got {_json_type(value)}")
    try:
        return checked_registry_host(value)
    except ValueError:
        return problems.add(
            path, "must be LOCATION-docker.pkg.dev, or a loopback host (127.0.0.1:PORT) of the local cloud"
        )


def image_reference(value: Any, path: str, problems: _Problems) -> Any:
    if not isinstance(value, str):
        return problems.add(path, f"must be a string, got {_json_type(value)}")
    try:
        return RegistryImage.parse(value)
    except RejectedMessage:
        return problems.add(path, "must be an image reference HOST/PROJECT/REPOSITORY/IMAGE[:TAG][@sha256:DIGEST]")


def array(item: Check, *, min_items: int, max_items: int, unique: bool = False) -> Check:
    def check(value: Any, path: str, problems: _Problems) -> Any:
        if not isinstance(value, list):
            return problems.add(path, f"must be an array, got {_json_type(value)}")
        if not min_items <= len(value) <= max_items:
            return problems.add(path, f"must have {min_items} to {max_items} items, got {len(value)}")
        items = []
        seen: dict[Any, int] = {}
        for index, element in enumerate(value):
            parsed = item(element, f"{path}/{index}", problems)
            if parsed is _INVALID:
                items.append(parsed)
                continue
            if unique and parsed in seen:
                items.append(problems.add(f"{path}/{index}", f"repeats {path}/{seen[parsed]}"))
                continue
            seen[parsed] = index
            items.append(parsed)
        return _INVALID if any(i is _INVALID for i in items) else tuple(items)

    return check


def members(fields: tuple[Field, ...], value: Mapping[str, Any], path: str, problems: _Problems) -> dict[str, Any]:
    """Check the declared members of an object and refuse the undeclared ones."""
    parsed: dict[str, Any] = {}
    declared = {f.name for f in fields}
    for spec in fields:
        where = f"{path}/{spec.name}"
        if spec.name not in value:
            if spec.required:
                problems.add(where, f"required{spec.hint}")
                parsed[spec.name] = _INVALID
            continue
        parsed[spec.name] = spec.check(value[spec.name], where, problems)
    for key in sorted(k for k in value if k not in declared):
        problems.add(f"{path}/{_pointer_token(str(key))}", "unknown field")
    return parsed


def obj(fields: tuple[Field, ...], *, exactly_one_of: tuple[str, ...] = ()) -> Check:
    def check(value: Any, path: str, problems: _Problems) -> Any:
        if not isinstance(value, dict):
            return problems.add(path, f"must be an object, got {_json_type(value)}")
        parsed = members(fields, value, path, problems)
        if exactly_one_of and sum(1 for name in exactly_one_of if name in value) != 1:
            choices = " or ".join(f'"{name}"' for name in exactly_one_of)
            return problems.add(path, f"must have exactly one of {choices}")
        return _INVALID if any(v is _INVALID for v in parsed.values()) else parsed

    return check


# -- the schema, in one table --------------------------------------------------------------------

NAME_RULE = "3-40 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"

_name = Field("name", text(INTEGRATION_NAME, NAME_RULE), required=True)
_optional_name = Field("name", text(INTEGRATION_NAME, NAME_RULE))

_SERVICE_ACCOUNT = (
    Field(
        "create",
        text(_ACCOUNT_ID, "a service account id: 6-30 characters of a-z, 0-9 and '-', starting with a letter"),
    ),
    Field("email", text(_ACCOUNT_EMAIL, "a service account email (NAME@PROJECT.iam.gserviceaccount.com)")),
)
_CANARY = (
    Field("image", image_reference, required=True),
    Field("service_id", text(SERVICE_ID, "a Dataloop service id (letters, digits and '-')")),
)

ACTIONS: dict[str, tuple[Field, ...]] = {
    "provision": (
        _name,
        Field("org_id", text(_ORG_ID, "a Dataloop organization id (letters, digits and '-')"), required=True),
        Field(
            "project",
            text(_PROJECT, "a GCP project id: 6-30 characters of a-z, 0-9 and '-', starting with a letter"),
            required=True,
        ),
        Field(
            "location",
            text(_LOCATION, "an Artifact Registry location such as us-central1 or europe"),
            required=True,
        ),
        Field(
            "repositories",
            array(
                text(_REPOSITORY, "a repository id: a-z, 0-9 and '-', starting with a letter, at most 63 characters"),
                min_items=1,
                max_items=MAX_REPOSITORIES,
                unique=True,
            ),
            required=True,
        ),
        Field(
            "service_account",
            obj(_SERVICE_ACCOUNT, exactly_one_of=("create", "email")),
            required=True,
            hint=' ({"create": "ACCOUNT_ID"} or {"email": "EMAIL"})',
        ),
        Field(
            "registry_host",
            registry_host_text,
        ),
        Field("canary", obj(_CANARY)),
        Field(
            "rotation_period_days",
            number(MIN_ROTATION_DAYS, MAX_ROTATION_DAYS, "between 1/24 (one hour) and 3650 days"),
        ),
        Field("test_image", image_reference),
        Field("adopt_integration", boolean),
    ),
    "deprovision": (_name, Field("keep_secret", boolean)),
    "rotate": (_name, Field("force", boolean), Field("dry_run", boolean)),
    "test": (_optional_name, Field("image", image_reference, required=True)),
    "status": (_optional_name, Field("compliance", boolean)),
}
_COMMON = ("version", "action", "request_id")
_request_id = text(_REQUEST_ID, "1-128 characters of letters, digits and . _ : -, starting with a letter or digit")


# -- parsing --------------------------------------------------------------------------------------


def parse_request(data: bytes | str | Mapping[str, Any]) -> Request:
    """Validate a request (raw message bytes, or JSON already decoded) and build it.

    Raises:
        InvalidRequest: listing every problem, with the action and request id when they
            could be read, so that even a rejection is answered to the right caller.
    """
    if isinstance(data, (bytes, str)):
        size = len(data.encode("utf-8") if isinstance(data, str) else data)
        if size > MAX_REQUEST_BYTES:
            raise InvalidRequest([f"/: the request is {size} bytes; the limit is {MAX_REQUEST_BYTES}"])
        try:
            payload = parse_json(data, what="the request")
        except RejectedMessage as exc:
            raise InvalidRequest([f"/: {exc.reason}"]) from None
    else:
        payload = data
    if not isinstance(payload, dict):
        raise InvalidRequest([f"/: must be a JSON object, got {_json_type(payload)}"])

    problems = _Problems()
    request_id = payload.get("request_id")
    if "request_id" in payload:
        request_id = _request_id(request_id, "/request_id", problems)
    request_id = request_id if isinstance(request_id, str) else None

    version = payload.get("version")
    if "version" not in payload:
        problems.add("/version", f"required (this function understands version {VERSION})")
    elif isinstance(version, bool) or not isinstance(version, int):
        problems.add("/version", f"must be an integer, got {_json_type(version)}")
    elif version != VERSION:
        problems.add("/version", f"unsupported version {version}; this function understands version {VERSION}")

    action = payload.get("action")
    choices = ", ".join(sorted(ACTIONS))
    if "action" not in payload:
        problems.add("/action", f"required; one of {choices}")
        action = None
    elif not isinstance(action, str) or action not in ACTIONS:
        problems.add("/action", f"must be one of {choices}")
        action = None

    values: dict[str, Any] = {}
    if action is not None:
        body = {k: v for k, v in payload.items() if k not in _COMMON}
        values = members(ACTIONS[action], body, "", problems)
        _cross_check(action, values, problems)

    if problems.lines or action is None:  # no action always comes with a problem line
        lines = problems.lines
        if len(lines) > MAX_REPORTED_ERRORS:
            lines = [*lines[:MAX_REPORTED_ERRORS], f"... and {len(lines) - MAX_REPORTED_ERRORS} more problems"]
        raise InvalidRequest(lines, action=action, request_id=request_id)
    return _build(action, values, request_id)


def _cross_check(action: str, values: dict[str, Any], problems: _Problems) -> None:
    """Rules that span fields: the images a provision tests must be in what it grants.

    This is a safety rule as much as a convenience: the reference test sends the key to
    the image's registry, so an image on any other host would hand the key to that host.
    """
    if action != "provision":
        return
    location, project, repositories = values.get("location"), values.get("project"), values.get("repositories")
    host = values.get("registry_host")
    if isinstance(location, str) and _LOCATION.fullmatch(location):
        if host is None:
            values["registry_host"] = host = registry_host(location)
        elif isinstance(host, str) and location_of(host) not in (None, location):
            problems.add("/registry_host", f"must be {registry_host(location)} for location {location}")
    if not isinstance(host, str) or not isinstance(project, str) or not isinstance(repositories, tuple):
        return
    scopes = {f"{project}/{r}" for r in repositories}
    canary = values.get("canary")
    images = [("/test_image", values.get("test_image"))]
    if isinstance(canary, dict):
        images.append(("/canary/image", canary.get("image")))
    for path, image in images:
        if not isinstance(image, RegistryImage):
            continue
        if image.host != host:
            problems.add(path, f"must be on the integration's registry host {host}")
        elif image.repository_scope not in scopes:
            problems.add(path, "must be in one of the repositories being provisioned (PROJECT/REPOSITORY)")


def _build(action: str, values: dict[str, Any], request_id: str | None) -> Request:
    if action == "provision":
        account = values["service_account"]
        canary = values.get("canary")
        return ProvisionRequest(
            name=values["name"],
            org_id=values["org_id"],
            project=values["project"],
            location=values["location"],
            repositories=values["repositories"],
            service_account=ServiceAccountChoice(create=account.get("create"), email=account.get("email")),
            registry_host=values["registry_host"],
            canary=Canary(canary["image"], canary.get("service_id")) if canary else None,
            rotation_period_days=values.get("rotation_period_days"),
            test_image=values.get("test_image"),
            request_id=request_id,
            adopt_integration=bool(values.get("adopt_integration", False)),
        )
    if action == "deprovision":
        return DeprovisionRequest(values["name"], bool(values.get("keep_secret", False)), request_id)
    if action == "rotate":
        return RotateRequest(
            values["name"], bool(values.get("force", False)), bool(values.get("dry_run", False)), request_id
        )
    if action == "test":
        return ImageTestRequest(values["image"], values.get("name"), request_id)
    return StatusRequest(values.get("name"), request_id, bool(values.get("compliance", False)))
