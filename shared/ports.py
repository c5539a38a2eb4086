"""Every interface the workflows reach the outside world through, grouped by the service behind it.

Workflows import these and never a client library, so they run unchanged against the
adapters (shared/adapters) and against the in-memory fakes of the unit tests
(tests/unit/fakes.py). Keeping them in one module shows at a glance every remote call
the system can make, and gives each service one contract for its adapter and its fake.

Secret Manager has one :class:`SecretStore`, the union of what the workflows call: one
adapter implements it and one fake stands in for it, so two declarations of the same
service cannot drift apart. It is assembled from the few narrower protocols that some
code must be held to, so that a promise made in prose is checked by the type: the sweep
reads nothing but one listing (:class:`SecretLister`), and ``on_push`` only reads and
updates annotations (:class:`PushSecrets`: a canary lock's lease, a record's last push
verdict), under grants conditioned on the name prefixes, which cannot allow a create,
while provisioning alone creates the lock (:class:`LockCreator`).
IAM and Dataloop are split the same way: the base is what a rotation calls (keys; an
integration's credentials), the extension what provisioning adds (accounts; integrations
made, found and deleted).

Seams between workflows (the message dispatcher's ``Rotator`` and ``Sweeper``, the
request handler's ``KeyRotation``) stay beside their callers: they reach no service.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from shared.model.record import CURRENT

if TYPE_CHECKING:
    from shared.model.dataloop import Integration, ServiceStatus
    from shared.model.images import ManifestRef, RegistryImage, RepositoryInfo
    from shared.model.integrations import ManagedIntegration
    from shared.model.keys import KeyInfo, RegistryCredential, ServiceAccountKey
    from shared.model.record import SecretRecord
    from shared.model.results import Outcome


# -- Secret Manager: the managed secret is the integration's record (docs/external-apis.md §4.1) --


class SecretLister(Protocol):
    def list_secrets(self, filter: str = "") -> list[SecretRecord]:
        """Every secret matching the filter, all pages (labels, annotations and aliases included)."""


class LockCreator(Protocol):
    def create_secret(
        self, secret_id: str, *, labels: Mapping[str, str], annotations: Mapping[str, str]
    ) -> SecretRecord:
        """A new secret with no versions; Conflict ``already-exists`` when the id is taken."""


class PushSecrets(Protocol):
    def get_secret(self, secret_id: str) -> SecretRecord:
        """Metadata and etag; PermanentError(code ``not-found``) when absent."""

    def update_secret(
        self, secret_id: str, *, etag: str | None, annotations: Mapping[str, str] | None = None
    ) -> SecretRecord:
        """Replace the annotations under ``etag``; Conflict when it is stale."""


class SecretStore(SecretLister, LockCreator, PushSecrets, Protocol):
    def create_secret(
        self,
        secret_id: str,
        *,
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
        topics: tuple[str, ...] = (),
        rotation_period_seconds: int | None = None,
        next_rotation_time: datetime | None = None,
    ) -> SecretRecord:
        """A new secret with no versions; Conflict ``already-exists`` when the id is taken."""

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
    ) -> SecretRecord:
        """Replace the given fields under ``etag``; Conflict when it is stale."""

    def delete_secret(self, secret_id: str) -> bool:
        """False when already gone."""

    def add_version(self, secret_id: str, payload: bytes) -> int:
        """A new version's number."""

    def access(self, secret_id: str, version: str | int) -> tuple[int, bytes]:
        """A version's payload and number (by alias or number)."""

    def list_versions(self, secret_id: str) -> dict[int, str]:
        """Version number -> state name."""

    def set_version_state(self, secret_id: str, version: int, state: str) -> None:
        """``disable``, ``enable`` or ``destroy`` one version."""


class IntegrationDirectory(Protocol):
    """The managed secrets read as integrations (shared.adapters.catalog)."""

    def covering(self, image: RegistryImage) -> Sequence[ManagedIntegration]:
        """The managed integrations whose registry host and repositories cover ``image``."""

    def refresh(self) -> None:
        """Forget any cached view, so the next lookup reads the source again."""

    def remember(self, record: SecretRecord) -> None:
        """Take ``record``, just read or written, as the cached view of its integration."""


class KeySource(Protocol):
    def key(self, integration: ManagedIntegration, alias: str = CURRENT) -> ServiceAccountKey:
        """The key file an integration's secret holds under ``alias``."""


