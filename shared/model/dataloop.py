"""Dataloop's side of the domain: its integrations, what its refusals mean, the options it stores.

These are the shapes the workflows reason about (an integration found by name, a name
taken by someone else, the docker config a kubelet will read); the adapter in
``shared.adapters.dataloop`` turns Dataloop's HTTP answers into them. Built from what
the dtlpy SDK sends and reads (docs/external-apis.md §5).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.core import json_text
from shared.core.errors import GarDataloopError, PermanentError, ServiceUnavailable
from shared.core.redaction import redact_text, register_secret
from shared.model.images import checked_registry_host, registry_host


class DataloopError(GarDataloopError):
    """A Dataloop call failed; ``status`` is None when no HTTP answer arrived."""

    code = "dataloop-error"

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        message: str | None = None,
        request_id: str | None = None,
        method: str | None = None,
        path: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(redact_text(reason), code=code)
        self.status = status
        self.message = message
        self.request_id = request_id
        self.method = method
        self.path = path


class DataloopRejected(DataloopError, PermanentError):
    """Dataloop answered 4xx: the same request will be refused again."""

    code = "dataloop-rejected"


class DataloopUnauthorized(DataloopRejected):
    """401: the API key or the bot user's password/JWT was not accepted."""

    code = "dataloop-unauthorized"


class DataloopForbidden(DataloopRejected):
    """403: authenticated, but the user lacks the role (integrations need org Admin/Owner)."""

    code = "dataloop-forbidden"


class DataloopNotFound(DataloopRejected):
    """404: the organization, integration or service id does not exist (for this user)."""

    code = "dataloop-not-found"


class DataloopConflict(DataloopRejected):
    """409: the request clashes with existing state (e.g. a duplicate integration name)."""

    code = "dataloop-conflict"


class IntegrationNameTaken(DataloopRejected):
    """An integration of the requested name exists that this system did not create (or was
    not told to adopt): updating it would overwrite someone else's registry credentials."""

    code = "integration-name-taken"


class DataloopUnavailable(DataloopError, ServiceUnavailable):
    """Dataloop was unreachable, rate limiting (429) or failing (5xx) after our retries."""

    code = "dataloop-unavailable"


PRIVATE_REGISTRY = "private-registry"
GCP = "gcp"
#: GAR's docker login user for a key file (docs/external-apis.md §2.2).
JSON_KEY_USER = "_json_key"

_BARE_LOCATION = re.compile(r"[a-z]+(?:-[a-z]+[0-9]*)*")


def _b64(text: str) -> str:
    """Standard base64 of UTF-8, as dtlpy's ``IntegrationUtils.encode``."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def registry_host_for(location_or_host: str) -> str:
    """The ``auths`` key for a GAR location: a host as given, a bare location made a host.

    dtlpy 1.126 turns ``us-central1`` into ``us-central1-docker.pkg.dev``; we accept that
    spelling too. Any other value must pass :func:`shared.model.images.checked_registry_host`
    (a GAR host, or a loopback one of the local cloud): no scheme, path, userinfo or port.

    Raises:
        ValueError: not a registry host.
    """
    value = (location_or_host or "").strip()
    if not value:
        raise ValueError("registry host is empty; expected e.g. us-central1-docker.pkg.dev")
    if "." not in value and ":" not in value and value != "localhost" and _BARE_LOCATION.fullmatch(value):
        return registry_host(value)
    # The host Dataloop's kubelets will send this key to: held to the registry client's check.
    return checked_registry_host(value)


def gar_options(key_json_text: str, registry_host: str, email: str | None = None) -> dict[str, Any]:
    """The integration ``options`` for a GAR service-account key, exactly as dtlpy builds them.

    ``key_json_text`` is used verbatim (never re-serialised): the registry compares the
    password it receives with the key it issued. Every form of the secret is registered
    for redaction before it is returned.

    Raises:
        ValueError: the key is not a service-account key file, or the host is not a host.
            The message never contains the key.
    """
    if not key_json_text or not key_json_text.strip():
        raise ValueError("service-account key is empty")
    register_secret(key_json_text)
    try:
        key = json_text.loads(key_json_text)
    except ValueError:
        raise ValueError("service-account key is not valid JSON") from None
    if not isinstance(key, dict):
        raise ValueError("service-account key must be a JSON object (a key file)")
    missing = [name for name in ("client_email", "private_key") if not key.get(name)]
    if missing:
        raise ValueError(f"service-account key file lacks {', '.join(missing)}")
    host = registry_host_for(registry_host)
    auth = _b64(f"{JSON_KEY_USER}:{key_json_text}")
    entry: dict[str, str] = {"username": JSON_KEY_USER, "password": key_json_text, "auth": auth}
    if email:
        entry["email"] = email
    docker_config = json.dumps({"auths": {host: entry}})
    password = _b64(docker_config)
    for secret in (auth, docker_config, password):
        register_secret(secret)
    return {"name": JSON_KEY_USER, "spec": {"password": password}}


def _metadata(value: Any) -> dict[str, Any]:
    """Metadata as a dict: Dataloop sends a dict but answers with a list of ``{name, value}``."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list):
        return {item["name"]: item.get("value") for item in value if isinstance(item, Mapping) and "name" in item}
    return {}


