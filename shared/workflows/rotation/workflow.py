"""Zero-downtime rotation of an integration's service-account key (docs/external-apis.md §8.1).

Modelled on the four resumable steps of AWS Secrets Manager's rotation functions and on
the crash-rollback of Vault's GCP secrets engine, with one deliberate deviation from
AWS's order (docs/external-apis.md §8.1): ours is **create → test → set → finish**, not create → set → test.
A new key does not work for 60 s or more while IAM propagates it, and the rule that wins
is "the key Dataloop holds is valid at every instant": so the key is proven at the
registry *before* Dataloop is given it, and a key that never works is rolled back without
Dataloop ever having seen it.

Each step first asks "is this step already done?", so a run that stopped anywhere (an
exception, a timeout, a killed instance) is finished by the next one:

1. **create** — skipped when alias ``pending`` exists. Otherwise: delete orphan keys
   (keys this record's ``created-keys`` ledger says this system made, that no alias or
   retired entry of this secret stores, and that no other managed secret of the same
   account stores; see :mod:`shared.model.key_ledger`), disable stray versions (enabled, unaliased, not waiting out a grace period),
   refuse clearly if one more key would bring the account to its 10-key limit, create the
   key, add it as a version, alias it ``pending``. A crash between creating the key and
   aliasing its version leaves an orphan and perhaps a stray version: the next run's
   create removes both.
2. **test** — the pending key must pull from the registry (:mod:`shared.workflows.rotation.probe`),
   retried with backoff through IAM propagation until a deadline. Never working → roll
   back: drop the alias, delete the key, disable the version; report ``failed``.
3. **set** — give the pending key to the Dataloop integration. Transient failure → raise,
   ``pending`` stays, the redelivery resumes here. Permanent refusal → roll back; Dataloop
   still holds the current key, which still works.
4. **finish** — in ONE etag-guarded update: ``previous ← current``, ``current ← pending``,
   ``pending`` dropped, ``rotated-at`` = now, and the old ``previous`` recorded in
   ``retired-keys``. Then every retired key whose grace period has passed (measured from
   when it stopped being ``current``) is deleted and its version disabled. So the account
   holds ``current`` and ``previous`` in steady state, three keys during a rotation.

Safety rules, enforced here: a lease (annotation ``rotation-lease``) taken with the
secret's etag admits one run at a time; a live lease of another run makes this run
``skipped``, an expired one is taken over; it is released at the end, on failure too.
Every later write re-checks that this run still holds the lease. The current key is
never deleted (checked before every deletion). A resumed run that must roll back gives
Dataloop the current key again first, since an earlier run may have reached *set*.

Transient errors raise, so Pub/Sub redelivers and the next run resumes; permanent ones
are reported as one ``rotation`` Outcome with each step's outcome and duration and the
old and new key *ids* (never key material).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.core import logs
from shared.core.errors import GarDataloopError, PermanentError, RegistryUnavailable, TransientError
from shared.model import key_ledger
from shared.model.dataloop import gar_options, registry_host_for
from shared.model.integrations import MANAGED_FILTER, MANAGED_LABEL, SECRET_PREFIX, Annotation, ManagedIntegration
from shared.model.key_ledger import with_created_key
from shared.model.keys import USER_MANAGED_KEY_LIMIT, KeyInfo, ServiceAccountKey
from shared.model.policy import AccessPolicy, NotAllowed
from shared.model.record import SecretRecord, update_record
from shared.model.results import Outcome, Status
from shared.ports import DataloopCredentials as DataloopPort
from shared.ports import KeyAccounts, SecretStore
from shared.workflows.rotation.probe import KeyProbe, probe_target
from shared.workflows.rotation.state import (
    CURRENT,
    KEY_ALIASES,
    PENDING,
    PREVIOUS,
    RETIRED_KEYS,
    Lease,
    RetiredKey,
    due_at,
    is_due,
    parse_timestamp,
    retired_annotation,
    retired_keys,
    timestamp,
)

logger = logging.getLogger(__name__)

KIND = "rotation"
#: The test step stops this long before the lease expires, so no one can take over mid-write.
LEASE_MARGIN_SECONDS = 30.0
MIN_TEST_SECONDS = 1.0

Mutation = Callable[[dict[str, str], dict[str, int]], None]


class LeaseLost(PermanentError):
    """Another run took the lease over (ours expired); stop writing at once."""

    code = "lease-lost"


class _Busy(Exception):
    def __init__(self, lease: Lease) -> None:
        super().__init__(lease.holder)
        self.lease = lease


@dataclass
class StepReport:
    """One step's outcome (``done``, ``resumed``, ``failed``, ``rolled-back``) and duration."""

    step: str
    outcome: str = "done"
    duration_ms: float = 0.0
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        report: dict[str, Any] = {"step": self.step, "outcome": self.outcome, "duration_ms": round(self.duration_ms, 1)}
        if self.note:
            report["note"] = self.note
        return report


