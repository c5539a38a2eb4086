"""Dataloop FaaS services, as far as a platform-level pull check needs them.

Dataloop has no "test this integration" endpoint. The way to learn whether the platform
can pull an image is to point a (canary) service at it, restart it, and watch the
service's ``runtimeStatus`` entries: ``status`` true once a replica runs, or false with a
kubelet reason such as ``ErrImagePull`` / ``ImagePullBackOff`` (docs/external-apis.md §5.4).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from shared.model.dataloop import DataloopError, ServiceStatus

if TYPE_CHECKING:
    from shared.adapters.dataloop.client import DataloopClient


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
