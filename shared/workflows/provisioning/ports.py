"""The adapters the provisioning workflows drive, as the small interfaces they rely on.

The real adapters (shared.adapters.secrets, shared.adapters.iam, shared.adapters.artifact_registry, shared.adapters.dataloop)
satisfy these structurally; unit tests pass in-memory fakes. Keeping the list here shows
at a glance every remote call provisioning can make.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from shared.model.dataloop import Integration
    from shared.model.images import RepositoryInfo
    from shared.model.keys import KeyInfo, ServiceAccountKey
    from shared.model.record import SecretRecord
    from shared.model.results import Outcome


class SecretStore(Protocol):
    """Secret Manager: the managed secret is the integration's record (docs/external-apis.md §4.1)."""

    def list_secrets(self, filter: str = "") -> list[SecretRecord]: ...
    def get_secret(self, secret_id: str) -> SecretRecord: ...
    def create_secret(
        self,
        secret_id: str,
        *,
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
        topics: tuple[str, ...] = (),
        rotation_period_seconds: int | None = None,
        next_rotation_time: datetime | None = None,
    ) -> SecretRecord: ...
    def update_secret(
        self,
        secret_id: str,
        *,
        etag: str | None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        version_aliases: Mapping[str, int] | None = None,
        rotation_period_seconds: int | None = None,
        next_rotation_time: datetime | None = None,
    ) -> SecretRecord: ...
    def delete_secret(self, secret_id: str) -> bool: ...
    def add_version(self, secret_id: str, payload: bytes) -> int: ...
    def access(self, secret_id: str, version: str | int) -> tuple[int, bytes]: ...
    def list_versions(self, secret_id: str) -> dict[int, str]: ...
    def set_version_state(self, secret_id: str, version: int, state: str) -> None: ...


class AccountAdmin(Protocol):
    """IAM: the integration's service account and its user-managed keys."""

    def ensure_account(
        self, project: str, account_id: str, display_name: str = "", description: str = ""
    ) -> tuple[str, bool]: ...
    def get_account(self, email: str) -> dict[str, Any] | None: ...
    def delete_account(self, email: str) -> bool: ...
    def create_key(self, email: str) -> ServiceAccountKey: ...
    def list_keys(self, email: str) -> list[KeyInfo]: ...
    def delete_key(self, email: str, key_id: str) -> bool: ...


class RepositoryGrants(Protocol):
    """Artifact Registry: who may read each repository."""

    def get_repository(self, repository_path: str) -> RepositoryInfo: ...
    def grant_reader(self, repository_path: str, member: str) -> bool: ...
    def revoke_reader(self, repository_path: str, member: str) -> bool: ...


class OrgIntegrations(Protocol):
    """Dataloop: the registry integrations of one organization (``DataloopClient.integrations(org)``)."""

    def ensure(
        self, name: str, options: Mapping[str, Any], *, owned_id: str | None = None, adopt: bool = False
    ) -> Integration: ...
    def find_by_name(self, name: str) -> Integration | None: ...
    def delete(self, integration_id: str) -> bool: ...


class DataloopPlatform(Protocol):
    def integrations(self, org_id: str) -> OrgIntegrations: ...


class KeyRotation(Protocol):
    """The rotation workflow (shared/workflows/rotation.py), which the ``rotate`` action hands over to."""

    def rotate(
        self, secret_id: str, *, force: bool = False, dry_run: bool = False, request_id: str | None = None
    ) -> Outcome: ...
