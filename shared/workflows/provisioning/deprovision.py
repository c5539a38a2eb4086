"""``deprovision``: take away exactly what provisioning made, and nothing else.

What to remove is read from the integration's record (the managed secret), never guessed:
the Dataloop integration by its recorded id, the service-account keys stored in the
secret's versions, this account's reader grant on the recorded repositories (other
members' grants stay), the account itself only if provisioning created it, and finally
the record (or, with ``keep_secret``, its key versions and its ``managed-by`` label).

External things go first and the record last, so a deprovision that fails half way is
finished by sending it again; every step treats "already gone" as done. It first takes the
record's rotation lease (waiting, by redelivery, while a rotation holds it), so no rotation
adds a key while the keys are being deleted.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from shared.core.errors import GarDataloopError, PermanentError
from shared.model.integrations import MANAGED_LABEL, Annotation
from shared.model.key_ledger import created_keys
from shared.model.lease import Lease
from shared.model.policy import AccessPolicy, created_for, never_touched
from shared.model.record import SecretRecord, timestamp, update_record
from shared.model.request import DeprovisionRequest
from shared.model.results import Outcome, Status
from shared.ports import AccountAdmin, DataloopPlatform, RepositoryGrants, SecretStore
from shared.workflows.provisioning.records import (
    DEPROVISION_HOLDER,
    DEPROVISIONED_AT,
    now_utc,
    others_using_account,
    paths_needed_by,
    previous_paths,
    read_record,
    recorded_paths,
    records_integration,
    retired_key_ids,
    take_rotation_lease,
)
from shared.workflows.provisioning.steps import Steps
from shared.workflows.stored_keys import read_key

#: Long enough for every step of a deprovision; a redelivered one takes its own lease over.
DEPROVISION_LEASE_SECONDS = 900.0


class Deprovisioner:
    """Runs ``deprovision`` requests."""

    def __init__(
        self,
        secrets: SecretStore,
        accounts: AccountAdmin,
        repositories: RepositoryGrants,
        dataloop: Callable[[], DataloopPlatform],
        *,
        policy: AccessPolicy,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        """``policy`` names the deployment's own accounts and the created-account prefix: an
        account is deleted only when it carries that prefix and is none of the deployment's."""
        self._policy = policy
        self._secrets = secrets
        self._accounts = accounts
        self._repositories = repositories
        self._dataloop = dataloop
        self._clock = clock

    def deprovision(self, request: DeprovisionRequest) -> Outcome:
        """Remove the integration ``request.name``; ``ok`` also when there was nothing left.

        Raises:
            TransientError: a service was unavailable or a rotation is running; redelivered.
        """
        steps = Steps(request.action, request.name, request.request_id)
        facts: dict[str, Any] = {"secret_id": request.secret_id, "keep_secret": request.keep_secret}
        try:
            return self._deprovision(request, steps, facts)
        except PermanentError as exc:
            return steps.outcome(Status.FAILED, exc.reason, code=exc.code, details=facts)

    def _deprovision(self, request: DeprovisionRequest, steps: Steps, facts: dict[str, Any]) -> Outcome:
        with steps.step("record"):
            record = read_record(self._secrets, request.secret_id)
        if record is None:
            return steps.outcome(
                Status.OK,
                f"integration {request.name} has no record ({request.secret_id}); nothing to remove",
                details=facts,
            )
        if not records_integration(record, request.name):
            raise PermanentError(
                f"secret {request.secret_id} is not the record of integration {request.name}; refusing to touch it",
                code="secret-not-managed",
            )
        holder = f"{DEPROVISION_HOLDER}:{request.request_id or uuid.uuid4().hex}"
        record = take_rotation_lease(self._secrets, record, holder, self._clock(), DEPROVISION_LEASE_SECONDS)
        try:
            return self._remove(request, record, steps, facts)
        except PermanentError:
            self._release(record.secret_id, holder)
            raise

    def _remove(
        self, request: DeprovisionRequest, record: SecretRecord, steps: Steps, facts: dict[str, Any]
    ) -> Outcome:
        notes = record.annotations
        email = notes.get(Annotation.SERVICE_ACCOUNT) or ""
        facts["service_account"] = email

        refused = never_touched(email, self._policy.deployment_accounts) if email else None
        with steps.step("dataloop"):
            steps.done("dataloop", self._remove_integration(record))
        with steps.step("keys"):
            steps.done("keys", f"kept: {refused}" if refused else self._delete_stored_keys(record, email))
        with steps.step("grants"):
            sharing = self._sharing(record, email)
            steps.done("grants", self._revoke(record, email, sharing))
        with steps.step("service_account"):
            steps.done("service_account", self._remove_account(record, email, refused, sharing))
        with steps.step("record"):
            steps.done("record", self._retire_record(request, record))
        return steps.outcome(Status.OK, f"integration {request.name} is deprovisioned", details=facts)

    def _release(self, secret_id: str, holder: str) -> None:
        """Give the lease back after a failure for good (best effort: it expires anyway)."""

        def release(current: SecretRecord) -> dict[str, Any] | None:
            held = Lease.from_annotations(current.annotations)
            if held is None or held.holder != holder:
                return None
            return {"annotations": {k: v for k, v in current.annotations.items() if k != Annotation.ROTATION_LEASE}}

        with contextlib.suppress(GarDataloopError):
            update_record(self._secrets, secret_id, release)

    def _sharing(self, record: SecretRecord, email: str) -> list[SecretRecord]:
        """The other managed integrations using this account: their grants and account stay."""
        return others_using_account(self._secrets, record.secret_id, email)

    def _remove_account(
        self, record: SecretRecord, email: str, refused: str | None, sharing: list[SecretRecord]
    ) -> str:
        """Delete the account only if provisioning made it, nothing forbids it, and no one else uses it.

        The ``created-service-account`` annotation alone is editable by hand, so the account's
        id must also carry the created-account prefix that the deployment's own accounts never
        do, and its description, read back from IAM now, must be the one provisioning wrote.
        """
        if record.annotations.get(Annotation.CREATED_SERVICE_ACCOUNT) != "true" or not email:
            return "kept (not created by dataloop-gar)"
        if refused:
            return f"kept: {refused}"
        account_id = email.split("@", 1)[0]
        if not self._policy.is_created_account_id(account_id):
            return (
                f"kept: its id lacks the created-account prefix {self._policy.created_account_prefix!r}, "
                "so it was not made by this system"
            )
        account = self._accounts.get_account(email)
        if account is None:
            return "already gone"
        if created_for(account.get("description")) is None:
            return (
                "kept: its IAM description does not say dataloop-gar created it "
                "(the created-service-account annotation alone is not enough)"
            )
        if sharing:
            # The account outlives this record: the next integration using it inherits the duty
            # to delete it, so that the last one out removes it.
            heir = sorted(sharing, key=lambda o: o.secret_id)[0]

            def inherit(current: SecretRecord) -> dict[str, Any] | None:
                if current.annotations.get(Annotation.SERVICE_ACCOUNT) != email:
                    return None
                if current.annotations.get(Annotation.CREATED_SERVICE_ACCOUNT) == "true":
                    return None
                return {"annotations": {**current.annotations, Annotation.CREATED_SERVICE_ACCOUNT: "true"}}

            update_record(self._secrets, heir.secret_id, inherit, record=heir)
            return (
                "kept (used by integration " + ", ".join(sorted(o.secret_id for o in sharing)) + "; "
                f"{heir.secret_id} deletes it when it is deprovisioned last)"
            )
        return "deleted" if self._accounts.delete_account(email) else "already gone"

    def _remove_integration(self, record: SecretRecord) -> str:
        org = record.annotations.get(Annotation.ORG)
        if not org:
            return "no organization recorded"
        integration_id = record.annotations.get(Annotation.INTEGRATION_ID)
        if not integration_id:
            # Only a recorded id says the integration is ours: one that merely has the name
            # may be someone's hand-made integration, and is left alone.
            return "none recorded (an integration of this name, if any, was not made by dataloop-gar: left alone)"
        integrations = self._dataloop().integrations(org)
        return (
            f"deleted {integration_id}" if integrations.delete(integration_id) else f"already gone ({integration_id})"
        )

    def _delete_stored_keys(self, record: SecretRecord, email: str) -> dict[str, str]:
        """Delete the keys the record holds: those of readable (enabled) versions, those a
        rotation retired but keeps through its grace period (their versions are disabled, so
        their ids are read from the ``retired-keys`` annotation instead), and those its
        ``created-keys`` ledger lists (made by this system for this record, perhaps never
        stored). Keys of other disabled versions were deleted by the rotation that retired them."""
        secret_id = record.secret_id
        key_ids: dict[str, str] = {}  # key id -> account
        for number, state in sorted(self._secrets.list_versions(secret_id).items()):
            if state != "ENABLED":
                continue
            key = read_key(self._secrets, secret_id, number)
            key_ids[key.key_id] = key.client_email or email
        for key_id in retired_key_ids(record):
            key_ids.setdefault(key_id, email)
        for key_id in created_keys(record.annotations):  # made but never stored: an interrupted run's
            key_ids.setdefault(key_id, email)
        results = {}
        for key_id, owner in key_ids.items():
            if owner != email:
                # A version's payload names another account: not this integration's to delete.
                results[key_id] = f"kept (a key of {owner}, not of the integration's account)"
                continue
            results[key_id] = "deleted" if self._accounts.delete_key(owner, key_id) else "already gone"
        return results

    def _revoke(self, record: SecretRecord, email: str, sharing: list[SecretRecord]) -> dict[str, str]:
        if not email:
            return {}
        results = {}
        needed = paths_needed_by(sharing)
        targets = {**previous_paths(record), **recorded_paths(record)}
        for scope, path in targets.items():
            if path in needed:
                results[scope] = f"kept (used by {needed[path]})"
                continue
            try:
                changed = self._repositories.revoke_reader(path, f"serviceAccount:{email}")
            except PermanentError as exc:
                if exc.code != "repository-not-found":
                    raise
                results[scope] = "repository gone"
                continue
            results[scope] = "revoked" if changed else "not granted"
        return results

    def _retire_record(self, request: DeprovisionRequest, record: SecretRecord) -> str:
        if not request.keep_secret:
            return "deleted" if self._secrets.delete_secret(request.secret_id) else "already gone"

        def retire(current: SecretRecord) -> dict[str, Any] | None:
            labels = {k: v for k, v in current.labels.items() if k != MANAGED_LABEL[0]}
            notes = {
                k: v
                for k, v in current.annotations.items()
                if k not in (Annotation.INTEGRATION_ID, Annotation.ROTATION_LEASE, Annotation.CREATED_KEYS)
            }
            notes.setdefault(DEPROVISIONED_AT, timestamp(self._clock()))
            if labels == dict(current.labels) and notes == dict(current.annotations) and not current.version_aliases:
                return None
            return {"labels": labels, "annotations": notes, "version_aliases": {}}

        record = update_record(self._secrets, request.secret_id, retire, record=record)
        destroyed = 0
        for number, state in self._secrets.list_versions(request.secret_id).items():
            if state != "DESTROYED":
                self._secrets.set_version_state(request.secret_id, number, "destroy")
                destroyed += 1
        return f"kept; {destroyed} version(s) destroyed, managed label removed"
