"""What a managed secret says about its rotation: aliases, the lease, retired keys, due-ness.

The secret is the only database (docs/external-apis.md §4.1), so everything a resumed or concurrent
run must know lives on it, and every change goes through one etag-guarded update:

- version aliases ``current``, ``previous`` and (during a rotation) ``pending``;
- annotation ``rotation-lease``: ``{"holder", "expires"}`` of the run that may write;
- annotation ``rotated-at``: when ``current`` last moved; with ``rotation-period`` it
  decides when the next rotation is due;
- annotation ``retired-keys``: versions that stopped being ``previous`` but whose key is
  kept until the grace period has passed, with their key id (so the key can be deleted
  even after the version is disabled and its payload can no longer be read) and the
  moment they stopped being ``current``;
- annotation ``created-keys``: the ids of the keys this system made for the integration,
  the only keys it ever cleans up as orphans (:mod:`shared.model.key_ledger`).

Parsing is lenient on purpose: a hand-edited or garbled annotation must not wedge the
rotation forever. A bad lease reads as no lease (the etag still serialises writers); a
bad ``retired-keys`` entry is dropped (its key becomes an orphan, which the next run
deletes if it is ours).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta

from shared.model.integrations import Annotation

# The lease lives in shared.model.lease (the platform tier takes leases too), the timestamps in
# shared.model.record; re-exported here, where the rotation code has always found them.
from shared.model.lease import Lease as Lease

# The record's aliases, timestamps and retired keys are defined in shared.model.record (every
# workflow reads them); re-exported here, where the rotation code finds them.
from shared.model.record import CURRENT as CURRENT
from shared.model.record import KEY_ALIASES as KEY_ALIASES
from shared.model.record import PENDING as PENDING
from shared.model.record import PREVIOUS as PREVIOUS
from shared.model.record import RETIRED_KEYS as RETIRED_KEYS
from shared.model.record import RetiredKey as RetiredKey
from shared.model.record import SecretRecord
from shared.model.record import parse_timestamp as parse_timestamp
from shared.model.record import retired_annotation as retired_annotation
from shared.model.record import retired_keys as retired_keys
from shared.model.record import timestamp as timestamp


def rotation_period_seconds(annotations: Mapping[str, str], default_seconds: float) -> float:
    """The integration's rotation period: its ``rotation-period`` annotation (seconds), else the default.

    An annotation that is not a positive number is ignored rather than trusted: a
    rotation period of zero would rotate on every sweep.
    """
    raw = annotations.get(Annotation.ROTATION_PERIOD, "").strip()
    try:
        value = float(raw)
    except ValueError:
        return default_seconds
    return value if math.isfinite(value) and value > 0 else default_seconds


def due_at(record: SecretRecord, default_period_seconds: float) -> datetime | None:
    """When the next rotation is due; None means now (never rotated, or ``rotated-at`` unreadable)."""
    rotated_at = parse_timestamp(record.annotations.get(Annotation.ROTATED_AT))
    if rotated_at is None:
        return None
    return rotated_at + timedelta(seconds=rotation_period_seconds(record.annotations, default_period_seconds))


def is_due(record: SecretRecord, now: datetime, default_period_seconds: float) -> bool:
    """Whether a rotation should run now: due by time, or one was interrupted (``pending`` exists)."""
    if PENDING in record.version_aliases:
        return True
    moment = due_at(record, default_period_seconds)
    return moment is None or moment <= now
