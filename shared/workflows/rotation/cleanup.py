"""What crashed runs and expired grace periods leave behind, and how it is removed.

A run may die between any two of its writes, and nothing tidies up after it. So every
create first clears what an interrupted create can leave (a key no secret stores, a
version no alias names), and every finish deletes the keys whose grace period is over. The account holds ten user-managed keys at most, so leftovers are not
harmless: without this a few crashes would block rotation for good.

Deleting is the one irreversible thing the rotation does, so what counts as an orphan is
narrow (:mod:`shared.model.key_ledger`): a key this system recorded making for this
integration that no alias or retired entry of *any* managed secret of the account stores.
Whenever that cannot be established (a payload unreadable, a sibling unreadable), nothing
is an orphan this time.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from shared.core import logs
from shared.core.errors import GarDataloopError, PermanentError
from shared.model import key_ledger
from shared.model.integrations import MANAGED_FILTER, Annotation
from shared.model.keys import USER_MANAGED_KEY_LIMIT, KeyInfo, ServiceAccountKey
from shared.model.record import KEY_ALIASES, SecretRecord, retired_keys
from shared.workflows.rotation.report import logger
from shared.workflows.rotation.run import Run
from shared.workflows.stored_keys import read_key


@dataclass(frozen=True)
class Census:
    """The account's user-managed keys, those that are orphans, and a note when the search was cut short."""

    keys: list[KeyInfo]
    orphans: list[KeyInfo]
    note: str = ""

    @property
    def remaining(self) -> int:
        """The keys the account keeps once the orphans are deleted."""
        return len(self.keys) - len(self.orphans)

    @property
    def full(self) -> bool:
        """Whether one more key would bring the account to its limit; then no key is created."""
        return self.remaining + 1 >= USER_MANAGED_KEY_LIMIT


def census(run: Run) -> Census:
    """Count the account's keys and find the orphans among them, from reads only.

    Conservative: when the key of an aliased version cannot be read, nothing counts as
    an orphan, since that key might be the unreadable one.
    """
    keys = list(run.services.accounts.list_keys(run.account))
    if not key_ledger.created_keys(run.record.annotations):
        return Census(keys, [])
    recorded = recorded_key_ids(run.record, run.key)
    if recorded is None:
        return Census(keys, [], "Orphan keys were not looked for: a version's key could not be read. ")
    candidates = set(key_ledger.unstored(run.record.annotations, [k.key_id for k in keys], recorded))
    if not candidates:
        return Census(keys, [])
    shared = _key_ids_of_other_secrets(run)
    if shared is None:
        return Census(keys, [], "Orphan keys were not deleted: another integration of the account could not be read. ")
    return Census(keys, [k for k in keys if k.key_id in candidates and k.key_id not in shared])


def delete_orphans(run: Run, found: Census) -> None:
    for orphan in found.orphans:
        run.delete_key(orphan.key_id)
        run.orphans_deleted.append(orphan.key_id)
    if found.orphans:
        logs.log(
            logger,
            logging.INFO,
            f"deleted {len(found.orphans)} orphan key(s) of {run.account}",
            secret_id=run.secret_id,
            key_ids=[k.key_id for k in found.orphans],
        )


def disable_strays(run: Run) -> None:
    """Disable enabled versions no alias names and no retired entry waits for (a crashed create)."""
    keep = set(run.aliases.values()) | set(run.retired)
    secrets = run.services.secrets
    for version, state in sorted(secrets.list_versions(run.secret_id).items()):
        if state == "ENABLED" and version not in keep:
            secrets.set_version_state(run.secret_id, version, "disable")
            run.strays_disabled.append(version)


def retire_expired(run: Run) -> None:
    """Delete the keys whose grace period is over and disable their versions.

    Best effort: the rotation itself is done, so a failure here is noted and the
    entry stays in ``retired-keys`` for the next run rather than failing the run.
    """
    now = run.services.clock()
    for version, entry in sorted(run.retired.items()):
        if version in run.aliases.values() or not entry.expired(now, run.services.grace_period_seconds):
            continue
        try:
            if entry.key_id:
                run.delete_key(entry.key_id)
                run.retired_deleted.append(entry.key_id)
            with contextlib.suppress(PermanentError):  # destroyed or gone: nothing left to disable
                run.services.secrets.set_version_state(run.secret_id, version, "disable")
        except GarDataloopError as exc:
            run.notes.append(f"retired version {version} kept for the next run: {exc.reason}")
            continue
        del run.retired[version]
        run.retired_changed = True


def recorded_key_ids(record: SecretRecord, read: Callable[[int], ServiceAccountKey]) -> set[str] | None:
    """Key ids a secret records (aliased versions and retired keys); None if one is unreadable."""
    found = {r.key_id for r in retired_keys(record.annotations).values() if r.key_id}
    for alias in KEY_ALIASES:
        version = record.version_aliases.get(alias)
        if version is None:
            continue
        try:
            key = read(version)
        except PermanentError:
            return None
        found.add(key.key_id)
    return found


def _key_ids_of_other_secrets(run: Run) -> set[str] | None:
    found: set[str] = set()
    secrets = run.services.secrets
    for record in secrets.list_secrets(MANAGED_FILTER):
        if record.secret_id == run.secret_id or record.annotations.get(Annotation.SERVICE_ACCOUNT) != run.account:
            continue
        ids = recorded_key_ids(record, functools.partial(read_key, secrets, record.secret_id))
        if ids is None:
            return None
        found |= ids
    return found
