"""The interfaces the rotation depends on, so it never imports a client library.

The adapters implement them: :class:`shared.adapters.secrets.SecretManager`,
:class:`shared.adapters.iam.ServiceAccounts`, :class:`shared.adapters.dataloop.DataloopClient` and
:class:`shared.adapters.registry.RegistryClient`. Unit tests implement them in memory
(tests/unit/rotation_fakes.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from shared.model.images import ManifestRef, RegistryImage
    from shared.model.keys import KeyInfo, RegistryCredential, ServiceAccountKey
    from shared.model.record import SecretRecord


class SecretStore(Protocol):
    def list_secrets(self, filter: str = "") -> list[SecretRecord]:
        """Every secret matching the filter, all pages."""

    def get_secret(self, secret_id: str) -> SecretRecord:
        """Metadata and etag; PermanentError(code ``not-found``) when absent."""

    def access(self, secret_id: str, version: str | int) -> tuple[int, bytes]:
        """A version's payload and number."""

    def update_secret(
        self,
        secret_id: str,
        *,
        etag: str | None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        version_aliases: Mapping[str, int] | None = None,
    ) -> SecretRecord:
        """Replace the given fields under ``etag``; Conflict when it is stale."""

    def add_version(self, secret_id: str, payload: bytes) -> int:
        """A new version's number."""

    def list_versions(self, secret_id: str) -> dict[int, str]:
        """Version number -> state name."""

    def set_version_state(self, secret_id: str, version: int, state: str) -> None:
        """``disable``, ``enable`` or ``destroy`` one version."""


class KeyAccounts(Protocol):
    def create_key(self, email: str) -> ServiceAccountKey:
        """A new user-managed key (PermanentError ``key-limit``/``key-creation-disabled``)."""

    def list_keys(self, email: str) -> Sequence[KeyInfo]:
        """User-managed keys only."""

    def delete_key(self, email: str, key_id: str) -> bool:
        """False when already gone."""


class IntegrationCredentials(Protocol):
    def update_credentials(self, integration_id: str, options: Mapping[str, Any]) -> Any:
        """Replace an integration's registry credentials (DataloopUnavailable is transient)."""


class DataloopPort(Protocol):
    def integrations(self, org_id: str) -> IntegrationCredentials:
        """The integrations of one organization."""


class ProbeRegistry(Protocol):
    def resolve(self, image: RegistryImage, credential: RegistryCredential) -> ManifestRef:
        """HEAD a manifest with a pull token taken with ``credential``."""

    def forget(self, credential: RegistryCredential | None = None) -> None:
        """Drop cached tokens of ``credential`` so the next call proves it again."""

    def challenge_for(self, host: str) -> str | None:
        """The ``WWW-Authenticate`` challenge ``host`` answered with, once it has (worth recording)."""

    def check_host(self, host: str) -> None:
        """Raise PermanentError ``registry-host-refused`` unless credentials may be sent to ``host``."""
