"""``status``: what an operator needs to know about an integration, from its record alone.

Everything comes from the managed secret's metadata (labels, annotations, aliases), so a
status request costs one or two Secret Manager reads, never reads a key, and never calls
IAM or Dataloop: key age is the time since ``rotated-at``; the key's expiry (under an
organisation's key-expiry policy, docs/external-apis.md §3.3) is ``key-expires-at``; the next
rotation is the earlier of ``rotated-at`` plus the rotation period and the expiry less its
safety margin, exactly as the sweep decides; the last push verdict, and since when it has
held, is ``last-push`` (on_push writes it when the verdict changes); the last test is
``last-test`` (provisioning's, or a ``test`` request's), which says nothing about pushes;
how the last rotation run ended is ``last-rotation``.

A request with ``compliance`` also lists, once per managed account, its user-managed keys in
IAM (shared.model.compliance: age against CIS 1.7, and keys no record's ledger claims). That
is one IAM call per account, so it is asked for by the operator's command, not by default,
and the IAM client is only built when there is an account to check. The account named by a
record is read back from an editable annotation, so it is checked against the access policy
first: an account outside it is reported as unchecked, never listed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.core.errors import GarDataloopError
from shared.model.compliance import AccountKeys, account_keys, compliance_reason, compliance_summary
from shared.model.integrations import SECRET_PREFIX, Annotation
from shared.model.key_ledger import created_keys
from shared.model.policy import AccessPolicy
from shared.model.push_verdict import PushVerdict
from shared.model.record import CURRENT, PREVIOUS, SecretRecord, json_annotation, parse_timestamp, timestamp
from shared.model.request import StatusRequest
from shared.model.results import Outcome, Status
from shared.model.schedule import DEFAULT_EXPIRY_MARGIN_SECONDS, due_at, key_age_days, key_expires_at
from shared.ports import KeyLister, SecretStore
from shared.workflows.provisioning.records import (
    DEPROVISIONED_AT,
    PROVISIONED_AT,
    is_active,
    now_utc,
    read_last_test,
    read_record,
    records_integration,
    rotation_holder,
)
from shared.workflows.provisioning.steps import Steps

#: Every secret provisioning wrote, complete or not (``name:`` matches a substring of the id).
RECORD_FILTER = f"name:{SECRET_PREFIX}"
#: Accounts whose keys are listed at once: IAM's read quota is generous, one status is not a burst.
KEY_LISTING_CONCURRENCY = 8


@dataclass(frozen=True)
class IntegrationStatus:
    """One integration's state as the reply reports it (JSON-ready, no key material)."""

    name: str
    secret_id: str
    state: str  # active | incomplete | deprovisioned
    org_id: str | None
    dataloop_integration_id: str | None
    service_account: str | None
    registry_host: str | None
    repositories: list[str]
    current_version: int | None
    previous_version: int | None
    rotated_at: str | None
    key_age_days: float | None
    rotation_period_days: float
    next_rotation: str | None
    key_expires_at: str | None  # None: the key never expires
    key_expired: bool
    key_expiring: bool  # expired, or within the margin in which the sweep rotates for expiry
    rotate_notification_at: str | None  # when Secret Manager will next send SECRET_ROTATE
    rotation_overdue: bool
    rotation_in_progress: str | None
    last_test: dict[str, Any] | None
    last_push: dict[str, Any] | None  # {"status", "code", "image", "since", "reason"}; None: no push has failed
    last_rotation: dict[str, Any] | None  # {"status", "code", "at"}; None: no rotation run recorded
    provisioned_at: str | None

    @classmethod
    def from_record(
        cls,
        record: SecretRecord,
        now: datetime,
        default_period_days: float,
        expiry_margin_seconds: float = DEFAULT_EXPIRY_MARGIN_SECONDS,
    ) -> IntegrationStatus:
        notes = record.annotations
        rotated_at = parse_timestamp(notes.get(Annotation.ROTATED_AT))
        period = _period_days(notes.get(Annotation.ROTATION_PERIOD), default_period_days)
        next_rotation = due_at(record, default_period_days * 86400, expiry_margin_seconds) if rotated_at else None
        expires = key_expires_at(notes)
        if is_active(record):
            state = "active"
        elif notes.get(DEPROVISIONED_AT):
            state = "deprovisioned"
        else:
            state = "incomplete"
        return cls(
            name=notes.get(Annotation.INTEGRATION_NAME) or record.secret_id.removeprefix(SECRET_PREFIX),
            secret_id=record.secret_id,
            state=state,
            org_id=notes.get(Annotation.ORG),
            dataloop_integration_id=notes.get(Annotation.INTEGRATION_ID),
            service_account=notes.get(Annotation.SERVICE_ACCOUNT),
            registry_host=notes.get(Annotation.REGISTRY_HOST),
            repositories=[r for r in notes.get(Annotation.REPOSITORIES, "").split(",") if r],
            current_version=record.version_aliases.get(CURRENT),
            previous_version=record.version_aliases.get(PREVIOUS),
            rotated_at=timestamp(rotated_at) if rotated_at else None,
            key_age_days=key_age_days(notes, now),
            rotation_period_days=period,
            next_rotation=timestamp(next_rotation) if next_rotation else None,
            key_expires_at=timestamp(expires) if expires else None,
            key_expired=bool(state == "active" and expires and expires <= now),
            key_expiring=bool(
                state == "active" and expires and expires - timedelta(seconds=expiry_margin_seconds) <= now
            ),
            rotate_notification_at=record.next_rotation_time,
            rotation_overdue=bool(state == "active" and next_rotation and next_rotation < now),
            rotation_in_progress=rotation_holder(record, now),
            last_test=read_last_test(record),
            last_push=pushed.to_status() if (pushed := PushVerdict.from_annotations(notes)) else None,
            last_rotation=json_annotation(notes, Annotation.LAST_ROTATION),
            provisioned_at=notes.get(PROVISIONED_AT),
        )

    def summary(self) -> str:
        if self.state != "active":
            return f"{self.name}: {self.state}"
        age = f"key {self.key_age_days:.1f} days old" if self.key_age_days is not None else "key age unknown"
        push = self.last_push
        if push is None:  # no push has changed the verdict from passing: what provisioning's test said
            test = self.last_test or {}
            tested = ("last test passed" if test.get("passed") else "last test FAILED") if test else "never tested"
            tested += ", no push failed"
        elif push.get("status") == "passed":
            tested = f"last push passed since {push.get('since')}"
        else:
            code = f" {push['code']}" if push.get("code") else ""
            tested = f"last push FAILED{code} since {push.get('since')} ({push.get('image')})"
        due = " (rotation overdue)" if self.rotation_overdue else ""
        if self.key_expired:
            expiry = f", key EXPIRED at {self.key_expires_at} (Dataloop cannot pull)"
        elif self.key_expires_at:
            expiry = f", key expires {self.key_expires_at}"
        else:
            expiry = ""
        return f"{self.name}: {age}{expiry}, next rotation {self.next_rotation or 'unknown'}{due}, {tested}"


