"""Dataloop FaaS services, as far as a platform-level pull check needs them.

Dataloop has no "test this integration" endpoint. The way to learn whether the platform
can pull an image is to point a (canary) service at it, restart it, and watch the
service's ``runtimeStatus`` entries: ``status`` true once a replica runs, or false with a
kubelet reason such as ``ErrImagePull`` / ``ImagePullBackOff`` (docs/external-apis.md §5.4).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from shared.model.dataloop import DataloopError

if TYPE_CHECKING:
    from shared.adapters.dataloop.client import DataloopClient

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


class Services:
    """Get, update, restart and watch services (any org; the id is global)."""

    def __init__(self, client: DataloopClient) -> None:
        self._client = client

    @staticmethod
    def _path(service_id: str, action: str = "") -> str:
        if not service_id:
            raise ValueError("Dataloop service id is empty")
        return f"/services/{quote(service_id, safe='')}{action}"

    def get(self, service_id: str) -> dict[str, Any]:
        """The full service JSON (kept whole: an update sends it all back)."""
        answer = self._client.request("GET", self._path(service_id))
        if not isinstance(answer, dict):
            raise DataloopError(f"Dataloop GET /services/{service_id} did not answer with a service")
        return answer

    def update(self, service: Mapping[str, Any]) -> dict[str, Any]:
        """``PATCH /services/{id}`` with the full service JSON, as dtlpy's ``services.update`` does."""
        service_id = service.get("id")
        if not isinstance(service_id, str):
            raise ValueError("service JSON has no id")
        answer = self._client.request("PATCH", self._path(service_id), json=dict(service))
        return answer if isinstance(answer, dict) else self.get(service_id)

    def set_runner_image(self, service_id: str, image: str) -> dict[str, Any]:
        """Point a service at ``image``; returns the updated service (and the caller keeps the old
        one, from :meth:`get`, to restore it)."""
        service = copy.deepcopy(self.get(service_id))
        runtime = service.get("runtime")
        if not isinstance(runtime, dict):
            runtime = service["runtime"] = {}
        runtime["runnerImage"] = image
        return self.update(service)

    def restart(self, service_id: str) -> None:
        """Ask for new replicas; they pull the runner image again, with the current integrations.

        The body is ``{}``, what dtlpy sends (docs/external-apis.md §5.4): whether the gateway
        takes a restart without one is not known, and only the SDK's request is known to work.
        """
        self._client.request("POST", self._path(service_id, "/restart"), json={})

    def stop(self, service_id: str) -> None:
        self._client.request("POST", self._path(service_id, "/stop"))

    def resume(self, service_id: str) -> None:
        self._client.request("POST", self._path(service_id, "/resume"))

    def status(self, service_id: str) -> ServiceStatus:
        return ServiceStatus.from_json(service_id, self._client.request("GET", self._path(service_id, "/status")))
