"""Undoing a pending key that will never become current.

The rule that wins is "the key Dataloop holds is valid at every instant", so a rollback
must never leave Dataloop holding a key it is about to delete. A fresh run knows Dataloop
was never given the pending key; a resumed one does not (an earlier run may have reached
*set*), so it gives Dataloop the current key back first, and keeps the pending key if
Dataloop refuses it.
"""

from __future__ import annotations

import contextlib

from shared.core.errors import PermanentError
from shared.model.keys import ServiceAccountKey
from shared.model.record import CURRENT, PENDING
from shared.workflows.rotation import lease
from shared.workflows.rotation.run import Run


def rollback(run: Run, version: int, key: ServiceAccountKey | None) -> str:
    """Roll back pending ``version`` (its key, when known) as step ``rollback``; what was done, for the report."""
    with run.step("rollback") as step:
        step.note = _undo(run, version, key, restore=run.resumed)
        if step.note.startswith("kept"):
            step.outcome = "failed"
    return step.note


def _undo(run: Run, version: int, key: ServiceAccountKey | None, *, restore: bool) -> str:
    if restore:
        current = run.key(run.aliases[CURRENT])
        try:
            run.give_dataloop(current)
        except PermanentError as exc:
            return (
                f"kept the pending version {version}: an earlier run may have given it to Dataloop, and "
                f"Dataloop refused the current key back ({exc.reason})"
            )

    def drop_pending(annotations: dict[str, str], aliases: dict[str, int]) -> None:
        if aliases.get(PENDING) == version:
            del aliases[PENDING]

    # Alias first: a crash after it leaves a stray version and an orphan key, which the
    # next create removes; the other order could leave `pending` naming a dead key.
    lease.write(run, drop_pending, aliases_changed=True)
    if key is not None and key.client_email == run.account:
        run.delete_key(key.key_id)
    with contextlib.suppress(PermanentError):
        run.services.secrets.set_version_state(run.secret_id, version, "disable")
    deleted = f"key {key.key_id} deleted" if key is not None else "its key left to the next orphan cleanup"
    return f"rolled back version {version}: {deleted}, version disabled, " + (
        "Dataloop given the current key again" if restore else "Dataloop was never touched"
    )