def _period_days(raw: str | None, default: float) -> float:
    """The ``rotation-period`` annotation (seconds) in days; the default when absent or not positive."""
    try:
        seconds = float(raw) if raw else 0.0
    except ValueError:
        seconds = 0.0
    return round(seconds / 86400, 4) if seconds > 0 else default


class StatusReport:
    """Answers ``status`` requests."""

    def __init__(
        self,
        secrets: SecretStore,
        *,
        default_rotation_period_days: float,
        expiry_margin_seconds: float = DEFAULT_EXPIRY_MARGIN_SECONDS,
        keys: Callable[[], KeyLister] | None = None,
        policy: AccessPolicy | None = None,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        """``expiry_margin_seconds`` as the sweep's, so that "next rotation" is when the sweep will rotate.

        ``keys`` builds the IAM client on first use; without it (or without ``policy``, which
        says which accounts may be read) a compliance request is answered as not checked.
        """
        self._secrets = secrets
        self._keys = keys
        self._policy = policy
        self._default_period = default_rotation_period_days
        self._expiry_margin = expiry_margin_seconds
        self._clock = clock

    def status(self, request: StatusRequest) -> Outcome:
        steps = Steps(request.action, request.name, request.request_id)
        now = self._clock()
        with steps.step("read"):
            if request.name:
                record = read_record(self._secrets, SECRET_PREFIX + request.name)
                records = [record] if record is not None and records_integration(record, request.name) else []
            else:
                records = [
                    r
                    for r in self._secrets.list_secrets(RECORD_FILTER)
                    if r.secret_id.startswith(SECRET_PREFIX) and r.annotations.get(Annotation.INTEGRATION_NAME)
                ]
        if request.name and not records:
            return steps.outcome(
                Status.FAILED, f"no integration named {request.name} is provisioned", code="integration-not-found"
            )
        found = sorted(
            (IntegrationStatus.from_record(r, now, self._default_period, self._expiry_margin) for r in records),
            key=lambda s: s.name,
        )
        reason = "; ".join(s.summary() for s in found) if found else "no integrations are provisioned"
        if not request.name:
            reason = f"{len(found)} integration(s)" + (f": {reason}" if found else "")
        details: dict[str, Any] = {"integrations": [asdict(s) for s in found]}
        if request.compliance:
            with steps.step("keys"):
                details["compliance"] = compliance = compliance_summary(self._account_keys(records, now))
            reason += "; " + compliance_reason(compliance)
        return steps.outcome(Status.OK, reason, details=details)

    def _account_keys(self, records: list[SecretRecord], now: datetime) -> list[AccountKeys]:
        """Each active integration's account, listed once however many integrations share it."""
        sharing: dict[str, list[str]] = defaultdict(list)
        ledgers: dict[str, set[str]] = defaultdict(set)
        for record in records:
            email = record.annotations.get(Annotation.SERVICE_ACCOUNT)
            if not is_active(record) or not email:
                continue
            sharing[email].append(record.annotations.get(Annotation.INTEGRATION_NAME) or record.secret_id)
            ledgers[email] |= created_keys(record.annotations)
        if not sharing:
            return []
        policy = self._policy
        keys = self._keys() if self._keys is not None and policy is not None else None

        def check(email: str) -> AccountKeys:
            names = tuple(sorted(sharing[email]))
            ours = bool(policy and policy.is_created_account_id(email.split("@", 1)[0]))
            refusal = policy.refusal_of_account(email, create=False) if policy else "no access policy is configured"
            if refusal or keys is None:
                return AccountKeys(email, names, ours, unchecked=refusal or "IAM not configured")
            try:
                listed = keys.list_keys(email)
            except GarDataloopError as exc:
                return AccountKeys(email, names, ours, unchecked=exc.reason)
            return account_keys(email, names, listed, ledgers[email], now, created_by_system=ours)

        accounts = sorted(sharing)
        if len(accounts) == 1:
            return [check(accounts[0])]
        with ThreadPoolExecutor(max_workers=min(KEY_LISTING_CONCURRENCY, len(accounts))) as pool:
            return list(pool.map(check, accounts))
