"""The rotation's lease, and the guarded write every change of the secret goes through.

Two deliveries of one request, or a sweep and a manual rotation, may run at once in two
instances, and the secret is the only place they can meet (docs/external-apis.md §4.1,
§4.2). So a run takes the lease with the secret's etag before it changes anything, and
every later write re-checks, under the etag, that the lease is still this run's: a run
that overran its lease and was taken over stops at its next write instead of undoing the
newer run's work. The lease value is :class:`shared.model.lease.Lease`; the etag loop is
:func:`shared.model.record.update_record`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from shared.core import logs
from shared.core.errors import PermanentError, TransientError
from shared.model.integrations import Annotation
from shared.model.lease import Lease
from shared.model.record import (
    RETIRED_KEYS,
    RetiredKey,
    SecretRecord,
    retired_annotation,
    retired_keys,
    timestamp,
    update_record,
)
from shared.model.results import Outcome, Status
from shared.workflows.rotation.report import Refused, logger
from shared.workflows.rotation.run import Run

#: Changes ``annotations`` and ``aliases`` (copies of the record's) in place.
Mutation = Callable[[dict[str, str], dict[str, int]], None]


class LeaseLost(PermanentError):
    """Another run took the lease over (ours expired); stop writing at once."""

    code = "lease-lost"


class Busy(Refused):
    """Another run took the lease first: this one is ``skipped``."""

    def __init__(self, lease: Lease) -> None:
        super().__init__(
            Status.SKIPPED,
            f"rotation in progress: run {lease.holder} took the lease first (until {timestamp(lease.expires)})",
            "rotation-in-progress",
        )
        self.lease = lease


def take(run: Run) -> None:
    """Take the lease for ``run``, or take over an expired one; :class:`Busy` if another run's is live."""
    now = run.services.clock()
    lease = Lease(run.holder, now + timedelta(seconds=run.services.lease_seconds))

    def claim(annotations: dict[str, str], aliases: dict[str, int]) -> None:
        held = Lease.from_annotations(annotations)
        if held is not None and held.live(now) and held.holder != run.holder:
            raise Busy(held)
        annotations[Annotation.ROTATION_LEASE] = lease.to_annotation()

    write(run, claim, leased=False)
    run.retired = retired_keys(run.record.annotations)


def release(run: Run, result: Outcome | None = None) -> bool:
    """Drop the lease (and write retired-key changes); never raises: the lease expires anyway.

    With the run's ``result``, how it ended is recorded in the same write
    (``last-rotation``), so that ``status`` can report it without a write of its own; a run
    interrupted by a transient error has no result yet: its redelivery will.
    """
    retired = dict(run.retired)
    changed = run.retired_changed
    ended = (
        json.dumps(
            {"status": str(result.status), "code": result.code, "at": timestamp(run.services.clock())},
            separators=(",", ":"),
        )
        if result is not None
        else None
    )

    def drop(annotations: dict[str, str], aliases: dict[str, int]) -> None:
        annotations.pop(Annotation.ROTATION_LEASE, None)
        if ended is not None:
            annotations[Annotation.LAST_ROTATION] = ended
        if changed:
            fresh = retired_keys(annotations)
            set_retired(annotations, {v: e for v, e in fresh.items() if v in retired})

    try:
        write(run, drop)
    except LeaseLost:
        return True  # someone else's lease now: not ours to drop
    except (TransientError, PermanentError) as exc:
        logs.log(
            logger,
            logging.WARNING,
            f"could not release the rotation lease of {run.secret_id}; it expires by itself: {exc.reason}",
            secret_id=run.secret_id,
            holder=run.holder,
        )
        return False
    return True


def write(run: Run, mutate: Mutation, *, leased: bool = True, aliases_changed: bool = False) -> None:
    """Apply ``mutate`` to the secret under its etag, re-reading and re-applying on conflict.

    With ``leased``, every attempt first checks that this run still holds the lease.
    """

    def change(record: SecretRecord) -> dict[str, Any]:
        run.record = record
        annotations, aliases = dict(record.annotations), dict(record.version_aliases)
        if leased:
            held = Lease.from_annotations(annotations)
            if held is None or held.holder != run.holder:
                raise LeaseLost(
                    f"this run ({run.holder}) no longer holds the rotation lease of {run.secret_id}; "
                    f"{'run ' + held.holder + ' does' if held else 'no one does'}; stopped writing"
                )
        mutate(annotations, aliases)
        return {"annotations": annotations, "version_aliases": aliases if aliases_changed else None}

    run.record = update_record(run.services.secrets, run.secret_id, change, record=run.record)


def seconds_left(run: Run) -> float | None:
    """How long this run's lease has left, as the record last read says; None without a lease."""
    lease = Lease.from_annotations(run.record.annotations)
    return None if lease is None else (lease.expires - run.services.clock()).total_seconds()


def set_retired(annotations: dict[str, str], entries: dict[int, RetiredKey]) -> None:
    value = retired_annotation(entries)
    if value is None:
        annotations.pop(RETIRED_KEYS, None)
    else:
        annotations[RETIRED_KEYS] = value
