"""One rotation run's state, and the reads and deletions every step shares.

The steps, the cleanup and the rollback are separate functions, yet they must agree on
what this run has already read (a version's key is read once per run) and they must all
pass the same safety check before deleting a key; keeping both here, on the run, is what
makes that check impossible to skip.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.core.errors import PermanentError
from shared.model.dataloop import gar_options
from shared.model.integrations import ManagedIntegration
from shared.model.keys import ServiceAccountKey
from shared.model.record import CURRENT, KEY_ALIASES, RetiredKey, SecretRecord
from shared.ports import DataloopCredentials, KeyAccounts, SecretStore
from shared.workflows.key_probe import KeyProbe
from shared.workflows.rotation.report import StepReport, timed
from shared.workflows.stored_keys import read_key


@dataclass(frozen=True)
class Services:
    """What a run reaches through, and the settings that bound it."""

    secrets: SecretStore
    accounts: KeyAccounts
    dataloop: Callable[[], DataloopCredentials]
    probe: KeyProbe
    clock: Callable[[], datetime]
    monotonic: Callable[[], float]
    grace_period_seconds: float
    test_timeout_seconds: float
    lease_seconds: float


@dataclass
class Run:
    """What one rotation run knows; ``record`` is always the secret as last read or written."""

    services: Services
    record: SecretRecord
    integration: ManagedIntegration
    holder: str
    request_id: str | None
    started: float
    subject: dict[str, Any]
    resumed: bool = False
    steps: list[StepReport] = field(default_factory=list)
    keys: dict[int, ServiceAccountKey] = field(default_factory=dict)  # version -> key, read this run
    old_key_id: str | None = None
    new_key_id: str | None = None
    orphans_deleted: list[str] = field(default_factory=list)
    strays_disabled: list[int] = field(default_factory=list)
    retired_deleted: list[str] = field(default_factory=list)
    retired: dict[int, RetiredKey] = field(default_factory=dict)
    retired_changed: bool = False
    notes: list[str] = field(default_factory=list)
    challenge: str | None = None  # the registry's, learnt by the test step; recorded at finish

    @property
    def secret_id(self) -> str:
        return self.record.secret_id

    @property
    def account(self) -> str:
        return self.integration.service_account or ""

    @property
    def aliases(self) -> dict[str, int]:
        return dict(self.record.version_aliases)

    def step(self, name: str) -> contextlib.AbstractContextManager[StepReport]:
        return timed(self.steps, name)

    def key(self, version: int) -> ServiceAccountKey:
        """A version's key, read once per run."""
        if version not in self.keys:
            self.keys[version] = read_key(self.services.secrets, self.secret_id, version)
        return self.keys[version]

    def delete_key(self, key_id: str) -> None:
        """Delete one key of the run's account, after checking that no alias names it.

        The check runs before *every* deletion, whatever the caller believes: the key
        ``current`` names must be known to this run and differ from ``key_id``, and so must
        the keys of ``previous`` and ``pending`` where this run has read them.
        """
        aliases = self.aliases
        aliased = [v for a in KEY_ALIASES if (v := aliases.get(a)) is not None]
        current = aliases.get(CURRENT)
        protected = {self.keys[v].key_id for v in aliased if v in self.keys}
        if current not in self.keys or key_id in protected:
            raise PermanentError(
                f"refusing to delete key {key_id} of {self.account}: an alias of {self.secret_id} names it, or the "
                "current key is not known to this run (a bug; nothing was deleted)",
                code="refused-aliased-key",
            )
        self.services.accounts.delete_key(self.account, key_id)

    def give_dataloop(self, key: ServiceAccountKey) -> None:
        """Put ``key`` into the Dataloop integration (a PATCH of the whole options: idempotent)."""
        integration = self.integration
        options = gar_options(key.json_text, integration.registry_host)
        self.services.dataloop().integrations(integration.org_id or "").update_credentials(
            integration.integration_id or "", options
        )


__all__ = ["Run", "Services"]
