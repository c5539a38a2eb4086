"""When an integration's next rotation is due, from what its managed secret says about its rotation.

The secret is the only database (docs/external-apis.md §4.1), so everything a resumed or concurrent
run must know lives on it, and every change goes through one etag-guarded update:

- version aliases ``current``, ``previous`` and (during a rotation) ``pending``;
- annotation ``rotation-lease``: ``{"holder", "expires"}`` of the run that may write;
- annotation ``rotated-at``: when ``current`` last moved; with ``rotation-period`` it
  decides when the next rotation is due;
- annotation ``key-expires-at``: when the ``current`` key stops authenticating, under an
  organisation's key-expiry policy (docs/external-apis.md §3.3); written with ``rotated-at``
  from what IAM answered when it created the key, so the sweep, which reads annotations
  only, knows it. A rotation is due at the earlier of the period and the expiry less a
  safety margin (:func:`expiry_margin`);
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
from shared.model.record import PENDING, SecretRecord, parse_timestamp


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


#: The least notice a key's expiry gets by default: a day (the ``KEY_EXPIRY_MARGIN_SECONDS`` setting).
DEFAULT_EXPIRY_MARGIN_SECONDS = 86400.0
#: Long-lived keys get a tenth of their lifetime when that is more than the floor...
EXPIRY_MARGIN_SHARE = 0.1
#: ...and short-lived ones never more than half of it.
MAX_EXPIRY_MARGIN_SHARE = 0.5


def key_expires_at(annotations: Mapping[str, str]) -> datetime | None:
    """When the ``current`` key expires; None when it never does (or the annotation is unreadable)."""
    return parse_timestamp(annotations.get(Annotation.KEY_EXPIRES_AT))


def key_age_days(annotations: Mapping[str, str], now: datetime) -> float | None:
    """Days since ``current`` became current (``rotated-at``), to the thousandth; None when never
    rotated or unreadable. Status and the sweep's per-integration line report the same number."""
    rotated_at = parse_timestamp(annotations.get(Annotation.ROTATED_AT))
    return round((now - rotated_at).total_seconds() / 86400, 3) if rotated_at else None


def expiry_margin(lifetime: timedelta, floor_seconds: float = DEFAULT_EXPIRY_MARGIN_SECONDS) -> timedelta:
    """How long before it expires a key is replaced: ``floor_seconds``, or a tenth of the
    key's lifetime when that is longer, but never more than half the lifetime.

    The floor has to cover what stands between "due" and "replaced": the sweep's schedule
    (daily at worst), a run that fails for a transient reason and is redelivered, and an
    operator who reads a failed rotation's result and acts; a day covers a daily sweep and
    one retry. A tenth scales the notice with long lifetimes (9 days of a 90-day key). The
    cap at half keeps the shortest keys the policy allows (8 hours) in service for half
    their life: a margin as long as the lifetime would rotate on every sweep and pile up
    keys waiting out the grace period against the 10-key limit.
    """
    lifetime = max(lifetime, timedelta(0))
    margin = max(timedelta(seconds=floor_seconds), lifetime * EXPIRY_MARGIN_SHARE)
    return min(margin, lifetime * MAX_EXPIRY_MARGIN_SHARE)


def expiry_due_at(record: SecretRecord, margin_seconds: float = DEFAULT_EXPIRY_MARGIN_SECONDS) -> datetime | None:
    """When the ``current`` key's expiry makes a rotation due; None when the key never expires.

    The lifetime is measured from ``rotated-at``, which is written together with the expiry
    when the key becomes current (moments after IAM created it).
    """
    expires = key_expires_at(record.annotations)
    if expires is None:
        return None
    rotated_at = parse_timestamp(record.annotations.get(Annotation.ROTATED_AT)) or expires
    return expires - expiry_margin(expires - rotated_at, margin_seconds)


def due_at(
    record: SecretRecord, default_period_seconds: float, margin_seconds: float = DEFAULT_EXPIRY_MARGIN_SECONDS
) -> datetime | None:
    """When the next rotation is due: the period elapsed, or the key about to expire, whichever is
    first; None means now (never rotated, or ``rotated-at`` unreadable)."""
    rotated_at = parse_timestamp(record.annotations.get(Annotation.ROTATED_AT))
    if rotated_at is None:
        return None
    by_period = rotated_at + timedelta(seconds=rotation_period_seconds(record.annotations, default_period_seconds))
    by_expiry = expiry_due_at(record, margin_seconds)
    return by_period if by_expiry is None else min(by_period, by_expiry)


def due_by_expiry(
    record: SecretRecord, default_period_seconds: float, margin_seconds: float = DEFAULT_EXPIRY_MARGIN_SECONDS
) -> bool:
    """Whether the key's expiry, not the period, sets when the next rotation is due."""
    by_expiry = expiry_due_at(record, margin_seconds)
    return by_expiry is not None and by_expiry == due_at(record, default_period_seconds, margin_seconds)


def is_due(
    record: SecretRecord,
    now: datetime,
    default_period_seconds: float,
    margin_seconds: float = DEFAULT_EXPIRY_MARGIN_SECONDS,
) -> bool:
    """Whether a rotation should run now: due by time (period or key expiry), or one was
    interrupted (``pending`` exists)."""
    if PENDING in record.version_aliases:
        return True
    moment = due_at(record, default_period_seconds, margin_seconds)
    return moment is None or moment <= now
