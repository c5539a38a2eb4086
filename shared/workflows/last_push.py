"""Recording each integration's push verdict in its record, only when it changed.

The decision is taken on the record the catalog listed (the integration carries it), so
a push whose verdict is the one recorded makes no call; a changed verdict is one
etag-guarded update. When another writer got there first (a concurrent push, a rotation),
the fresh record is read and the decision taken again
(:func:`shared.model.push_verdict.verdict_change`), so racing pushes never undo each
other and a lost race costs one read. Whatever is read or written replaces the catalog's
copy, so this instance's next push decides from it without a call.

Recording is bookkeeping beside the test, never part of its verdict: if Secret Manager
refuses or is unavailable, the push's outcome stands, a warning is logged, and the next
push that still disagrees with the record tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shared.core.errors import GarDataloopError
from shared.core.logs import log
from shared.model.integrations import ManagedIntegration
from shared.model.push_verdict import PushVerdict, verdict_change
from shared.model.record import SecretRecord, update_record
from shared.ports import IntegrationDirectory, PushSecrets

logger = logging.getLogger("dataloop_gar")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LastPush:
    """Keeps the ``last-push`` annotation of each integration a push tested."""

    def __init__(
        self,
        secrets: PushSecrets,
        directory: IntegrationDirectory,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._secrets = secrets
        self._directory = directory
        self._clock = clock

    def now(self) -> datetime:
        return self._clock()

    def note(self, integration: ManagedIntegration, verdict: PushVerdict) -> bool:
        """Record ``verdict`` unless the record already says it; whether a write was made."""
        record = integration.record
        if record is not None and verdict_change(record, verdict) is None:
            return False
        written = False

        def change(current: SecretRecord) -> dict[str, Any] | None:
            nonlocal written
            fields = verdict_change(current, verdict)
            written = fields is not None
            return fields

        try:
            fresh = update_record(self._secrets, integration.secret_id, change, record=record)
        except GarDataloopError as exc:
            log(
                logger,
                logging.WARNING,
                f"could not record the push verdict of {integration.name}; the next push tries again: {exc.reason}",
                secret_id=integration.secret_id,
            )
            return False
        self._directory.remember(fresh)
        if written:
            log(
                logger,
                logging.INFO,
                f"push verdict of {integration.name} is now "
                + ("passed" if verdict.passed else f"failed ({verdict.code})"),
                secret_id=integration.secret_id,
            )
        return written
