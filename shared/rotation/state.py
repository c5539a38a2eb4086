"""What a managed secret says about its rotation: aliases, the lease, retired keys, due-ness.

The secret is the only database (DESIGN.md 3.1), so everything a resumed or concurrent
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
  the only keys it ever cleans up as orphans (:mod:`shared.key_ledger`).

Parsing is lenient on purpose: a hand-edited or garbled annotation must not wedge the
rotation forever. A bad lease reads as no lease (the etag still serialises writers); a
bad ``retired-keys`` entry is dropped (its key becomes an orphan, which the next run
deletes if it is ours).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared import json_text
from shared.integrations import Annotation

# The lease and its timestamps live in shared.lease (the platform tier takes leases too);
# they are re-exported here, where the rotation code has always found them.
from shared.lease import Lease as Lease
from shared.lease import parse_timestamp as parse_timestamp
from shared.lease import timestamp as timestamp
from shared.secrets import SecretRecord

CURRENT = "current"
PREVIOUS = "previous"
PENDING = "pending"
KEY_ALIASES = (CURRENT, PREVIOUS, PENDING)

#: Annotation keys this package adds to those of :class:`shared.integrations.Annotation`.
RETIRED_KEYS = "retired-keys"


@dataclass(frozen=True)
class RetiredKey:
    """A version no alias names any more, whose key waits out the grace period."""

    version: int
    key_id: str | None
    retired_at: datetime

    def expired(self, now: datetime, grace_seconds: float) -> bool:
        return now - self.retired_at >= timedelta(seconds=grace_seconds)


def retired_keys(annotations: Mapping[str, str]) -> dict[int, RetiredKey]:
    """The ``retired-keys`` annotation, version -> entry; malformed entries are dropped."""
    raw = annotations.get(RETIRED_KEYS)
    if not raw:
        return {}
    try:
        data = json_text.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    found: dict[int, RetiredKey] = {}
    for version_text, entry in data.items():
        if not str(version_text).isdigit() or not isinstance(entry, dict):
            continue
        retired_at = parse_timestamp(entry.get("retired_at"))
        key_id = entry.get("key_id")
        if retired_at is None:
            continue
        found[int(version_text)] = RetiredKey(
            int(version_text), key_id if isinstance(key_id, str) and key_id else None, retired_at
        )
    return found


def retired_annotation(entries: Mapping[int, RetiredKey]) -> str | None:
    """The annotation value for ``entries``; None means "remove the annotation"."""
    if not entries:
        return None
    return json.dumps(
        {str(v): {"key_id": e.key_id, "retired_at": timestamp(e.retired_at)} for v, e in sorted(entries.items())},
        separators=(",", ":"),
    )


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
