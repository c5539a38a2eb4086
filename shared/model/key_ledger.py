"""Which service-account keys this system made for an integration: the ``created-keys`` ledger.

An account may hold keys that other people or tools use: an adopted account always may,
and an account shared by two integrations holds the keys of both. So no key is deleted
for being "unknown" or "new". The rule is the other way round: a key is only ever cleaned
up by the integration whose record lists its id in ``created-keys``. The id is written
there right after IAM returns the key and *before* the key is stored as a version, so a
run that stops anywhere afterwards leaves a key its record owns, which the next run of
the same integration can find and delete if no version stores it.

Provisioning's first key and every rotation's new key go through
:func:`shared.workflows.stored_keys.create_key`, so there is one way keys are made,
recorded and stored. A crash between IAM creating the key
and the ledger write leaves a key no record claims; it is never deleted automatically
and counts toward the account's key limit, whose error message says how to find it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from shared.model.integrations import Annotation

#: IAM key ids are 40 hex digits; the stand-ins' are shorter. Anything else in the
#: annotation (it is editable by hand) is ignored rather than trusted.
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def created_keys(annotations: Mapping[str, str]) -> frozenset[str]:
    """The key ids the record says this system created (malformed entries are dropped)."""
    raw = annotations.get(Annotation.CREATED_KEYS, "")
    return frozenset(part for part in (p.strip() for p in raw.split(",")) if _KEY_ID.fullmatch(part))


def with_created_key(
    annotations: Mapping[str, str], key_id: str, live: Collection[str] | None = None
) -> dict[str, str]:
    """``annotations`` with ``key_id`` added to the ledger; ids no longer ``live`` are forgotten.

    Pruning by the account's current key list keeps the annotation small (an account has
    at most ten user-managed keys) without every deletion path having to edit it.
    """
    kept = created_keys(annotations)
    if live is not None:
        kept = kept & frozenset(live)
    return {**annotations, Annotation.CREATED_KEYS: ",".join(sorted(kept | {key_id}))}


def unstored(annotations: Mapping[str, str], live: Collection[str], stored: Collection[str]) -> list[str]:
    """Keys this record created that still exist and that no version stores: safe to delete."""
    return sorted((created_keys(annotations) & frozenset(live)) - frozenset(stored))
