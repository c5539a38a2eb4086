"""Where the push path finds its integrations and their keys: cached reads of the managed secrets.

A push needs two things from Secret Manager: which integrations cover the image (one
filtered listing, shared by a burst) and the ``current`` key of each (one read per key
version for the life of the instance). Both caches sit here, beside the Secret Manager
adapter they read through, so the workflows see only ``shared.ports``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from shared.adapters.secrets import SecretManager
from shared.core.errors import PermanentError
from shared.model.images import RegistryImage
from shared.model.integrations import MANAGED_FILTER, ManagedIntegration
from shared.model.keys import ServiceAccountKey
from shared.model.record import CURRENT, SecretRecord


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

    def remember(self, record: SecretRecord) -> None:
        """Replace one cached integration by ``record`` (the push path's own write), keeping the
        listing's age: the next push of this instance decides from what it wrote, not from the
        listing it wrote over, and still costs no call."""
        with self._lock:
            cached = self._cached
            if cached is None:
                return
            kept = [i for i in cached[1] if i.secret_id != record.secret_id]
            if len(kept) == len(cached[1]):
                return  # not in this listing: the next listing will bring it
            try:
                fresh = ManagedIntegration.from_secret(record)
            except PermanentError as exc:
                if self._on_invalid:
                    self._on_invalid(record.secret_id, exc.reason)
                self._cached = (cached[0], tuple(kept))
                return
            self._cached = (cached[0], tuple(fresh if i.secret_id == record.secret_id else i for i in cached[1]))


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