def _id_of(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Integration:
    """An integration as Dataloop describes it (never with its credentials)."""

    id: str
    name: str
    type: str
    org: str | None = None
    created_at: str | None = None
    creator: str | None = None
    updated_at: str | None = None
    url: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def provider(self) -> str | None:
        value = self.metadata.get("provider")
        return value if isinstance(value, str) else None

    @classmethod
    def from_json(cls, data: Any) -> Integration:
        """Read one integration; older answers spell ``createdBy``/``updateAt`` (dtlpy reads those).

        Raises:
            DataloopError: the answer is not an integration (no id).
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
            raise DataloopError("Dataloop answered with something that is not an integration (no id)")
        creator = data.get("creator", data.get("createdBy"))
        return cls(
            id=data["id"],
            name=str(data.get("name") or ""),
            type=str(data.get("type") or ""),
            org=_id_of(data.get("org", data.get("orgId"))),
            created_at=data.get("createdAt"),
            creator=creator if isinstance(creator, str) else _id_of(creator),
            updated_at=data.get("updatedAt", data.get("updateAt")),
            url=data.get("url"),
            metadata=_metadata(data.get("metadata")),
        )


def runner_image(service: Mapping[str, Any]) -> str | None:
    """The image a service's replicas run (``runtime.runnerImage``)."""
    runtime = service.get("runtime")
    image = runtime.get("runnerImage") if isinstance(runtime, Mapping) else None
    return image if isinstance(image, str) and image else None


# -- services: what the platform tier reads of a canary's runtime (docs/external-apis.md §5.4) --


#: Kubelet reasons that mean the image could not be pulled (credentials, name or network).
PULL_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class RuntimeStatus:
    """One ``runtimeStatus`` entry: the state of a replica at ``created_at``."""

    status: bool
    reason: str | None = None
    message: str | None = None
    created_at: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def pull_failed(self) -> bool:
        return not self.status and self.reason in PULL_FAILURES

    @property
    def when(self) -> datetime | None:
        return _timestamp(self.created_at)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RuntimeStatus:
        reason, message = data.get("reason"), data.get("message")
        return cls(
            status=data.get("status") is True,
            reason=reason if isinstance(reason, str) and reason else None,
            message=message if isinstance(message, str) and message else None,
            created_at=data.get("createdAt") if isinstance(data.get("createdAt"), str) else None,
            raw=dict(data),
        )


@dataclass(frozen=True)
class ServiceStatus:
    """A service's runtime status entries, oldest first."""

    service_id: str
    entries: tuple[RuntimeStatus, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def since(self, moment: datetime) -> tuple[RuntimeStatus, ...]:
        """Entries stamped at or after ``moment`` (timezone-aware): what a restart produced."""
        return tuple(e for e in self.entries if (when := e.when) is not None and when >= moment)

    @property
    def latest(self) -> RuntimeStatus | None:
        return self.entries[-1] if self.entries else None

    @classmethod
    def from_json(cls, service_id: str, data: Any) -> ServiceStatus:
        """Read ``GET /services/{id}/status``.

        Raises:
            DataloopError: the answer has no ``runtimeStatus`` list.
        """
        items = data.get("runtimeStatus") if isinstance(data, Mapping) else None
        if items is None and isinstance(data, Mapping):
            items = []
        if not isinstance(items, list):
            raise DataloopError(f"Dataloop's status of service {service_id} has no runtimeStatus list")
        entries = [RuntimeStatus.from_json(item) for item in items if isinstance(item, Mapping)]
        # Oldest first; entries without a time keep their place at the start.
        entries.sort(key=lambda e: (e.when is not None, e.when.timestamp() if e.when else 0.0))
        return cls(service_id, tuple(entries), dict(data) if isinstance(data, Mapping) else {})
