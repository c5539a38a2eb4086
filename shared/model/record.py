"""The managed record: the secret's metadata, its version aliases, timestamps, retired keys, and how it is changed.

An integration's record is one Secret Manager secret (the system keeps no other database):
versions hold its keys, aliases say which is which, annotations hold everything else
(their keys are :class:`shared.model.integrations.Annotation`). Provisioning, rotation,
deprovision and status all read and write it, so what they must agree on is defined
here, once, in a module light enough for every function's cold start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.core import json_text
from shared.core.errors import Conflict
from shared.core.logs import log

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SecretRecord:
    """A secret's metadata (never its payload), as the Secret Manager adapter reads it."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    version_aliases: Mapping[str, int] = field(default_factory=dict)
    etag: str = ""
    topics: tuple[str, ...] = ()
    next_rotation_time: str | None = None
    rotation_period_seconds: int | None = None

    @property
    def secret_id(self) -> str:
        return self.name.rsplit("/", 1)[-1]


#: Version aliases: the key Dataloop holds, the one before it (kept through a grace
#: period), and a rotation's new key until it is proven.
CURRENT = "current"
PREVIOUS = "previous"
PENDING = "pending"
KEY_ALIASES = (CURRENT, PREVIOUS, PENDING)

#: ``{"VERSION": {"key_id", "retired_at"}}``: keys that stopped being ``previous`` and wait
#: out the grace period (their versions are disabled, so the id is kept here).
RETIRED_KEYS = "retired-keys"


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds: sortable, and what ``datetime.fromisoformat`` reads."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(text: Any) -> datetime | None:
    """An RFC 3339 moment (naive ones read as UTC), or None when absent or malformed."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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


# -- the one way the record is changed -------------------------------------------------------------

#: How many times a write is decided again after another writer changed the record first.
WRITE_ATTEMPTS = 5

#: Given the record as it is now, the fields to write (``labels``/``annotations``/
#: ``version_aliases``), or None when nothing needs writing.
Change = Callable[[SecretRecord], dict[str, Any] | None]


def update_record(
    secrets: Any,
    secret_id: str,
    change: Change,
    *,
    record: SecretRecord | None = None,
    attempts: int = WRITE_ATTEMPTS,
) -> SecretRecord:
    """Apply ``change`` to the record under its etag, deciding again on a fresh read whenever
    another writer got there first (so ``change`` must decide from the record it is given).

    Secret Manager's etag is the only lock there is: every writer of a record (provisioning,
    rotation, deprovision, the canary lock) goes through here. ``secrets`` is any of their
    stores: ``get_secret(id)`` and ``update_secret(id, etag=…, **fields)`` (each workflow's
    port declares the fields it writes, so no one protocol fits them all).

    Raises:
        Conflict: the record kept changing under us (transient: redelivery tries again).
    """
    for attempt in range(1, attempts + 1):
        if record is None:
            record = secrets.get_secret(secret_id)
        fields = change(record)
        if not fields:
            return record
        try:
            return secrets.update_secret(secret_id, etag=record.etag, **fields)
        except Conflict as exc:
            if exc.code != "etag-mismatch" or attempt == attempts:
                raise
            log(logger, logging.INFO, "secret changed concurrently; deciding again", secret_id=secret_id)
            record = None
    raise AssertionError("unreachable")  # pragma: no cover


def json_annotation(annotations: Mapping[str, str], key: str) -> dict[str, Any] | None:
    """A JSON-object annotation as a dict, None when absent, ``{"unreadable": True}`` when a
    hand edit left something that does not read as one (reported rather than trusted)."""
    raw = annotations.get(key)
    if not raw:
        return None
    try:
        value = json_text.loads(raw)
    except ValueError:
        return {"unreadable": True}
    return value if isinstance(value, dict) else {"unreadable": True}
