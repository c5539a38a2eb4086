"""The four steps of a rotation, in the order they run: create → test → set → finish.

Each step is a function of the run, and each first asks whether it is already done, so
the next delivery finishes a run that stopped anywhere (see the protocol in
:mod:`shared.workflows.rotation.workflow`). A step that finds the pending key can never
become current raises :class:`Rejected` instead of undoing anything itself: the rollback
is one procedure (:mod:`shared.workflows.rotation.rollback`), whichever step gave up.
"""

from __future__ import annotations

from datetime import datetime

from shared.core.errors import PermanentError, RegistryUnavailable, TransientError
from shared.model.integrations import Annotation
from shared.model.key_ledger import with_created_key
from shared.model.keys import USER_MANAGED_KEY_LIMIT, ServiceAccountKey
from shared.model.record import CURRENT, PENDING, PREVIOUS, RetiredKey, parse_timestamp, retired_keys, timestamp
from shared.workflows.rotation import cleanup, lease
from shared.workflows.rotation.run import Run
from shared.workflows.stored_keys import create_key

#: The test step stops this long before the lease expires, so no one can take over mid-write.
LEASE_MARGIN_SECONDS = 30.0
MIN_TEST_SECONDS = 1.0


class Rejected(Exception):
    """The pending key will never become current: roll it back, and fail the run for ``reason``."""

    def __init__(self, reason: str, code: str | None, key: ServiceAccountKey | None) -> None:
        super().__init__(reason)
        self.reason, self.code, self.key = reason, code, key


def create(run: Run) -> int:
    """Step 1: the pending version, made unless an earlier run left one; orphans and strays go first."""
    pending = run.aliases.get(PENDING)
    run.resumed = pending is not None
    with run.step("create") as step:
        if pending is not None:
            step.outcome = "resumed"
            step.note = f"version {pending} is pending from an earlier run"
            return pending
        found = cleanup.census(run)
        cleanup.delete_orphans(run, found)
        cleanup.disable_strays(run)
        if found.full:
            raise PermanentError(
                f"service account {run.account} has {found.remaining} user-managed keys; one more would bring it to "
                f"the limit of {USER_MANAGED_KEY_LIMIT}, so no key was created. {found.note}Delete keys this system "
                f"does not manage (gcloud iam service-accounts keys list --iam-account={run.account} --managed-by=user)",
                code="key-limit",
            )
        live = {k.key_id for k in found.keys} - set(run.orphans_deleted)

        def record_created(key_id: str) -> None:
            lease.write(run, lambda annotations, _: annotations.update(with_created_key(annotations, key_id, live)))

        services = run.services
        version, key = create_key(services.accounts, services.secrets, run.secret_id, run.account, record_created)
        run.keys[version] = key

        def alias_pending(annotations: dict[str, str], aliases: dict[str, int]) -> None:
            if PENDING in aliases:
                raise lease.LeaseLost(f"another run aliased version {aliases[PENDING]} pending meanwhile")
            aliases[PENDING] = version

        lease.write(run, alias_pending, aliases_changed=True)
        step.note = f"key {key.key_id} created as version {version}" + (
            f"; deleted orphan keys {', '.join(run.orphans_deleted)}" if run.orphans_deleted else ""
        )
        return version


def pending_key(run: Run, version: int) -> ServiceAccountKey:
    """The pending version's key, which must be a key of this integration's account."""
    try:
        key = run.key(version)
    except PermanentError as exc:
        raise Rejected(exc.reason, exc.code, None) from exc
    if key.client_email != run.account:
        raise Rejected(
            f"pending version {version} holds a key of {key.client_email}, not of {run.account}", "bad-key", None
        )
    run.new_key_id = key.key_id
    return key


def test(run: Run, key: ServiceAccountKey) -> None:
    """Step 2: the pending key must pull from the registry, through IAM propagation, before Dataloop sees it."""
    with run.step("test") as step:
        deadline = run.services.monotonic() + _test_budget(run)
        result = run.services.probe.prove(key, run.integration, deadline=deadline)
        step.note = f"{result.reason} ({result.attempts} tries)"
        run.challenge = result.challenge
        if not result.passed and result.unavailable:
            raise RegistryUnavailable(f"could not test the new key {key.key_id}: {result.reason}; it stays pending")
        if not result.passed:
            step.outcome = "failed"
            raise Rejected(
                f"the new key {key.key_id} never worked at the registry ({result.reason})", "key-never-worked", key
            )


