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
2. **test** — the pending key must pull from the registry (:mod:`shared.workflows.key_probe`),
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

Safety rules: a lease (annotation ``rotation-lease``) taken with the secret's etag
admits one run at a time; a live lease of another run makes this run ``skipped``, an
expired one is taken over; it is released at the end, on failure too. Every later write
re-checks that this run still holds the lease (:mod:`shared.workflows.rotation.lease`).
The current key is never deleted (checked before every deletion, in
:meth:`shared.workflows.rotation.run.Run.delete_key`). A resumed run that must roll back
gives Dataloop the current key again first, since an earlier run may have reached *set*
(:mod:`shared.workflows.rotation.rollback`).

Transient errors raise, so Pub/Sub redelivers and the next run resumes; permanent ones
are reported as one ``rotation`` Outcome with each step's outcome and duration and the
old and new key *ids* (never key material).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shared.core.errors import PermanentError
from shared.model.integrations import SECRET_PREFIX, ManagedIntegration
from shared.model.policy import AccessPolicy
from shared.model.record import CURRENT, SecretRecord, retired_keys
from shared.model.results import Outcome, Status
from shared.model.schedule import DEFAULT_EXPIRY_MARGIN_SECONDS
from shared.ports import DataloopCredentials, KeyAccounts, SecretStore
from shared.workflows.key_probe import KeyProbe
from shared.workflows.rotation import admission, lease, steps
from shared.workflows.rotation.plan import plan
from shared.workflows.rotation.report import Refused, outcome, report
from shared.workflows.rotation.rollback import rollback
from shared.workflows.rotation.run import Run, Services


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
        expiry_margin_seconds: the least notice of a key's expiry
            (:func:`shared.model.schedule.expiry_margin`); the sweep's must match.
        dry_run: the default for runs that do not say.
    """

    def __init__(
        self,
        secrets: SecretStore,
        accounts: KeyAccounts,
        dataloop: Callable[[], DataloopCredentials],
        probe: KeyProbe,
        *,
        grace_period_seconds: float = 86400.0,
        test_timeout_seconds: float = 420.0,
        lease_seconds: float = 900.0,
        default_period_seconds: float = 30 * 86400.0,
        expiry_margin_seconds: float = DEFAULT_EXPIRY_MARGIN_SECONDS,
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
        self.expiry_margin_seconds = expiry_margin_seconds
        self.dry_run = dry_run
        self._clock = clock
        self._monotonic = monotonic

    def rotate(
        self, secret_id: str, *, force: bool = False, dry_run: bool = False, request_id: str | None = None
    ) -> Outcome:
        """Rotate (or resume rotating) the integration kept in secret ``secret_id``.

        ``secret_id`` may also be the integration's name: an argument that does not start
        with ``dataloop-gar-`` is a name, and its secret is ``dataloop-gar-`` + it (see
        :func:`shared.workflows.rotation.admission.read`). Without ``force`` a run does
        nothing unless the rotation is due (``rotated-at`` + period has passed, or the key
        expires within the margin) or was interrupted.

        Returns one ``rotation`` Outcome: ``ok``, ``failed`` (permanent; the reason says
        what to fix), or ``skipped`` (not due, another run holds the lease, dry run).

        Raises:
            TransientError: a service was unavailable; the lease is released and a
                redelivery resumes where this run stopped.
        """
        started = time.perf_counter()
        subject: dict[str, Any] = {"secret_id": secret_id}
        try:
            record, integration = self._admit(secret_id, subject, force=force, request_id=request_id)
            run = Run(
                self._services(), record, integration, f"rot-{uuid.uuid4().hex[:16]}", request_id, started, subject
            )
            run.retired = retired_keys(record.annotations)
            if dry_run or self.dry_run:
                return plan(run)
            lease.take(run)
        except Refused as refused:
            return outcome(refused.status, refused.reason, code=refused.code, subject=subject, rid=request_id)

        result: Outcome | None = None
        try:
            try:
                result = self._rotate(run)
            except PermanentError as exc:
                result = report(run, Status.FAILED, exc.reason, code=exc.code)
        finally:
            released = lease.release(run, result)
        assert result is not None  # only an exception leaves the block without one, and it propagates
        if not released:
            result.details["lease"] = "not released; it expires by itself"
        return result

    def _admit(
        self, secret_id: str, subject: dict[str, Any], *, force: bool, request_id: str | None
    ) -> tuple[SecretRecord, ManagedIntegration]:
        """The record and its integration, if a run may start now; fills in ``subject`` as it learns it."""
        record = admission.read(self._secrets, secret_id)
        subject.update(secret_id=record.secret_id, integration=record.secret_id.removeprefix(SECRET_PREFIX))
        integration = admission.managed(record)
        subject.update(integration=integration.name, service_account=integration.service_account or "")
        admission.rotatable(record, integration, self._policy, self._probe)
        admission.wanted(
            record,
            self._clock(),
            force=force,
            request_id=request_id,
            default_period_seconds=self.default_period_seconds,
            expiry_margin_seconds=self.expiry_margin_seconds,
        )
        return record, integration

    def _rotate(self, run: Run) -> Outcome:
        """The steps in order; a pending key one of them rejects is rolled back, and the run fails."""
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

    def _services(self) -> Services:
        return Services(
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


__all__ = ["KeyRotation"]