# -- IAM: the integration's service account and its user-managed keys -----------------------------


class KeyLister(Protocol):
    def list_keys(self, email: str) -> Sequence[KeyInfo]:
        """User-managed keys only."""


class KeyAccounts(KeyLister, Protocol):
    def create_key(self, email: str) -> ServiceAccountKey:
        """A new user-managed key (PermanentError ``key-limit``/``key-creation-disabled``)."""

    def delete_key(self, email: str, key_id: str) -> bool:
        """False when already gone."""


class AccountAdmin(KeyAccounts, Protocol):
    def ensure_account(
        self, project: str, account_id: str, display_name: str = "", description: str = ""
    ) -> tuple[str, bool]:
        """The account's email, and whether this call created it."""

    def get_account(self, email: str) -> dict[str, Any] | None:
        """The account's fields, or None when there is none."""

    def delete_account(self, email: str) -> bool:
        """False when already gone."""


# -- Artifact Registry: who may read each repository ----------------------------------------------


class RepositoryGrants(Protocol):
    def get_repository(self, repository_path: str) -> RepositoryInfo:
        """The repository; PermanentError ``repository-not-found`` when there is none."""

    def grant_reader(self, repository_path: str, member: str) -> bool:
        """Whether the policy changed."""

    def revoke_reader(self, repository_path: str, member: str) -> bool:
        """Whether the policy changed."""


# -- the registry v2 API: pulling a manifest with a key, as Dataloop would ------------------------


class ManifestReader(Protocol):
    def resolve(self, image: RegistryImage, credential: RegistryCredential) -> ManifestRef:
        """HEAD the manifest with a pull token; raise CredentialsRefused/ImageNotFound/DigestMismatch/RegistryUnavailable."""

    def challenge_for(self, host: str) -> str | None:
        """The ``WWW-Authenticate`` challenge ``host`` answered with, once it has (worth recording)."""


class ManifestResolver(ManifestReader, Protocol):
    def expect_challenge(self, host: str, header: str) -> bool:
        """Take a recorded challenge as a hint for a host not heard from yet (it may be ignored)."""


class ProbeRegistry(ManifestReader, Protocol):
    def forget(self, credential: RegistryCredential | None = None) -> None:
        """Drop cached tokens of ``credential`` so the next call proves it again."""

    def check_host(self, host: str) -> None:
        """Raise PermanentError ``registry-host-refused`` unless credentials may be sent to ``host``."""


# -- Dataloop: an organization's registry integrations, and the canary's services -----------------


class IntegrationCredentials(Protocol):
    def update_credentials(self, integration_id: str, options: Mapping[str, Any]) -> Any:
        """Replace an integration's registry credentials (DataloopUnavailable is transient)."""


class OrgIntegrations(IntegrationCredentials, Protocol):
    def ensure(
        self, name: str, options: Mapping[str, Any], *, owned_id: str | None = None, adopt: bool = False
    ) -> Integration:
        """The integration named ``name`` with ``options``; IntegrationNameTaken unless it is ours or adopted."""

    def find_by_name(self, name: str) -> Integration | None:
        """The integration named ``name``, if any."""

    def delete(self, integration_id: str) -> bool:
        """False when already gone."""


class DataloopCredentials(Protocol):
    def integrations(self, org_id: str) -> IntegrationCredentials:
        """The integrations of one organization."""


class DataloopPlatform(DataloopCredentials, Protocol):
    def integrations(self, org_id: str) -> OrgIntegrations:
        """The integrations of one organization."""


class ServiceControl(Protocol):
    """What the canary needs of Dataloop's services API (shared.adapters.dataloop.Services)."""

    def get(self, service_id: str) -> dict[str, Any]: ...
    def set_runner_image(self, service_id: str, image: str) -> dict[str, Any]: ...
    def restart(self, service_id: str) -> None: ...
    def status(self, service_id: str) -> ServiceStatus: ...


# -- Pub/Sub: results out, and the sweep's fan-out on the rotation topic --------------------------


class ResultSink(Protocol):
    def publish(self, outcome: Outcome, message: Mapping[str, Any] | None = None) -> None:
        """Deliver one outcome to whoever watches results; raise TransientError if it could not.

        ``message`` is ``outcome.to_message()`` when the caller has already built it.
        """


class FanOut(Protocol):
    def publish(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """Publish every message; how many were published. Raises TransientError if any failed."""
