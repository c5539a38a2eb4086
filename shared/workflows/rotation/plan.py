"""The dry run: what a real run would do now, from reads only.

An operator asks for a dry run to decide whether to let the real one go ahead, so the plan
must not have rules of its own: it asks the same census and key-limit rule as the create
step (:class:`shared.workflows.rotation.cleanup.Census`) and the same probe target as the
test step, and only describes what the steps would do with them.
"""

from __future__ import annotations

from shared.core.errors import PermanentError
from shared.model.keys import USER_MANAGED_KEY_LIMIT
from shared.model.record import CURRENT, PENDING, PREVIOUS
from shared.model.results import Outcome, Status
from shared.workflows.key_probe import probe_target
from shared.workflows.rotation import cleanup
from shared.workflows.rotation.report import Refused, outcome
from shared.workflows.rotation.run import Run


def plan(run: Run) -> Outcome:
    """The ``skipped`` Outcome of a dry run, its steps in ``details["plan"]``; :class:`Refused` if it cannot tell."""
    try:
        steps, orphans = _plan(run)
    except PermanentError as exc:
        raise Refused(Status.FAILED, exc.reason, exc.code) from exc
    result = outcome(
        Status.SKIPPED,
        "dry run: " + "; ".join(steps),
        code="dry-run",
        subject=run.subject,
        rid=run.request_id,
    )
    result.details.update(dry_run=True, plan=steps, old_key_id=run.old_key_id, orphans=orphans)
    return result


def _plan(run: Run) -> tuple[list[str], list[str]]:
    services = run.services
    aliases = run.aliases
    current_key = run.key(aliases[CURRENT])
    run.old_key_id = current_key.key_id
    steps, orphans = _create(run)
    image, why = probe_target(run.integration)
    steps.append(f"test it at the registry with {why} {image}, for up to {services.test_timeout_seconds:g} s")
    steps.append(f"set it into Dataloop integration {run.integration.integration_id} of org {run.integration.org_id}")
    steps.append(f"finish: previous <- version {aliases[CURRENT]} (key {current_key.key_id}), current <- new key")
    now = services.clock()
    expiring = [e for e in run.retired.values() if e.expired(now, services.grace_period_seconds)]
    if PREVIOUS in aliases:
        steps.append(
            f"retire version {aliases[PREVIOUS]}; its key is deleted once {services.grace_period_seconds:g} s "
            "have passed since it stopped being current"
        )
    if expiring:
        steps.append(f"delete retired keys {', '.join(e.key_id or '?' for e in expiring)}")
    return steps, orphans


def _create(run: Run) -> tuple[list[str], list[str]]:
    """What the create step would do, and the orphan keys it would delete."""
    pending = run.aliases.get(PENDING)
    if pending is not None:
        return [f"resume: version {pending} is pending from an earlier run"], []
    steps: list[str] = []
    found = cleanup.census(run)
    orphans = [k.key_id for k in found.orphans]
    if orphans:
        steps.append(f"delete orphan keys {', '.join(orphans)}")
    if found.full:
        steps.append(f"fail: {found.remaining} keys, one more would reach the limit of {USER_MANAGED_KEY_LIMIT}")
    else:
        steps.append(f"create a key for {run.account} ({found.remaining} user-managed keys now) as a pending version")
    if found.note:
        steps.append(found.note.strip())
    return steps, orphans
