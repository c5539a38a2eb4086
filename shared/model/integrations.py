"""Managed integrations: one Secret Manager secret per Dataloop registry integration.

The secret is the record (docs/external-apis.md §4.1): labels make managed secrets listable with one
filtered call; annotations say which Dataloop integration the secret feeds and which
registry host and repositories it covers; version aliases say which key is ``current``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.core.errors import PermanentError
from shared.model.images import RegistryImage, checked_registry_host
from shared.model.record import SecretRecord

MANAGED_LABEL = ("managed-by", "dataloop-gar")
MANAGED_FILTER = f"labels.{MANAGED_LABEL[0]}={MANAGED_LABEL[1]}"
SECRET_PREFIX = "dataloop-gar-"


class Annotation:
    """Annotation keys on a managed secret (Secret Manager allows [A-Za-z0-9._-], no slash)."""

    ORG = "dataloop-org"
    INTEGRATION_ID = "dataloop-integration-id"
    INTEGRATION_NAME = "dataloop-integration-name"
    SERVICE_ACCOUNT = "service-account"
    REGISTRY_HOST = "registry-host"
    REPOSITORIES = "repositories"  # comma-separated PROJECT/REPOSITORY
    CANARY_SERVICE = "canary-service"
    CANARY_IMAGE = "canary-image"
    ROTATION_PERIOD = "rotation-period"  # seconds
    ROTATION_LEASE = "rotation-lease"  # JSON {"holder": id, "expires": RFC 3339}
    ROTATED_AT = "rotated-at"  # RFC 3339: when `current` last changed
    KEY_EXPIRES_AT = (
        "key-expires-at"  # RFC 3339: when the `current` key expires (IAM's valid_before_time); absent: never
    )
    ROTATED_FOR_REQUEST = "rotated-for-request"  # request_id of the request that made `current`, if any
    LOCATION = "location"  # GAR location, e.g. us-central1
    CREATED_SERVICE_ACCOUNT = "created-service-account"  # "true" if provisioning created the SA
    LAST_TEST = "last-test"  # JSON summary of the last reference test (status reporting)
    LAST_PUSH = "last-push"  # JSON: the last push verdict and since when (shared.model.push_verdict)
    LAST_ROTATION = "last-rotation"  # JSON {"status", "code", "at"}: how the last rotation run ended
    REGISTRY_CHALLENGE = "registry-challenge"  # the registry's WWW-Authenticate, saves a cold round trip
    CREATED_KEYS = "created-keys"  # comma-separated ids of keys this system made (shared.model.key_ledger)


@dataclass(frozen=True)
class ManagedIntegration:
    """What a managed secret says about its Dataloop integration."""

    name: str
    secret_id: str
    registry_host: str
    repositories: tuple[str, ...]
    org_id: str | None = None
    integration_id: str | None = None
    service_account: str | None = None
    canary_service: str | None = None
    canary_image: str | None = None
    registry_challenge: str | None = None
    version_aliases: Mapping[str, int] = field(default_factory=dict)
    etag: str = ""
    #: The record this was read from: what a write of the push verdict starts from without a read.
    record: SecretRecord | None = field(default=None, compare=False, repr=False)

    def covers(self, image: RegistryImage) -> bool:
        return image.host == self.registry_host and image.repository_scope in self.repositories

    @classmethod
    def from_secret(cls, record: SecretRecord) -> ManagedIntegration:
        """Read a managed secret's annotations.

        Raises:
            PermanentError: the secret carries the managed label but not the annotations
                every integration needs (someone edited it by hand?).
        """
        notes = record.annotations
        host = notes.get(Annotation.REGISTRY_HOST, "").strip()
        repositories = tuple(r.strip() for r in notes.get(Annotation.REPOSITORIES, "").split(",") if r.strip())
        if not host or not repositories:
            raise PermanentError(
                f"managed secret {record.secret_id} lacks the {Annotation.REGISTRY_HOST!r}/"
                f"{Annotation.REPOSITORIES!r} annotations; re-provision it",
                code="bad-integration",
            )
        try:
            # Read back from Secret Manager, so untrusted: the host a key would be sent to.
            host = checked_registry_host(host)
        except ValueError as exc:
            raise PermanentError(
                f"managed secret {record.secret_id} annotation {Annotation.REGISTRY_HOST!r}: {exc}; "
                "nothing is sent there; re-provision it",
                code="bad-integration",
            ) from None
        secret_id = record.secret_id
        name = notes.get(Annotation.INTEGRATION_NAME) or secret_id.removeprefix(SECRET_PREFIX)
        return cls(
            name=name,
            secret_id=secret_id,
            registry_host=host,
            repositories=repositories,
            org_id=notes.get(Annotation.ORG) or None,
            integration_id=notes.get(Annotation.INTEGRATION_ID) or None,
            service_account=notes.get(Annotation.SERVICE_ACCOUNT) or None,
            canary_service=notes.get(Annotation.CANARY_SERVICE) or None,
            canary_image=notes.get(Annotation.CANARY_IMAGE) or None,
            registry_challenge=notes.get(Annotation.REGISTRY_CHALLENGE) or None,
            version_aliases=dict(record.version_aliases),
            etag=record.etag,
            record=record,
        )