@dataclass
class _Run:
    """What one rotation run knows; ``record`` is always the secret as last read or written."""

    record: SecretRecord
    integration: ManagedIntegration
    holder: str
    request_id: str | None
    started: float
    resumed: bool = False
    steps: list[StepReport] = field(default_factory=list)
    keys: dict[int, ServiceAccountKey] = field(default_factory=dict)  # version -> key, read this run
    old_key_id: str | None = None
    new_key_id: str | None = None
    orphans_deleted: list[str] = field(default_factory=list)
    strays_disabled: list[int] = field(default_factory=list)
    retired_deleted: list[str] = field(default_factory=list)
    retired: dict[int, RetiredKey] = field(default_factory=dict)
    retired_changed: bool = False
    notes: list[str] = field(default_factory=list)
    challenge: str | None = None  # the registry's, learnt by the test step; recorded at finish

    @property
    def secret_id(self) -> str:
        return self.record.secret_id

    @property
    def account(self) -> str:
        return self.integration.service_account or ""

    @property
    def aliases(self) -> dict[str, int]:
        return dict(self.record.version_aliases)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[StepReport]:
        report = StepReport(name)
        self.steps.append(report)
        began = time.perf_counter()
        try:
            yield report
        except BaseException as exc:
            if report.outcome == "done":
                report.outcome = "failed"
            report.note = report.note or getattr(exc, "reason", type(exc).__name__)
            raise
        finally:
            report.duration_ms = (time.perf_counter() - began) * 1000


def _utcnow() -> datetime:
    return datetime.now(UTC)