def set_key(run: Run, key: ServiceAccountKey) -> None:
    """Step 3: give the pending key to the Dataloop integration; a refusal rejects it, an outage waits."""
    with run.step("set") as step:
        try:
            run.give_dataloop(key)
        except TransientError:
            step.note = "Dataloop unavailable; the new key stays pending and is set on redelivery"
            raise
        except PermanentError as exc:
            step.outcome, step.note = "failed", exc.reason
            raise Rejected(f"Dataloop refused the new key: {exc.reason}", exc.code, key) from exc
        step.note = f"Dataloop integration {run.integration.integration_id} holds key {key.key_id}"


def finish(run: Run, current_version: int, pending_version: int) -> None:
    """Step 4: promote the pending version in one guarded write, then delete what outlived its grace period."""
    with run.step("finish") as step:
        _promote(run, current_version, pending_version)
        cleanup.retire_expired(run)
        step.note = _finish_note(run)


def _pending_expiry(run: Run, pending_version: int) -> datetime | None:
    """When the pending key expires: as IAM answered its creation, or, when an earlier run
    created it (a resumed rotation), as IAM lists it.

    Recorded as ``key-expires-at`` when the key becomes current, so that the sweep, which reads
    annotations only, rotates it before an organisation's key-expiry policy ends it
    (docs/external-apis.md §3.3).
    """
    key = run.key(pending_version)
    if not run.resumed:
        return key.expires_at
    listed = {k.key_id: k for k in run.services.accounts.list_keys(run.account)}
    info = listed.get(key.key_id)
    return info.expires_at if info is not None else None


def _promote(run: Run, current_version: int, pending_version: int) -> None:
    expires = _pending_expiry(run, pending_version)
    now = run.services.clock()
    old_previous = run.aliases.get(PREVIOUS)
    retiring: RetiredKey | None = None
    if old_previous is not None and old_previous not in (current_version, pending_version):
        try:
            key_id: str | None = run.key(old_previous).key_id
        except PermanentError:
            key_id = None  # unreadable: its key, if ours, becomes an orphan for the next create
        # It stopped being current when the current one became current.
        stopped = parse_timestamp(run.record.annotations.get(Annotation.ROTATED_AT)) or now
        retiring = RetiredKey(old_previous, key_id, stopped)

    def promote(annotations: dict[str, str], aliases: dict[str, int]) -> None:
        if aliases.get(PENDING) != pending_version or aliases.get(CURRENT) != current_version:
            raise lease.LeaseLost("the aliases changed under this run's lease")
        aliases[PREVIOUS] = current_version
        aliases[CURRENT] = pending_version
        del aliases[PENDING]
        annotations[Annotation.ROTATED_AT] = timestamp(now)
        if expires is not None:
            annotations[Annotation.KEY_EXPIRES_AT] = timestamp(expires)
        else:
            annotations.pop(Annotation.KEY_EXPIRES_AT, None)
        if run.request_id:
            annotations[Annotation.ROTATED_FOR_REQUEST] = run.request_id[:256]
        else:
            annotations.pop(Annotation.ROTATED_FOR_REQUEST, None)
        if run.challenge:
            annotations[Annotation.REGISTRY_CHALLENGE] = run.challenge
        retired = retired_keys(annotations)
        if retiring is not None:
            retired[retiring.version] = retiring
        lease.set_retired(annotations, retired)

    lease.write(run, promote, aliases_changed=True)
    run.retired = retired_keys(run.record.annotations)


def _test_budget(run: Run) -> float:
    """Seconds the test step may take: its setting, and never past the lease (less a margin)."""
    budget = run.services.test_timeout_seconds
    left = lease.seconds_left(run)
    if left is not None:
        budget = min(budget, left - LEASE_MARGIN_SECONDS)
    return max(budget, MIN_TEST_SECONDS)


def _finish_note(run: Run) -> str:
    parts = [f"current is version {run.aliases.get(CURRENT)}, previous version {run.aliases.get(PREVIOUS)}"]
    if run.retired_deleted:
        parts.append(f"deleted retired keys {', '.join(run.retired_deleted)}")
    waiting = sorted(run.retired)
    if waiting:
        parts.append(f"versions {', '.join(map(str, waiting))} wait out the grace period")
    return "; ".join(parts)
