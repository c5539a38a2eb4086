"""Dataloop registry integrations: how GAR credentials reach the platform's kubelets.

An integration is organization-scoped. For a private registry its ``options`` carry a
base64 docker config (``spec.password``) whose ``auths`` key must equal the image's
registry host *exactly*: a kubelet presents only credentials filed under the host it
pulls from, and any other key is a silent ``ImagePullBackOff`` (docs/external-apis.md §5.3). Dataloop
never returns options, so what we sent is checked where it matters: at the pull.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from shared.core.logs import log
from shared.model.dataloop import (
    GCP,
    PRIVATE_REGISTRY,
    DataloopConflict,
    DataloopError,
    DataloopNotFound,
    DataloopUnavailable,
    Integration,
    IntegrationNameTaken,
)

if TYPE_CHECKING:
    from shared.adapters.dataloop.client import DataloopClient

logger = logging.getLogger(__name__)

_ensure_locks: dict[tuple[str, str, str], threading.Lock] = {}
_ensure_guard = threading.Lock()


def _ensure_lock(key: tuple[str, str, str]) -> threading.Lock:
    with _ensure_guard:
        return _ensure_locks.setdefault(key, threading.Lock())


class Integrations:
    """The integrations of one Dataloop organization.

    Creating, updating and deleting need the org Admin or Owner role; a 403 says so.
    """

    def __init__(self, client: DataloopClient, org_id: str) -> None:
        if not org_id:
            raise ValueError("Dataloop organization id is empty")
        self._client = client
        self.org_id = org_id
        self._base = f"/orgs/{quote(org_id, safe='')}/integrations"

    def create(
        self, name: str, options: Mapping[str, Any], *, provider: str = GCP, integration_type: str = PRIVATE_REGISTRY
    ) -> Integration:
        """Create an integration. Not repeated after a 5xx (see client doc): prefer :meth:`ensure`."""
        body = {"type": integration_type, "name": name, "metadata": {"provider": provider}, "options": dict(options)}
        integration = Integration.from_json(self._client.request("POST", self._base, json=body, repeatable=False))
        log(
            logger,
            logging.INFO,
            "dataloop integration created",
            org=self.org_id,
            integration_id=integration.id,
            integration_name=name,
        )
        return integration

    def update_credentials(
        self,
        integration_id: str,
        options: Mapping[str, Any],
        *,
        integration_type: str = PRIVATE_REGISTRY,
        new_name: str | None = None,
        reload_services: bool = True,
    ) -> Integration:
        """Replace an integration's credentials (``reloadServices`` makes running services pick them up).

        The id travels in the body, not the path (docs/external-apis.md §5.2).
        """
        body: dict[str, Any] = {
            "integrationId": integration_id,
            "credentials": {"options": dict(options), "type": integration_type},
        }
        if new_name is not None:
            body["name"] = new_name
        params = {"reloadServices": "true"} if reload_services else None
        answer = self._client.request("PATCH", self._base, params=params, json=body)
        log(
            logger,
            logging.INFO,
            "dataloop integration credentials updated",
            org=self.org_id,
            integration_id=integration_id,
        )
        if isinstance(answer, Mapping) and isinstance(answer.get("id"), str):
            return Integration.from_json(answer)
        return self.get(integration_id)

    def get(self, integration_id: str) -> Integration:
        return Integration.from_json(self._client.request("GET", f"{self._base}/{quote(integration_id, safe='')}"))

    def list(self) -> list[Integration]:
        answer = self._client.request("GET", self._base)
        if isinstance(answer, Mapping):
            answer = answer.get("items", [])
        if not isinstance(answer, list):
            raise DataloopError(f"Dataloop GET {self._base} did not answer with a list of integrations")
        return [Integration.from_json(item) for item in answer]

    def find_by_name(self, name: str, *, integration_type: str | None = PRIVATE_REGISTRY) -> Integration | None:
        """The integration called ``name`` (of ``integration_type``), or None.

        Should duplicates exist (nothing stops them being made in the console), the oldest
        wins, deterministically, and the others are reported.
        """
        matches = [
            i for i in self.list() if i.name == name and (integration_type is None or i.type == integration_type)
        ]
        if not matches:
            return None
        matches.sort(key=lambda i: (i.created_at or "", i.id))
        if len(matches) > 1:
            log(
                logger,
                logging.WARNING,
                "dataloop has several integrations with one name; using the oldest",
                org=self.org_id,
                integration_name=name,
                integration_ids=[i.id for i in matches],
            )
        return matches[0]

    def delete(self, integration_id: str) -> bool:
        """Delete an integration; False if it was already gone (so a repeated delete is harmless)."""
        try:
            self._client.request("DELETE", f"{self._base}/{quote(integration_id, safe='')}")
        except DataloopNotFound:
            return False
        log(logger, logging.INFO, "dataloop integration deleted", org=self.org_id, integration_id=integration_id)
        return True

    def ensure(
        self,
        name: str,
        options: Mapping[str, Any],
        *,
        provider: str = GCP,
        owned_id: str | None = None,
        adopt: bool = False,
    ) -> Integration:
        """Make the integration ``name`` exist with ``options``, never creating a second one.

        Find by name, then update or create. An existing integration of that name is only
        updated when it is ``owned_id`` (the one this system recorded creating) or when the
        caller was explicitly asked to ``adopt`` it; anything else is someone else's and
        raises :class:`IntegrationNameTaken` (a name is not a proof of ownership in an org
        where people make integrations by hand). A create that may have happened anyway
        (5xx, timeout) or that clashed (409) is reconciled by finding the name again: the
        one found then is taken as this call's own. Calls in this process are serialised
        per name; across processes, the caller's lease must.
        """
        with _ensure_lock((self._client.base_url, self.org_id, name)):
            existing = self.find_by_name(name)
            if existing is not None:
                self._check_ownership(existing, owned_id, adopt)
                return self.update_credentials(existing.id, options)
            try:
                return self.create(name, options, provider=provider)
            except (DataloopUnavailable, DataloopConflict) as exc:
                found = self.find_by_name(name)
                if found is None:
                    raise
                if isinstance(exc, DataloopConflict):
                    # The name appeared between our look and our create: whose it is, only the
                    # record can say. A create lost to a timeout, by contrast, is our own.
                    self._check_ownership(found, owned_id, adopt)
                return self.update_credentials(found.id, options)

    def _check_ownership(self, existing: Integration, owned_id: str | None, adopt: bool) -> None:
        if existing.id != owned_id and not adopt:
            raise IntegrationNameTaken(
                f"Dataloop organization {self.org_id} already has an integration named {existing.name} "
                f"(id {existing.id}) that dataloop-gar did not create; rename or delete it, choose "
                'another name, or send "adopt_integration": true to hand it this integration\'s key'
            )