class KeyRotation:
    """Rotates one managed integration's key; see the module docstring for the protocol.

    Args:
        secrets / accounts: Secret Manager and IAM adapters (or fakes).
        dataloop: returns the Dataloop client; called only when a run reaches Dataloop, so a
            sweep, a skipped run or a dry run never needs Dataloop credentials.
        probe: the test step.
        grace_period_seconds: how long a key that stopped being ``current`` survives
            after it also stopped being ``previous``.
        test_timeout_seconds: bound on the test step (the function times out at 540 s).
        lease_seconds: how long a run may hold the lease.
        default_period_seconds: rotation period when the secret has no ``rotation-period``.
        dry_run: the default for runs that do not say.
    """

    def __init__(
        self,
        secrets: SecretStore,
        accounts: KeyAccounts,
        dataloop: Callable[[], DataloopPort],
        probe: KeyProbe,
        *,
        grace_period_seconds: float = 86400.0,
        test_timeout_seconds: float = 420.0,
        lease_seconds: float = 900.0,
        default_period_seconds: float = 30 * 86400.0,
        dry_run: bool = False,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        policy: AccessPolicy,
    ) -> None:
        """``policy``: the deployment's access policy; a record whose organisation or account
        falls outside it is never rotated (its annotations are editable by hand). Required, so
        that no way of building a rotation skips it."""
        self._policy = policy
        self._secrets = secrets
        self._accounts = accounts
        self._dataloop = dataloop
        self._probe = probe
        self.grace_period_seconds = grace_period_seconds
        self.test_timeout_seconds = test_timeout_seconds
        self.lease_seconds = lease_seconds
        self.default_period_seconds = default_period_seconds
        self.dry_run = dry_run
        self._clock = clock
        self._monotonic = monotonic

    # -- the one public entry ------------------------------------------------------------------
    def rotate(
        self, secret_id: str, *, force: bool = False, dry_run: bool = False, request_id: str | None = None
    ) -> Outcome:
        """Rotate (or resume rotating) the integration kept in secret ``secret_id``.

        ``secret_id`` may also be the integration's name: an argument that does not start
        with ``dataloop-gar-`` is a name, and its secret is ``dataloop-gar-`` + it (see
        ``_read``). Without ``force`` a run does nothing unless the
        rotation is due (``rotated-at`` + period has passed) or was interrupted.

        Returns one ``rotation`` Outcome: ``ok``, ``failed`` (permanent; the reason says
        what to fix), or ``skipped`` (not due, another run holds the lease, dry run).

        Raises:
            TransientError: a service was unavailable; the lease is released and a
                redelivery resumes where this run stopped.
        """
        started = time.perf_counter()
        try:
            record = self._read(secret_id)
        except PermanentError as exc:
            return self._outcome(
                Status.FAILED, exc.reason, code=exc.code, subject={"secret_id": secret_id}, rid=request_id
            )
        subject = {"secret_id": record.secret_id, "integration": record.secret_id.removeprefix(SECRET_PREFIX)}
        if record.labels.get(MANAGED_LABEL[0]) != MANAGED_LABEL[1]:
            return self._outcome(
                Status.FAILED,
                f"secret {record.secret_id} is not a managed integration (label {MANAGED_FILTER} missing)",
                code="not-managed",
                subject=subject,
                rid=request_id,
            )
        try:
            integration = ManagedIntegration.from_secret(record)
        except PermanentError as exc:
            return self._outcome(Status.FAILED, exc.reason, code=exc.code, subject=subject, rid=request_id)
        subject.update(integration=integration.name, service_account=integration.service_account or "")
        missing = self._missing_fields(record, integration)
        if missing:
            return self._outcome(
                Status.FAILED,
                f"managed secret {record.secret_id} cannot be rotated: it lacks {', '.join(missing)}; re-provision it",
                code="bad-integration",
                subject=subject,
                rid=request_id,
            )
        try:
            self._policy.check_record(
                org_id=integration.org_id, service_account=integration.service_account, secret_id=record.secret_id
            )
        except NotAllowed as exc:
            return self._outcome(
                Status.FAILED,
                f"{exc.reason}; not rotated (no key is made for, or sent to, what the access policy does not allow)",
                code=exc.code,
                subject=subject,
                rid=request_id,
            )
        try:
            self._probe.check_target(integration)
        except PermanentError as exc:
            return self._outcome(
                Status.FAILED, f"{exc.reason}; not rotated", code=exc.code, subject=subject, rid=request_id
            )

        now = self._clock()
        lease = Lease.from_annotations(record.annotations)
        if lease is not None and lease.live(now):
            return self._outcome(
                Status.SKIPPED,
                f"rotation in progress: run {lease.holder} holds the lease until {timestamp(lease.expires)}",
                code="rotation-in-progress",
                subject=subject,
                rid=request_id,
            )
        if (
            request_id
            and record.annotations.get(Annotation.ROTATED_FOR_REQUEST) == request_id
            and PENDING not in record.version_aliases
        ):
            return self._outcome(
                Status.SKIPPED,
                f"request {request_id} already rotated {record.secret_id} (at "
                f"{record.annotations.get(Annotation.ROTATED_AT, 'an unrecorded time')}): a redelivery, not rotated again",
                code="already-rotated",
                subject=subject,
                rid=request_id,
            )
        if not force and not is_due(record, now, self.default_period_seconds):
            when = due_at(record, self.default_period_seconds)
            return self._outcome(
                Status.SKIPPED,
                f"not due: next rotation at {timestamp(when) if when else 'now'} (force to rotate anyway)",
                code="not-due",
                subject=subject,
                rid=request_id,
            )

        run = _Run(record, integration, f"rot-{uuid.uuid4().hex[:16]}", request_id, started)
        run.retired = retired_keys(record.annotations)
        if dry_run or self.dry_run:
            try:
                return self._plan(run, subject)
            except PermanentError as exc:
                return self._outcome(Status.FAILED, exc.reason, code=exc.code, subject=subject, rid=request_id)

        try:
            self._take_lease(run)
        except _Busy as busy:
            return self._outcome(
                Status.SKIPPED,
                f"rotation in progress: run {busy.lease.holder} took the lease first "
                f"(until {timestamp(busy.lease.expires)})",
                code="rotation-in-progress",
                subject=subject,
                rid=request_id,
            )

        try:
            try:
                outcome = self._rotate(run, subject)
            except PermanentError as exc:
                outcome = self._report(run, subject, Status.FAILED, exc.reason, code=exc.code)
        finally:
            released = self._release(run)
        if not released:
            outcome.details["lease"] = "not released; it expires by itself"
        return outcome

    # -- the steps ----------------------------------------------------------------------------
    def _rotate(self, run: _Run, subject: dict[str, Any]) -> Outcome:
        aliases = run.aliases
        current_version = aliases[CURRENT]
        current_key = self._key(run, current_version)
        run.old_key_id = current_key.key_id
        pending_version = aliases.get(PENDING)
        run.resumed = pending_version is not None

        with run.step("create") as step:
            if pending_version is not None:
                step.outcome = "resumed"
                step.note = f"version {pending_version} is pending from an earlier run"
            else:
                pending_version = self._create(run, step)
        try:
            pending_key = self._key(run, pending_version)
            if pending_key.client_email != run.account:
                raise PermanentError(
                    f"pending version {pending_version} holds a key of {pending_key.client_email}, not of {run.account}",
                    code="bad-key",
                )
        except PermanentError as exc:
            done = self._rollback_step(run, pending_version, None)
            return self._report(run, subject, Status.FAILED, f"{exc.reason}; {done}", code=exc.code)
        run.new_key_id = pending_key.key_id

        with run.step("test") as step:
            deadline = self._monotonic() + self._test_budget(run)
            result = self._probe.prove(pending_key, run.integration, deadline=deadline)
            step.note = f"{result.reason} ({result.attempts} tries)"
            run.challenge = result.challenge
            if not result.passed and result.unavailable:
                raise RegistryUnavailable(
                    f"could not test the new key {pending_key.key_id}: {result.reason}; it stays pending"
                )
            if not result.passed:
                step.outcome = "failed"
        if not result.passed:
            done = self._rollback_step(run, pending_version, pending_key)
            return self._report(
                run,
                subject,
                Status.FAILED,
                f"the new key {pending_key.key_id} never worked at the registry ({result.reason}); {done}",
                code="key-never-worked",
            )

        refused: PermanentError | None = None
        with run.step("set") as step:
            integration = run.integration
            try:
                self._give_dataloop(run, pending_key)
            except TransientError:
                step.note = "Dataloop unavailable; the new key stays pending and is set on redelivery"
                raise
            except PermanentError as exc:
                step.outcome, step.note, refused = "failed", exc.reason, exc
            else:
                step.note = f"Dataloop integration {integration.integration_id} holds key {pending_key.key_id}"
        if refused is not None:
            done = self._rollback_step(run, pending_version, pending_key)
            return self._report(
                run,
                subject,
                Status.FAILED,
                f"Dataloop refused the new key: {refused.reason}; {done}",
                code=refused.code,
            )

        with run.step("finish") as step:
            self._finish(run, current_version, pending_version)
            self._retire_expired(run)
            step.note = self._finish_note(run)
        return self._report(
            run,
            subject,
            Status.OK,
            f"rotated {run.integration.name}: key {current_key.key_id} -> {pending_key.key_id}"
            + (" (resumed an interrupted rotation)" if run.resumed else ""),
        )

    def _give_dataloop(self, run: _Run, key: ServiceAccountKey) -> None:
        """Put ``key`` into the Dataloop integration (a PATCH of the whole options: idempotent)."""
        integration = run.integration
        options = gar_options(key.json_text, integration.registry_host)
        self._dataloop().integrations(integration.org_id or "").update_credentials(
            integration.integration_id or "", options
        )

    def _rollback_step(self, run: _Run, version: int, key: ServiceAccountKey | None) -> str:
        with run.step("rollback") as step:
            step.note = self._rollback(run, version, key, restore=run.resumed)
            if step.note.startswith("kept"):
                step.outcome = "failed"
        return step.note

    def _create(self, run: _Run, step: StepReport) -> int:
        keys, orphans, note = self._orphans(run)
        for orphan in orphans:
            self._delete_key(run, orphan.key_id)
            run.orphans_deleted.append(orphan.key_id)
        if orphans:
            logs.log(
                logger,
                logging.INFO,
                f"deleted {len(orphans)} orphan key(s) of {run.account}",
                secret_id=run.secret_id,
                key_ids=[k.key_id for k in orphans],
            )
        self._disable_strays(run)
        remaining = len(keys) - len(orphans)
        if remaining + 1 >= USER_MANAGED_KEY_LIMIT:
            raise PermanentError(
                f"service account {run.account} has {remaining} user-managed keys; one more would bring it to "
                f"the limit of {USER_MANAGED_KEY_LIMIT}, so no key was created. {note}Delete keys this system does "
                f"not manage (gcloud iam service-accounts keys list --iam-account={run.account} --managed-by=user)",
                code="key-limit",
            )
        live = {k.key_id for k in keys} - set(run.orphans_deleted)

        def record_created(key_id: str) -> None:
            self._write(run, lambda annotations, _: annotations.update(with_created_key(annotations, key_id, live)))

        version, key = key_ledger.create_key(self._accounts, self._secrets, run.secret_id, run.account, record_created)
        run.keys[version] = key

        def alias_pending(annotations: dict[str, str], aliases: dict[str, int]) -> None:
            if PENDING in aliases:
                raise LeaseLost(f"another run aliased version {aliases[PENDING]} pending meanwhile")
            aliases[PENDING] = version

        self._write(run, alias_pending, aliases_changed=True)
        step.note = f"key {key.key_id} created as version {version}" + (
            f"; deleted orphan keys {', '.join(run.orphans_deleted)}" if run.orphans_deleted else ""
        )
        return version

    def _orphans(self, run: _Run) -> tuple[list[KeyInfo], list[KeyInfo], str]:
        """The account's keys, those that are orphans, and a note when the search was cut short.

        Conservative: when the key of an aliased version cannot be read, nothing counts as
        an orphan, since that key might be the unreadable one.
        """
        keys = list(self._accounts.list_keys(run.account))
        if not key_ledger.created_keys(run.record.annotations):
            return keys, [], ""
        recorded = self._recorded_key_ids(run.record, run)
        if recorded is None:
            return keys, [], "Orphan keys were not looked for: a version's key could not be read. "
        candidates = set(key_ledger.unstored(run.record.annotations, [k.key_id for k in keys], recorded))
        if not candidates:
            return keys, [], ""
        shared = self._key_ids_of_other_secrets(run)
        if shared is None:
            return keys, [], "Orphan keys were not deleted: another integration of the account could not be read. "
        return keys, [k for k in keys if k.key_id in candidates and k.key_id not in shared], ""

    def _recorded_key_ids(self, record: SecretRecord, run: _Run | None = None) -> set[str] | None:
        """Key ids a secret records (aliased versions and retired keys); None if one is unreadable."""
        found = {r.key_id for r in retired_keys(record.annotations).values() if r.key_id}
        for alias in KEY_ALIASES:
            version = record.version_aliases.get(alias)
            if version is None:
                continue
            try:
                key = self._key(run, version) if run is not None else self._read_key(record.secret_id, version)
            except PermanentError:
                return None
            found.add(key.key_id)
        return found

    def _key_ids_of_other_secrets(self, run: _Run) -> set[str] | None:
        found: set[str] = set()
        for record in self._secrets.list_secrets(MANAGED_FILTER):
            if record.secret_id == run.secret_id or record.annotations.get(Annotation.SERVICE_ACCOUNT) != run.account:
                continue
            ids = self._recorded_key_ids(record)
            if ids is None:
                return None
            found |= ids
        return found

    def _disable_strays(self, run: _Run) -> None:
        """Disable enabled versions no alias names and no retired entry waits for (a crashed create)."""
        keep = set(run.aliases.values()) | set(run.retired)
        for version, state in sorted(self._secrets.list_versions(run.secret_id).items()):
            if state == "ENABLED" and version not in keep:
                self._secrets.set_version_state(run.secret_id, version, "disable")
                run.strays_disabled.append(version)

    def _finish(self, run: _Run, current_version: int, pending_version: int) -> None:
        now = self._clock()
        old_previous = run.aliases.get(PREVIOUS)
        retiring: RetiredKey | None = None
        if old_previous is not None and old_previous not in (current_version, pending_version):
            try:
                key_id: str | None = self._key(run, old_previous).key_id
            except PermanentError:
                key_id = None  # unreadable: its key, if ours, becomes an orphan for the next create
            # It stopped being current when the current one became current.
            stopped = parse_timestamp(run.record.annotations.get(Annotation.ROTATED_AT)) or now
            retiring = RetiredKey(old_previous, key_id, stopped)

        def promote(annotations: dict[str, str], aliases: dict[str, int]) -> None:
            if aliases.get(PENDING) != pending_version or aliases.get(CURRENT) != current_version:
                raise LeaseLost("the aliases changed under this run's lease")
            aliases[PREVIOUS] = current_version
            aliases[CURRENT] = pending_version
            del aliases[PENDING]
            annotations[Annotation.ROTATED_AT] = timestamp(now)
            if run.request_id:
                annotations[Annotation.ROTATED_FOR_REQUEST] = run.request_id[:256]
            else:
                annotations.pop(Annotation.ROTATED_FOR_REQUEST, None)
            if run.challenge:
                annotations[Annotation.REGISTRY_CHALLENGE] = run.challenge
            retired = retired_keys(annotations)
            if retiring is not None:
                retired[retiring.version] = retiring
            _set_retired(annotations, retired)

        self._write(run, promote, aliases_changed=True)
        run.retired = retired_keys(run.record.annotations)

    def _retire_expired(self, run: _Run) -> None:
        """Delete the keys whose grace period is over and disable their versions.

        Best effort: the rotation itself is done, so a failure here is noted and the
        entry stays in ``retired-keys`` for the next run rather than failing the run.
        """
        now = self._clock()
        for version, entry in sorted(run.retired.items()):
            if version in run.aliases.values() or not entry.expired(now, self.grace_period_seconds):
                continue
            try:
                if entry.key_id:
                    self._delete_key(run, entry.key_id)
                    run.retired_deleted.append(entry.key_id)
                with contextlib.suppress(PermanentError):  # destroyed or gone: nothing left to disable
                    self._secrets.set_version_state(run.secret_id, version, "disable")
            except GarDataloopError as exc:
                run.notes.append(f"retired version {version} kept for the next run: {exc.reason}")
                continue
            del run.retired[version]
            run.retired_changed = True

    def _rollback(self, run: _Run, version: int, key: ServiceAccountKey | None, *, restore: bool) -> str:
        """Undo a pending key; returns what was done, for the report.

        When an earlier run may have reached *set* (this run resumed), Dataloop gets the
        current key back first; if that is refused, the pending key is kept, because
        Dataloop may be holding it.
        """
        if restore:
            current = self._key(run, run.aliases[CURRENT])
            try:
                self._give_dataloop(run, current)
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
        self._write(run, drop_pending, aliases_changed=True)
        if key is not None and key.client_email == run.account:
            self._delete_key(run, key.key_id)
        with contextlib.suppress(PermanentError):
            self._secrets.set_version_state(run.secret_id, version, "disable")
        deleted = f"key {key.key_id} deleted" if key is not None else "its key left to the next orphan cleanup"
        return f"rolled back version {version}: {deleted}, version disabled, " + (
            "Dataloop given the current key again" if restore else "Dataloop was never touched"
        )

    # -- lease and writes -------------------------------------------------------------------
    def _take_lease(self, run: _Run) -> None:
        now = self._clock()
        lease = Lease(run.holder, now + timedelta(seconds=self.lease_seconds))

        def take(annotations: dict[str, str], aliases: dict[str, int]) -> None:
            held = Lease.from_annotations(annotations)
            if held is not None and held.live(now) and held.holder != run.holder:
                raise _Busy(held)
            annotations[Annotation.ROTATION_LEASE] = lease.to_annotation()

        self._write(run, take, leased=False)
        run.retired = retired_keys(run.record.annotations)

    def _release(self, run: _Run) -> bool:
        """Drop the lease (and write retired-key changes); never raises: the lease expires anyway."""
        retired = dict(run.retired)
        changed = run.retired_changed

        def release(annotations: dict[str, str], aliases: dict[str, int]) -> None:
            annotations.pop(Annotation.ROTATION_LEASE, None)
            if changed:
                fresh = retired_keys(annotations)
                _set_retired(annotations, {v: e for v, e in fresh.items() if v in retired})

        try:
            self._write(run, release)
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

    def _write(self, run: _Run, mutate: Mutation, *, leased: bool = True, aliases_changed: bool = False) -> None:
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

        run.record = update_record(self._secrets, run.secret_id, change, record=run.record)

    # -- helpers ------------------------------------------------------------------------------
    def _read(self, secret_id: str) -> SecretRecord:
        """The secret ``secret_id`` names: itself if it starts with ``dataloop-gar-``, else ``dataloop-gar-`` + it.

        One read, never a guess: the deployment grants Secret Manager only on secrets named
        ``dataloop-gar-*``, and Google answers a read of any other name PERMISSION_DENIED,
        not NOT_FOUND, so trying the bare name first would fail every rotation by name.
        The rule is unambiguous because it looks at the argument only: a name that itself
        starts with the prefix (the request schema allows ``dataloop-gar-x``) is reached by
        its full id (``dataloop-gar-dataloop-gar-x``), never by the name alone.
        """
        return self._secrets.get_secret(secret_id if secret_id.startswith(SECRET_PREFIX) else SECRET_PREFIX + secret_id)

    def _key(self, run: _Run, version: int) -> ServiceAccountKey:
        """A version's key, read once per run."""
        if version not in run.keys:
            run.keys[version] = self._read_key(run.secret_id, version)
        return run.keys[version]

    def _read_key(self, secret_id: str, version: int) -> ServiceAccountKey:
        number, payload = self._secrets.access(secret_id, version)
        return ServiceAccountKey.from_json(payload, source=f"secret {secret_id} version {number}")

    def _delete_key(self, run: _Run, key_id: str) -> None:
        """Delete one key of the run's account, after checking that no alias names it.

        The check runs before *every* deletion, whatever the caller believes: the key
        ``current`` names must be known to this run and differ from ``key_id``, and so must
        the keys of ``previous`` and ``pending`` where this run has read them.
        """
        aliased = [v for a in KEY_ALIASES if (v := run.aliases.get(a)) is not None]
        current = run.aliases.get(CURRENT)
        protected = {run.keys[v].key_id for v in aliased if v in run.keys}
        if current not in run.keys or key_id in protected:
            raise PermanentError(
                f"refusing to delete key {key_id} of {run.account}: an alias of {run.secret_id} names it, or the "
                "current key is not known to this run (a bug; nothing was deleted)",
                code="refused-aliased-key",
            )
        self._accounts.delete_key(run.account, key_id)

    def _test_budget(self, run: _Run) -> float:
        """Seconds the test step may take: its setting, and never past the lease (less a margin)."""
        lease = Lease.from_annotations(run.record.annotations)
        budget = self.test_timeout_seconds
        if lease is not None:
            left = (lease.expires - self._clock()).total_seconds() - LEASE_MARGIN_SECONDS
            budget = min(budget, left)
        return max(budget, MIN_TEST_SECONDS)

    @staticmethod
    def _missing_fields(record: SecretRecord, integration: ManagedIntegration) -> list[str]:
        missing = []
        if not integration.service_account:
            missing.append(f"annotation {Annotation.SERVICE_ACCOUNT!r}")
        if not integration.org_id:
            missing.append(f"annotation {Annotation.ORG!r}")
        if not integration.integration_id:
            missing.append(f"annotation {Annotation.INTEGRATION_ID!r}")
        if CURRENT not in record.version_aliases:
            missing.append("a version aliased 'current'")
        try:
            registry_host_for(integration.registry_host)
        except ValueError as exc:
            missing.append(f"a valid {Annotation.REGISTRY_HOST!r} annotation ({exc})")
        return missing

    def _finish_note(self, run: _Run) -> str:
        parts = [f"current is version {run.aliases.get(CURRENT)}, previous version {run.aliases.get(PREVIOUS)}"]
        if run.retired_deleted:
            parts.append(f"deleted retired keys {', '.join(run.retired_deleted)}")
        waiting = sorted(run.retired)
        if waiting:
            parts.append(f"versions {', '.join(map(str, waiting))} wait out the grace period")
        return "; ".join(parts)

    def _plan(self, run: _Run, subject: dict[str, Any]) -> Outcome:
        """A dry run: what a real run would do now, from reads only."""
        aliases = run.aliases
        current_key = self._key(run, aliases[CURRENT])
        run.old_key_id = current_key.key_id
        plan: list[str] = []
        orphans: list[str] = []
        pending = aliases.get(PENDING)
        if pending is not None:
            plan.append(f"resume: version {pending} is pending from an earlier run")
        else:
            keys, found, note = self._orphans(run)
            orphans = [k.key_id for k in found]
            if orphans:
                plan.append(f"delete orphan keys {', '.join(orphans)}")
            remaining = len(keys) - len(found)
            if remaining + 1 >= USER_MANAGED_KEY_LIMIT:
                plan.append(f"fail: {remaining} keys, one more would reach the limit of {USER_MANAGED_KEY_LIMIT}")
            else:
                plan.append(f"create a key for {run.account} ({remaining} user-managed keys now) as a pending version")
            if note:
                plan.append(note.strip())
        image, why = probe_target(run.integration)
        plan.append(f"test it at the registry with {why} {image}, for up to {self.test_timeout_seconds:g} s")
        plan.append(
            f"set it into Dataloop integration {run.integration.integration_id} of org {run.integration.org_id}"
        )
        plan.append(f"finish: previous <- version {aliases[CURRENT]} (key {current_key.key_id}), current <- new key")
        now = self._clock()
        expiring = [e for e in run.retired.values() if e.expired(now, self.grace_period_seconds)]
        if PREVIOUS in aliases:
            plan.append(
                f"retire version {aliases[PREVIOUS]}; its key is deleted once {self.grace_period_seconds:g} s "
                "have passed since it stopped being current"
            )
        if expiring:
            plan.append(f"delete retired keys {', '.join(e.key_id or '?' for e in expiring)}")
        outcome = self._outcome(
            Status.SKIPPED,
            "dry run: " + "; ".join(plan),
            code="dry-run",
            subject=subject,
            rid=run.request_id,
        )
        outcome.details.update(dry_run=True, plan=plan, old_key_id=run.old_key_id, orphans=orphans)
        return outcome

    def _report(
        self, run: _Run, subject: dict[str, Any], status: Status, reason: str, code: str | None = None
    ) -> Outcome:
        outcome = self._outcome(status, reason, code=code, subject=subject, rid=run.request_id)
        outcome.details.update(
            old_key_id=run.old_key_id,
            new_key_id=run.new_key_id,
            resumed=run.resumed,
            holder=run.holder,
            steps=[s.to_json() for s in run.steps],
        )
        if run.notes:
            outcome.details["notes"] = list(run.notes)
        for name, ids in (
            ("orphan_keys_deleted", run.orphans_deleted),
            ("retired_keys_deleted", run.retired_deleted),
            ("stray_versions_disabled", run.strays_disabled),
        ):
            if ids:
                outcome.details[name] = list(ids)
        outcome.durations_ms.update({s.step: s.duration_ms for s in run.steps})
        outcome.durations_ms["total"] = (time.perf_counter() - run.started) * 1000
        return outcome

    @staticmethod
    def _outcome(status: Status, reason: str, *, code: str | None, subject: dict[str, Any], rid: str | None) -> Outcome:
        return Outcome(KIND, status, reason, code=code, subject=dict(subject), request_id=rid)


def _set_retired(annotations: dict[str, str], entries: dict[int, RetiredKey]) -> None:
    value = retired_annotation(entries)
    if value is None:
        annotations.pop(RETIRED_KEYS, None)
    else:
        annotations[RETIRED_KEYS] = value


__all__ = ["KIND", "KeyRotation", "LeaseLost", "StepReport"]
