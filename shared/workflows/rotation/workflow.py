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

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from shared.core.errors import PermanentError
from shared.model.dataloop import registry_host_for
from shared.model.integrations import MANAGED_FILTER, MANAGED_LABEL, SECRET_PREFIX, Annotation, ManagedIntegration
from shared.model.keys import USER_MANAGED_KEY_LIMIT
from shared.model.policy import AccessPolicy, NotAllowed
from shared.model.record import SecretRecord
from shared.model.results import Outcome, Status
from shared.workflows.rotation import cleanup, lease, steps
from shared.workflows.rotation.ports import DataloopPort, KeyAccounts, SecretStore
from shared.workflows.rotation.probe import KeyProbe, probe_target
from shared.workflows.rotation.report import outcome, report
from shared.workflows.rotation.rollback import rollback
from shared.workflows.rotation.run import Run, Services
from shared.workflows.rotation.state import (
    CURRENT,
    PENDING,
    PREVIOUS,
    Lease,
    due_at,
    is_due,
    retired_keys,
    timestamp,
)


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
            return outcome(Status.FAILED, exc.reason, code=exc.code, subject={"secret_id": secret_id}, rid=request_id)
        subject = {"secret_id": record.secret_id, "integration": record.secret_id.removeprefix(SECRET_PREFIX)}
        if record.labels.get(MANAGED_LABEL[0]) != MANAGED_LABEL[1]:
            return outcome(
                Status.FAILED,
                f"secret {record.secret_id} is not a managed integration (label {MANAGED_FILTER} missing)",
                code="not-managed",
                subject=subject,
                rid=request_id,
            )
        try:
            integration = ManagedIntegration.from_secret(record)
        except PermanentError as exc:
            return outcome(Status.FAILED, exc.reason, code=exc.code, subject=subject, rid=request_id)
        subject.update(integration=integration.name, service_account=integration.service_account or "")
        missing = self._missing_fields(record, integration)
        if missing:
            return outcome(
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
            return outcome(
                Status.FAILED,
                f"{exc.reason}; not rotated (no key is made for, or sent to, what the access policy does not allow)",
                code=exc.code,
                subject=subject,
                rid=request_id,
            )
        try:
            self._probe.check_target(integration)
        except PermanentError as exc:
            return outcome(Status.FAILED, f"{exc.reason}; not rotated", code=exc.code, subject=subject, rid=request_id)

        now = self._clock()
        held = Lease.from_annotations(record.annotations)
        if held is not None and held.live(now):
            return outcome(
                Status.SKIPPED,
                f"rotation in progress: run {held.holder} holds the lease until {timestamp(held.expires)}",
                code="rotation-in-progress",
                subject=subject,
                rid=request_id,
            )
        if (
            request_id
            and record.annotations.get(Annotation.ROTATED_FOR_REQUEST) == request_id
            and PENDING not in record.version_aliases
        ):
            return outcome(
                Status.SKIPPED,
                f"request {request_id} already rotated {record.secret_id} (at "
                f"{record.annotations.get(Annotation.ROTATED_AT, 'an unrecorded time')}): a redelivery, not rotated again",
                code="already-rotated",
                subject=subject,
                rid=request_id,
            )
        if not force and not is_due(record, now, self.default_period_seconds):
            when = due_at(record, self.default_period_seconds)
            return outcome(
                Status.SKIPPED,
                f"not due: next rotation at {timestamp(when) if when else 'now'} (force to rotate anyway)",
                code="not-due",
                subject=subject,
                rid=request_id,
            )

        services = Services(
            self._secrets,
            self._accounts,
            self._dataloop,
            self._probe,
            self._clock,
            self._monotonic,
            self.grace_period_seconds,
            self.test_timeout_seconds,
            self.lease_seconds,
        )
        run = Run(services, record, integration, f"rot-{uuid.uuid4().hex[:16]}", request_id, started, subject)
        run.retired = retired_keys(record.annotations)
        if dry_run or self.dry_run:
            try:
                return self._plan(run)
            except PermanentError as exc:
                return outcome(Status.FAILED, exc.reason, code=exc.code, subject=subject, rid=request_id)

        try:
            lease.take(run)
        except lease.Busy as busy:
            return outcome(
                Status.SKIPPED,
                f"rotation in progress: run {busy.lease.holder} took the lease first "
                f"(until {timestamp(busy.lease.expires)})",
                code="rotation-in-progress",
                subject=subject,
                rid=request_id,
            )

        try:
            try:
                result = self._rotate(run)
            except PermanentError as exc:
                result = report(run, Status.FAILED, exc.reason, code=exc.code)
        finally:
            released = lease.release(run)
        if not released:
            result.details["lease"] = "not released; it expires by itself"
        return result

    # -- the steps ----------------------------------------------------------------------------
    def _rotate(self, run: Run) -> Outcome:
        current_version = run.aliases[CURRENT]
        run.old_key_id = run.key(current_version).key_id
        pending_version = steps.create(run)
        try:
            pending_key = steps.pending_key(run, pending_version)
            steps.test(run, pending_key)
            steps.set_key(run, pending_key)
        except steps.Rejected as rejected:
            done = rollback(run, pending_version, rejected.key)
            return report(run, Status.FAILED, f"{rejected.reason}; {done}", code=rejected.code)
        steps.finish(run, current_version, pending_version)
        return report(
            run,
            Status.OK,
            f"rotated {run.integration.name}: key {run.old_key_id} -> {run.new_key_id}"
            + (" (resumed an interrupted rotation)" if run.resumed else ""),
        )

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

    def _plan(self, run: Run) -> Outcome:
        """A dry run: what a real run would do now, from reads only."""
        aliases = run.aliases
        current_key = run.key(aliases[CURRENT])
        run.old_key_id = current_key.key_id
        plan: list[str] = []
        orphans: list[str] = []
        pending = aliases.get(PENDING)
        if pending is not None:
            plan.append(f"resume: version {pending} is pending from an earlier run")
        else:
            found = cleanup.census(run)
            orphans = [k.key_id for k in found.orphans]
            if orphans:
                plan.append(f"delete orphan keys {', '.join(orphans)}")
            if found.full:
                plan.append(f"fail: {found.remaining} keys, one more would reach the limit of {USER_MANAGED_KEY_LIMIT}")
            else:
                plan.append(
                    f"create a key for {run.account} ({found.remaining} user-managed keys now) as a pending version"
                )
            if found.note:
                plan.append(found.note.strip())
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
        result = outcome(
            Status.SKIPPED,
            "dry run: " + "; ".join(plan),
            code="dry-run",
            subject=run.subject,
            rid=run.request_id,
        )
        result.details.update(dry_run=True, plan=plan, old_key_id=run.old_key_id, orphans=orphans)
        return result


__all__ = ["KeyRotation"]
