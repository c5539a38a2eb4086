"""``provision``: from one request to a working Dataloop integration for GAR repositories.

The steps, each of which first asks "is this already done?" so that a redelivered or
re-sent request converges instead of duplicating anything:

1. **repositories** — read each one, so a wrong location or id fails before anything is made;
2. **service_account** — decide which account; an account to *create* must be new or
   one this integration created before (its description says so, see ``shared.model.policy``);
3. **secret** — write the record first: the managed secret with every annotation the later
   steps and deprovisioning rely on (created without the ``managed-by`` label, so the
   catalog, on-push tests and rotations ignore it until it is complete);
4. create the service account when asked;
5. **grants** — ``roles/artifactregistry.reader`` on each named repository only (and
   revoked on repositories a previous request named and this one does not);
6. **key** — only when the secret has no ``current`` key: reuse a key an interrupted
   attempt already stored, else delete the keys an interrupted attempt made but never
   stored (those the record's ``created-keys`` ledger lists), then create one the way
   rotation does (:func:`shared.workflows.stored_keys.create_key`: recorded, then stored) and
   alias it ``current``, noting its expiry (``key-expires-at``) under an organisation's
   key-expiry policy (docs/external-apis.md §3.3), with a warning in the result when the
   requested period is longer than the key lives;
7. **dataloop** — ensure the integration by name with the current key's options, unless
   this very request (a redelivery: same ``request_id``) already did and nothing has been
   retired since; a re-sent request with a new id converges Dataloop again. An existing
   integration of that name is updated only if it is the one recorded (or the request
   says ``adopt_integration``), else the request fails ``integration-name-taken``; a new
   integration's id is recorded at once;
   then, when the request names a canary service, **canary_lock**: ensure its lock secret
   (shared/workflows/canary_lock.py), which on_push uses but may not create;
8. **activate** — label the secret managed and record the Dataloop integration id and the
   request that handed Dataloop the key;
9. **test** — when an image is given, the registry-tier reference test with the current
   key, proven by the same key probe rotation uses (patient through IAM propagation);
   the verdict is recorded as ``last-test``.

Because the record is written before anything else is made, a request that fails half way
leaves a record that both a re-sent ``provision`` and a ``deprovision`` can finish from.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from shared.core.errors import Conflict, GarDataloopError, PermanentError, RegistryUnavailable, TransientError
from shared.core.logs import log
from shared.model import key_ledger
from shared.model.dataloop import IntegrationNameTaken, gar_options
from shared.model.images import RegistryImage
from shared.model.integrations import MANAGED_LABEL, Annotation, ManagedIntegration
from shared.model.key_ledger import with_created_key
from shared.model.keys import ServiceAccountKey
from shared.model.policy import account_description, created_for
from shared.model.record import CURRENT, RETIRED_KEYS, SecretRecord, parse_timestamp, timestamp, update_record
from shared.model.request import ProvisionRequest
from shared.model.results import Outcome, Status
from shared.ports import AccountAdmin, DataloopPlatform, RepositoryGrants, SecretStore
from shared.workflows.canary_lock import ensure_lock
from shared.workflows.key_probe import KeyProbe
from shared.workflows.provisioning.last_test import record_test, summary
from shared.workflows.provisioning.records import (
    DEPROVISIONED_AT,
    GRANTS_MADE,
    PREVIOUS_REPOSITORIES,
    PROVISIONED_AT,
    PROVISIONED_FOR_REQUEST,
    format_paths,
    grants_made,
    is_active,
    now_utc,
    others_using_account,
    paths_needed_by,
    previous_paths,
    read_record,
    recorded_paths,
    records_integration,
    refuse_during_rotation,
    repository_paths,
)
from shared.workflows.provisioning.steps import Steps
from shared.workflows.reference_test import ReferenceTest, Verdict
from shared.workflows.stored_keys import create_key, read_key

logger = logging.getLogger(__name__)

LOCATION_LABEL = "location"
#: Annotations a request states in full: absent from the request means absent from the record.
_REQUEST_OWNED = (Annotation.CANARY_IMAGE, Annotation.CANARY_SERVICE)
#: What a retired record forgets when it is provisioned again.
_HISTORY = (
    Annotation.ROTATED_AT,
    Annotation.KEY_EXPIRES_AT,
    Annotation.LAST_TEST,
    RETIRED_KEYS,
    PROVISIONED_AT,
    PROVISIONED_FOR_REQUEST,
)


def _set_expiry(notes: dict[str, str], expires: datetime | None) -> None:
    """``key-expires-at`` for the key becoming (or staying) current; absent when it never expires."""
    if expires is None:
        notes.pop(Annotation.KEY_EXPIRES_AT, None)
    else:
        notes[Annotation.KEY_EXPIRES_AT] = timestamp(expires)


def account_display_name(integration_name: str) -> str:
    """The display name of an account provisioning creates, for people reading the console.

    Never a mark of ownership: anyone may choose any display name (the deployment's own
    accounts are called ``dataloop-gar KEY``). Ownership is the id prefix plus the
    description (``shared.model.policy.account_description``).
    """
    return f"dataloop-gar {integration_name}"


def member(email: str) -> str:
    return f"serviceAccount:{email}"


class Provisioner:
    """Runs ``provision`` requests."""

    def __init__(
        self,
        secrets: SecretStore,
        accounts: AccountAdmin,
        repositories: RepositoryGrants,
        dataloop: Callable[[], DataloopPlatform],
        probe: KeyProbe,
        reference_test: ReferenceTest,
        *,
        test_timeout_seconds: float,
        rotation_topic: str,
        default_rotation_period_days: float,
        clock: Callable[[], datetime] = now_utc,
        sleep: Callable[[float], None] = time.sleep,
        member_waits: tuple[float, ...] = (1.0, 2.0, 4.0),
    ) -> None:
        """``dataloop`` builds the client on first use: its credentials are read from Secret
        Manager, which a request that fails earlier should not pay for. ``member_waits``
        are the pauses while a new account becomes visible to repository policies. A new
        key is proven by ``probe``, as rotation proves its keys, for up to
        ``test_timeout_seconds``; ``reference_test`` then gives the verdict on the image."""
        self._secrets = secrets
        self._accounts = accounts
        self._repositories = repositories
        self._dataloop = dataloop
        self._probe = probe
        self._reference_test = reference_test
        self._test_timeout = test_timeout_seconds
        self._rotation_topic = rotation_topic
        self._default_period_days = default_rotation_period_days
        self._clock = clock
        self._sleep = sleep
        self._member_waits = member_waits

    def provision(self, request: ProvisionRequest) -> Outcome:
        """Provision, or converge an existing integration to ``request``.

        Returns a ``failed`` outcome for permanent failures (what to fix is in the reason,
        the failing step in ``details.failed_step``).

        Raises:
            TransientError: a service was unavailable, a new account is not visible yet,
                or a rotation is running; the request is redelivered and resumes.
        """
        steps = Steps(request.action, request.name, request.request_id)
        facts: dict[str, Any] = {
            "secret_id": request.secret_id,
            "registry_host": request.registry_host,
            "repositories": list(request.repository_scopes),
        }
        made: dict[str, str] = {}
        try:
            return self._provision(request, steps, facts, made)
        except PermanentError as exc:
            taken_back = self._take_back_grants(request, facts.get("service_account"), made)
            if taken_back:
                facts["grants_taken_back"] = taken_back
            return steps.outcome(Status.FAILED, exc.reason, code=exc.code, details=facts)

    def _provision(
        self, request: ProvisionRequest, steps: Steps, facts: dict[str, Any], made: dict[str, str]
    ) -> Outcome:
        paths = repository_paths(request.repository_scopes, request.location)
        with steps.step("repositories"):
            for path in paths.values():
                self._repositories.get_repository(path)
        steps.done("repositories", "found")

        with steps.step("service_account"):
            record = read_record(self._secrets, request.secret_id)
            email, create = self._choose_account(request, record)
        facts["service_account"] = email

        with steps.step("record"):
            record, written = self._write_record(request, record, email)
        steps.done("record", written)

        with steps.step("service_account"):
            if create:
                _, created = self._accounts.ensure_account(
                    request.project,
                    request.service_account.create or "",
                    account_display_name(request.name),
                    account_description(request.name),
                )
                steps.done("service_account", "created" if created else "exists (created by dataloop-gar)")
            else:
                steps.done("service_account", "exists (created by dataloop-gar)" if self._created(record) else "exists")

        with steps.step("grants"):
            steps.done("grants", self._grant(request, record, paths, email, made))

        with steps.step("key"):
            record, version, key, how = self._ensure_current_key(request, record, email)
        steps.done("key", how)
        facts.update(key_version=version, key_id=key.key_id)
        warning = self._expiry_warning(request, record)
        if warning:
            facts["key_expires_at"] = record.annotations[Annotation.KEY_EXPIRES_AT]
            facts["warnings"] = [warning]

        with steps.step("dataloop"):
            integration_id = self._handed_by_this_request(request, record)
            if integration_id is None:
                record, integration_id = self._ensure_integration(request, record, key)
                steps.done("dataloop", "ensured")
            else:
                steps.done("dataloop", "unchanged (this request already gave Dataloop the current key)")
        facts["dataloop_integration_id"] = integration_id

        if request.canary is not None and request.canary.service_id:
            with steps.step("canary_lock"):  # before activation: on_push tests the canary only under its lock
                steps.done("canary_lock", ensure_lock(self._secrets, request.canary.service_id))

        with steps.step("activate"):
            record, changed = self._activate(request, record, integration_id)
        steps.done("activate", "activated" if changed else "unchanged")

        image = request.image_to_test
        if image is None:
            reason = f"integration {request.name} is provisioned" + (f"; warning: {warning}" if warning else "")
            return steps.outcome(Status.OK, reason, details=facts)
        with steps.step("test"):
            verdict, attempts = self._test_new_key(record, key, image)
            result = summary(image, verdict, attempts)
            record_test(self._secrets, request.secret_id, result, challenge=verdict.challenge)
        steps.done("test", result)
        if not verdict.passed:
            return steps.outcome(
                Status.FAILED,
                f"integration {request.name} is provisioned, but its key cannot pull {image}: {verdict.reason}",
                code=verdict.code,
                details=facts,
            )
        return steps.outcome(
            Status.OK,
            f"integration {request.name} is provisioned and can pull {image}"
            + (f"; warning: {warning}" if warning else ""),
            details=facts,
        )

    def _expiry_warning(self, request: ProvisionRequest, record: SecretRecord) -> str | None:
        """Say so when the requested period is longer than the key will live.

        Nothing breaks (rotation is due before the key expires, whatever the period), but the
        request asked for something the organisation's key-expiry policy will not allow
        (docs/external-apis.md §3.3), and whoever sent it should learn that keys are replaced
        sooner, and why, from the answer rather than from the rotation log.
        """
        notes = record.annotations
        expires = parse_timestamp(notes.get(Annotation.KEY_EXPIRES_AT))
        if expires is None:
            return None
        made = parse_timestamp(notes.get(Annotation.ROTATED_AT)) or self._clock()
        lifetime = (expires - made).total_seconds()
        period = self._period_seconds(request)
        if period <= lifetime:
            return None
        return (
            f"the rotation period ({period / 86400:g} days) is longer than the key lives ({lifetime / 3600:.4g} hours, "
            f"until {timestamp(expires)}: the organisation's iam.serviceAccountKeyExpiryHours policy); each key is "
            "rotated before it expires instead, so more often than the period says"
        )

    def _test_new_key(self, record: SecretRecord, key: ServiceAccountKey, image: RegistryImage) -> tuple[Verdict, int]:
        """The verdict on ``image`` once the key works, and how many registry attempts it took.

        The key may be minutes old: it is proven first, patiently, exactly as a rotation
        proves its new key (IAM propagation, docs/external-apis.md §3.4); a missing image
        proves it too. The verdict is then what a ``test`` request would answer now.

        Raises:
            RegistryUnavailable: the registry never answered within the test timeout.
        """
        integration = ManagedIntegration.from_secret(record)
        proof = self._probe.prove(key, integration, deadline=self._probe.deadline_in(self._test_timeout), image=image)
        if proof.unavailable:
            raise RegistryUnavailable(f"could not test the new key: {proof.reason}")
        return self._reference_test.registry_tier(image, key), proof.attempts + 1

    # -- 2. which account ----------------------------------------------------------------------
    def _choose_account(self, request: ProvisionRequest, record: SecretRecord | None) -> tuple[str, bool]:
        """The account's email, and whether it still has to be created.

        Raises:
            PermanentError: an existing account is missing or disabled, or an account to
                create already exists and is not this integration's.
        """
        choice = request.service_account
        email = choice.email_in(request.project)
        account = self._accounts.get_account(email)
        if choice.create:
            if account is None:
                return email, True
            if created_for(account.get("description")) != request.name:
                raise PermanentError(
                    f"service account {email} already exists and was not created for integration {request.name}; "
                    f'to use it, send "service_account": {{"email": "{email}"}}, or choose another account id',
                    code="service-account-exists",
                )
            return email, False
        if account is None:
            raise PermanentError(
                f"service account {email} does not exist; create it first or ask for one to be created "
                f'("service_account": {{"create": "ACCOUNT_ID"}})',
                code="service-account-not-found",
            )
        if account.get("disabled"):
            raise PermanentError(
                f"service account {email} is disabled; enable it (gcloud iam service-accounts enable {email})",
                code="service-account-disabled",
            )
        return email, False

    @staticmethod
    def _created(record: SecretRecord | None) -> bool:
        return record is not None and record.annotations.get(Annotation.CREATED_SERVICE_ACCOUNT) == "true"

    # -- 3. the record --------------------------------------------------------------------------
    def _period_seconds(self, request: ProvisionRequest) -> int:
        days = request.rotation_period_days or self._default_period_days
        return max(3600, round(days * 86400))

    def _annotations(self, request: ProvisionRequest, email: str, created: bool) -> dict[str, str]:
        notes = {
            Annotation.ORG: request.org_id,
            Annotation.INTEGRATION_NAME: request.name,
            Annotation.SERVICE_ACCOUNT: email,
            Annotation.REGISTRY_HOST: request.registry_host,
            Annotation.REPOSITORIES: ",".join(request.repository_scopes),
            Annotation.LOCATION: request.location,
            Annotation.ROTATION_PERIOD: str(self._period_seconds(request)),
            Annotation.CREATED_SERVICE_ACCOUNT: "true" if created else "false",
        }
        if request.canary is not None:
            notes[Annotation.CANARY_IMAGE] = str(request.canary.image)
            if request.canary.service_id:
                notes[Annotation.CANARY_SERVICE] = request.canary.service_id
        return notes

    def _write_record(
        self, request: ProvisionRequest, record: SecretRecord | None, email: str
    ) -> tuple[SecretRecord, str]:
        created = bool(request.service_account.create)
        wanted = self._annotations(request, email, created)
        if record is None:
            period = self._period_seconds(request)
            try:
                record = self._secrets.create_secret(
                    request.secret_id,
                    labels={LOCATION_LABEL: request.location},
                    annotations={
                        **wanted,
                        PROVISIONED_AT: timestamp(self._clock()),
                    },
                    topics=(self._rotation_topic,),
                    rotation_period_seconds=period,
                    next_rotation_time=self._clock() + timedelta(seconds=period),
                )
                return record, "created"
            except Conflict as exc:
                if exc.code != "already-exists":
                    raise
                record = self._secrets.get_secret(request.secret_id)  # a concurrent delivery made it first
        self._check_same_integration(request, record, email)
        refuse_during_rotation(record, self._clock())

        wanted_paths = set(repository_paths(request.repository_scopes, request.location).values())
        period = self._period_seconds(request)

        def change(current: SecretRecord) -> dict[str, Any] | None:
            self._check_same_integration(request, current, email)
            notes = {k: v for k, v in current.annotations.items() if k not in _REQUEST_OWNED and k != DEPROVISIONED_AT}
            notes.update(wanted)
            # Repositories this request no longer names keep being listed until their grant is revoked.
            dropped = {**previous_paths(current), **recorded_paths(current)}
            dropped = {scope: path for scope, path in dropped.items() if path not in wanted_paths}
            if dropped:
                notes[PREVIOUS_REPOSITORIES] = format_paths(dropped)
            else:
                notes.pop(PREVIOUS_REPOSITORIES, None)
            if self._created(current) and current.annotations.get(Annotation.SERVICE_ACCOUNT) == email:
                notes[Annotation.CREATED_SERVICE_ACCOUNT] = "true"  # created earlier; still ours to delete
            if DEPROVISIONED_AT in current.annotations:
                # A retired record starts over: its history belongs to keys that are gone, and
                # keys the account gained since it was first written are not ours.
                for stale in _HISTORY:
                    notes.pop(stale, None)
            notes.setdefault(PROVISIONED_AT, timestamp(self._clock()))
            fields: dict[str, Any] = {} if notes == dict(current.annotations) else {"annotations": notes}
            fields.update(self._schedule_change(current, period))
            return fields or None

        before = record.etag
        record = update_record(self._secrets, request.secret_id, change, record=record)
        return record, "updated" if record.etag != before else "unchanged"

    def _schedule_change(self, record: SecretRecord, period: int) -> dict[str, Any]:
        """Secret Manager's rotation schedule (SECRET_ROTATE) for a changed ``rotation_period_days``.

        The sweep decides by the ``rotation-period`` annotation, but Secret Manager keeps
        sending SECRET_ROTATE on its own schedule, and each one forces a rotation: left at the
        old period, a lengthened period would still rotate at the old pace. The next
        notification is due when the current key reaches the new period (or in ten minutes,
        if it already has: Secret Manager wants at least five).
        """
        if record.rotation_period_seconds == period:
            return {}
        now = self._clock()
        rotated = parse_timestamp(record.annotations.get(Annotation.ROTATED_AT)) or now
        due = max(rotated + timedelta(seconds=period), now + timedelta(minutes=10))
        return {"rotation_period_seconds": period, "next_rotation_time": due}

    def _check_same_integration(self, request: ProvisionRequest, record: SecretRecord, email: str) -> None:
        """Refuse to repurpose a record: moving an integration to another org or account
        would strand what the old one made (deprovision it first)."""
        notes = record.annotations
        if not records_integration(record, request.name):
            raise PermanentError(
                f"secret {request.secret_id} exists but is not the record of integration {request.name}; "
                "delete it or choose another integration name",
                code="secret-not-managed",
            )
        for key, wanted, what in (
            (Annotation.ORG, request.org_id, "Dataloop organization"),
            (Annotation.SERVICE_ACCOUNT, email, "service account"),
        ):
            existing = notes.get(key)
            if existing and existing != wanted and not notes.get(DEPROVISIONED_AT):
                raise PermanentError(
                    f"integration {request.name} is provisioned with {what} {existing}, not {wanted}; "
                    f"deprovision it first to change its {what}",
                    code="integration-mismatch",
                )

    # -- 5. grants -------------------------------------------------------------------------------
    def _grant(
        self, request: ProvisionRequest, record: SecretRecord, paths: dict[str, str], email: str, made: dict[str, str]
    ) -> dict[str, str]:
        results = {}
        for scope, path in paths.items():
            granted = self._grant_one(path, email)
            results[scope] = "granted" if granted else "unchanged"
            if granted:
                made[scope] = path
        if made and not is_active(record):
            # Remembered across redeliveries: the attempt that fails for good may not be the
            # one that granted.
            def remember(current: SecretRecord) -> dict[str, Any] | None:
                known = grants_made(current)
                if made.items() <= known.items():
                    return None
                return {"annotations": {**current.annotations, GRANTS_MADE: format_paths({**known, **made})}}

            update_record(self._secrets, request.secret_id, remember, record=record)
        # Repositories an earlier request named and this one does not: take our grant back.
        for scope, path in previous_paths(record).items():
            if path in paths.values():
                continue
            try:
                revoked = self._repositories.revoke_reader(path, member(email))
            except PermanentError as exc:
                if exc.code != "repository-not-found":
                    raise
                revoked = False
            results[scope] = "revoked" if revoked else "not granted"
        return results

    def _take_back_grants(self, request: ProvisionRequest, email: str | None, made: dict[str, str]) -> dict[str, str]:
        """After a failure for good, revoke the reader grants a never-activated provision added.

        Otherwise a request that failed (say, at the key or Dataloop step) would leave its
        account able to read the repositories. Grants another managed integration of the
        same account relies on stay; an active record keeps its grants (it is in use). Never
        raises: the failure being reported matters more, and what is left is listed.
        """
        if not email:
            return {}
        try:
            record = read_record(self._secrets, request.secret_id)
            if record is not None and is_active(record):
                return {}
            targets = {**grants_made(record), **made}
            if not targets:
                return {}
            others = others_using_account(self._secrets, request.secret_id, email)
        except GarDataloopError as exc:
            return {scope: f"left: {exc.reason}" for scope in made}
        needed = paths_needed_by(others)
        results: dict[str, str] = {}
        for scope, path in sorted(targets.items()):
            if path in needed:
                results[scope] = f"kept (used by {needed[path]})"
                continue
            try:
                self._repositories.revoke_reader(path, member(email))
                results[scope] = "revoked"
            except GarDataloopError as exc:
                results[scope] = f"left: {exc.reason}"
        gone = {s for s, r in results.items() if not r.startswith("left")}
        if record is not None and gone:

            def forget(current: SecretRecord) -> dict[str, Any] | None:
                left = {s: p for s, p in grants_made(current).items() if s not in gone}
                notes = {k: v for k, v in current.annotations.items() if k != GRANTS_MADE}
                if left:
                    notes[GRANTS_MADE] = format_paths(left)
                return None if notes == dict(current.annotations) else {"annotations": notes}

            with contextlib.suppress(GarDataloopError):
                update_record(self._secrets, request.secret_id, forget, record=record)
        log(
            logger,
            logging.INFO,
            "reader grants of a failed provision taken back",
            secret_id=request.secret_id,
            grants=results,
        )
        return results

    def _grant_one(self, path: str, email: str) -> bool:
        """Grant, waiting briefly for a just-created account to become visible to IAM policies.

        Past those few seconds the request is redelivered (TransientError) and resumes here.
        """
        for wait in (*self._member_waits, None):
            try:
                return self._repositories.grant_reader(path, member(email))
            except TransientError as exc:
                if exc.code != "member-not-visible" or wait is None:
                    raise
                log(logger, logging.INFO, "new service account not visible to IAM yet; waiting", account=email)
                self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- 6. the key ------------------------------------------------------------------------------
    def _ensure_current_key(
        self, request: ProvisionRequest, record: SecretRecord, email: str
    ) -> tuple[SecretRecord, int, ServiceAccountKey, str]:
        secret_id = request.secret_id
        current = record.version_aliases.get(CURRENT)
        live = {k.key_id: k for k in self._accounts.list_keys(email)}
        if current is not None:
            key = read_key(self._secrets, secret_id, current)
            if key.key_id not in live:
                raise PermanentError(
                    f"the current key {key.key_id} of integration {request.name} no longer exists on {email} "
                    f"(deleted by hand, or the account was re-created); replace it with a forced rotation: "
                    f'{{"version": 1, "action": "rotate", "name": "{request.name}", "force": true}}',
                    code="current-key-missing",
                )
            record = self._note_expiry(secret_id, record, live[key.key_id].expires_at)
            return record, current, key, "kept"

        versions = self._secrets.list_versions(secret_id)
        aliased = set(record.version_aliases.values())
        stored: set[str] = set()
        reusable: tuple[int, ServiceAccountKey] | None = None
        for number in sorted((n for n, s in versions.items() if s == "ENABLED" and n not in aliased), reverse=True):
            key = read_key(self._secrets, secret_id, number)
            stored.add(key.key_id)
            if reusable is None and key.client_email == email and key.key_id in live:
                reusable = (number, key)

        if reusable is not None:
            version, key = reusable
            expires = live[key.key_id].expires_at
            how = "reused a key stored by an interrupted attempt"
        else:
            deleted = self._delete_unstored_keys(record, email, set(live), stored)
            remaining = set(live) - set(deleted)

            def record_created(key_id: str) -> None:
                nonlocal record
                record = update_record(
                    self._secrets,
                    secret_id,
                    lambda r: {"annotations": with_created_key(r.annotations, key_id, remaining)},
                    record=record,
                )

            version, key = create_key(self._accounts, self._secrets, secret_id, email, record_created)
            expires = key.expires_at
            how = "created" + (f" (deleted {len(deleted)} key(s) an interrupted attempt made)" if deleted else "")

        def alias(current_record: SecretRecord) -> dict[str, Any] | None:
            if current_record.version_aliases.get(CURRENT) is not None:
                return None  # someone (a concurrent delivery) finished first; theirs stands
            notes = dict(current_record.annotations)
            notes[Annotation.ROTATED_AT] = timestamp(self._clock())
            _set_expiry(notes, expires)
            return {"version_aliases": {**current_record.version_aliases, CURRENT: version}, "annotations": notes}

        record = update_record(self._secrets, secret_id, alias, record=record)
        final = record.version_aliases[CURRENT]
        if final != version:
            # A concurrent delivery of this request stored its key first: ours is surplus.
            self._accounts.delete_key(email, key.key_id)
            self._secrets.set_version_state(secret_id, version, "disable")
            return record, final, read_key(self._secrets, secret_id, final), "kept (set concurrently)"
        log(logger, logging.INFO, "integration key stored", secret_id=secret_id, version=version, key_id=key.key_id)
        return record, version, key, how

    def _note_expiry(self, secret_id: str, record: SecretRecord, expires: datetime | None) -> SecretRecord:
        """Record the kept key's expiry if the record lacks it (a record older than the annotation),
        so the sweep rotates it before it expires."""

        def change(current: SecretRecord) -> dict[str, Any] | None:
            notes = dict(current.annotations)
            _set_expiry(notes, expires)
            return None if notes == dict(current.annotations) else {"annotations": notes}

        return update_record(self._secrets, secret_id, change, record=record)

    def _delete_unstored_keys(self, record: SecretRecord, email: str, live: set[str], stored: set[str]) -> list[str]:
        """Delete the keys an interrupted attempt created but never stored.

        Only keys this record's ledger lists: the account may hold keys that other systems,
        or a sibling integration's provisioning in flight, use; those are not ours to touch.
        """
        deleted = []
        for key_id in key_ledger.unstored(record.annotations, live, stored):
            if self._accounts.delete_key(email, key_id):
                log(logger, logging.INFO, "deleted a key an interrupted attempt made", key_id=key_id, account=email)
            deleted.append(key_id)
        return deleted

    # -- 8. activate -----------------------------------------------------------------------------
    @staticmethod
    def _handed_by_this_request(request: ProvisionRequest, record: SecretRecord) -> str | None:
        """The integration id, when this request was already delivered and gave Dataloop the key.

        Only the activate step records the request, after Dataloop took the key; a rotation
        since then handed Dataloop its own (newer) key, so skipping is right either way.
        """
        notes = record.annotations
        if request.request_id is None or not is_active(record):
            return None
        if notes.get(PROVISIONED_FOR_REQUEST) != request.request_id[:256]:
            return None
        return notes.get(Annotation.INTEGRATION_ID) or None

    def _ensure_integration(
        self, request: ProvisionRequest, record: SecretRecord, key: ServiceAccountKey
    ) -> tuple[SecretRecord, str]:
        integrations = self._dataloop().integrations(request.org_id)
        options = gar_options(key.json_text, request.registry_host)
        owned = record.annotations.get(Annotation.INTEGRATION_ID)
        try:
            integration = integrations.ensure(request.name, options, owned_id=owned, adopt=request.adopt_integration)
        except IntegrationNameTaken:
            # A concurrent delivery of this request may have just created it and recorded
            # its id: then it is ours after all.
            record = read_record(self._secrets, request.secret_id) or record
            fresh = record.annotations.get(Annotation.INTEGRATION_ID)
            if not fresh or fresh == owned:
                raise
            integration = integrations.ensure(request.name, options, owned_id=fresh)
        return self._record_integration(request, record, integration.id), integration.id

    def _record_integration(self, request: ProvisionRequest, record: SecretRecord, integration_id: str) -> SecretRecord:
        """Record the Dataloop integration's id as soon as it is known.

        The id is the only proof that the integration is this system's: a re-sent request
        updates only that id, and deprovision deletes only that id. Writing it before the
        later steps narrows "created in Dataloop, not yet recorded" to this one write.
        """

        def change(current: SecretRecord) -> dict[str, Any] | None:
            if current.annotations.get(Annotation.INTEGRATION_ID) == integration_id:
                return None
            return {"annotations": {**current.annotations, Annotation.INTEGRATION_ID: integration_id}}

        return update_record(self._secrets, request.secret_id, change, record=record)

    def _activate(
        self, request: ProvisionRequest, record: SecretRecord, integration_id: str
    ) -> tuple[SecretRecord, bool]:
        def change(current: SecretRecord) -> dict[str, Any] | None:
            labels = {**current.labels, MANAGED_LABEL[0]: MANAGED_LABEL[1], LOCATION_LABEL: request.location}
            # Once active, its grants are deprovision's to revoke, not a failed attempt's.
            notes = {k: v for k, v in current.annotations.items() if k not in (PREVIOUS_REPOSITORIES, GRANTS_MADE)}
            notes[Annotation.INTEGRATION_ID] = integration_id
            if request.request_id:
                notes[PROVISIONED_FOR_REQUEST] = request.request_id[:256]
            else:
                notes.pop(PROVISIONED_FOR_REQUEST, None)
            if labels == dict(current.labels) and notes == dict(current.annotations):
                return None
            return {"labels": labels, "annotations": notes}

        def activation(of: SecretRecord) -> tuple[dict[str, str], dict[str, str]]:
            # Which request did it is bookkeeping: a re-sent request that only records itself is "unchanged".
            return dict(of.labels), {k: v for k, v in of.annotations.items() if k != PROVISIONED_FOR_REQUEST}

        before = activation(record)
        record = update_record(self._secrets, request.secret_id, change, record=record)
        return record, activation(record) != before
