"""Managed integrations: one Secret Manager secret per Dataloop registry integration.

The secret is the record (docs/external-apis.md §4.1): labels make managed secrets listable with one
filtered call; annotations say which Dataloop integration the secret feeds and which
registry host and repositories it covers; version aliases say which key is ``current``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from shared.errors import PermanentError
from shared.images import RegistryImage, checked_registry_host
from shared.keys import ServiceAccountKey
from shared.record import CURRENT, SecretRecord
from shared.secrets import SecretManager

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
    ROTATED_FOR_REQUEST = "rotated-for-request"  # request_id of the request that made `current`, if any
    LOCATION = "location"  # GAR location, e.g. us-central1
    CREATED_SERVICE_ACCOUNT = "created-service-account"  # "true" if provisioning created the SA
    LAST_TEST = "last-test"  # JSON summary of the last reference test (status reporting)
    REGISTRY_CHALLENGE = "registry-challenge"  # the registry's WWW-Authenticate, saves a cold round trip
    CREATED_KEYS = "created-keys"  # comma-separated ids of keys this system made (shared.key_ledger)


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
        )


class IntegrationCatalog:
    """The managed integrations, listed with one filtered call and cached for ``ttl`` seconds.

    A short TTL keeps a push burst to one listing while still seeing a new integration
    or a rotated ``current`` alias within a minute. Secrets that are not well-formed are
    left out of the catalog and reported through ``on_invalid``.
    """

    def __init__(
        self,
        secrets: SecretManager,
        *,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        on_invalid: Callable[[str, str], None] | None = None,
    ) -> None:
        self._secrets = secrets
        self._ttl = ttl
        self._clock = clock
        self._on_invalid = on_invalid
        self._lock = threading.Lock()
        self._cached: tuple[float, tuple[ManagedIntegration, ...]] | None = None

    def all(self) -> tuple[ManagedIntegration, ...]:
        with self._lock:
            cached = self._cached
            if cached is not None and self._clock() - cached[0] < self._ttl:
                return cached[1]
            integrations = []
            for record in self._secrets.list_secrets(MANAGED_FILTER):
                try:
                    integrations.append(ManagedIntegration.from_secret(record))
                except PermanentError as exc:
                    if self._on_invalid:
                        self._on_invalid(record.secret_id, exc.reason)
            self._cached = (self._clock(), tuple(integrations))
            return self._cached[1]

    def covering(self, image: RegistryImage) -> Sequence[ManagedIntegration]:
        return [i for i in self.all() if i.covers(image)]

    def refresh(self) -> None:
        with self._lock:
            self._cached = None


class SecretKeySource:
    """Reads an integration's key by alias, caching each *version* forever.

    Versions are immutable, so once the catalog tells us which version ``current`` is,
    that payload can be kept for the life of the instance; a rotation moves the alias
    to a new version number and thus to a new cache entry. Reads are single-flight per
    secret: when a burst reaches a cold instance, the threads that all need the same key
    wait for the first one's read instead of each calling Secret Manager.
    """

    def __init__(self, secrets: SecretManager, *, max_entries: int = 512, lock_stripes: int = 32) -> None:
        self._secrets = secrets
        self._cache: OrderedDict[tuple[str, int], ServiceAccountKey] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()
        self._read_locks = tuple(threading.Lock() for _ in range(lock_stripes))

    def key(self, integration: ManagedIntegration, alias: str = CURRENT) -> ServiceAccountKey:
        version = integration.version_aliases.get(alias)
        if version is not None:
            cached = self._get((integration.secret_id, version))
            if cached is not None:
                return cached
        with self._read_locks[hash(integration.secret_id) % len(self._read_locks)]:
            if version is not None:
                cached = self._get((integration.secret_id, version))  # another thread's read
                if cached is not None:
                    return cached
            number, payload = self._secrets.access(integration.secret_id, version if version is not None else alias)
            key = ServiceAccountKey.from_json(payload, source=f"secret {integration.secret_id} version {number}")
            with self._lock:
                self._cache[(integration.secret_id, number)] = key
                while len(self._cache) > self._max:
                    self._cache.popitem(last=False)
            return key

    def _get(self, cache_key: tuple[str, int]) -> ServiceAccountKey | None:
        with self._lock:
            key = self._cache.get(cache_key)
            if key is not None:
                self._cache.move_to_end(cache_key)
            return key
