"""Whether a rotation run may start, decided from one read of the secret and nothing else.

Every check here comes before the lease and before any write, so a refusal costs one read
and changes nothing: the sweep, a hand-edited record, a request outside the access policy
and Pub/Sub's redeliveries can all ask as often as they like. Each refusal is a
:class:`~shared.workflows.rotation.report.Refused`, which the dispatcher turns into the
run's one Outcome.
"""

from __future__ import annotations

from datetime import datetime

from shared.core.errors import PermanentError
from shared.model.dataloop import registry_host_for
from shared.model.integrations import MANAGED_FILTER, MANAGED_LABEL, SECRET_PREFIX, Annotation, ManagedIntegration
from shared.model.lease import Lease
from shared.model.policy import AccessPolicy, NotAllowed
from shared.model.record import CURRENT, PENDING, SecretRecord, timestamp
from shared.model.results import Status
from shared.model.schedule import DEFAULT_EXPIRY_MARGIN_SECONDS, due_at, is_due, key_expires_at
from shared.ports import SecretStore
from shared.workflows.key_probe import KeyProbe
from shared.workflows.rotation.report import Refused


def read(secrets: SecretStore, secret_id: str) -> SecretRecord:
    """The secret ``secret_id`` names: itself if it starts with ``dataloop-gar-``, else ``dataloop-gar-`` + it.

    One read, never a guess: the deployment grants Secret Manager only on secrets named
    ``dataloop-gar-*``, and Google answers a read of any other name PERMISSION_DENIED,
    not NOT_FOUND, so trying the bare name first would fail every rotation by name.
    The rule is unambiguous because it looks at the argument only: a name that itself
    starts with the prefix (the request schema allows ``dataloop-gar-x``) is reached by
    its full id (``dataloop-gar-dataloop-gar-x``), never by the name alone.
    """
    try:
        return secrets.get_secret(secret_id if secret_id.startswith(SECRET_PREFIX) else SECRET_PREFIX + secret_id)
    except PermanentError as exc:
        raise Refused(Status.FAILED, exc.reason, exc.code) from exc


def managed(record: SecretRecord) -> ManagedIntegration:
    """The integration ``record`` keeps, if it is a managed one."""
    if record.labels.get(MANAGED_LABEL[0]) != MANAGED_LABEL[1]:
        raise Refused(
            Status.FAILED,
            f"secret {record.secret_id} is not a managed integration (label {MANAGED_FILTER} missing)",
            "not-managed",
        )
    try:
        return ManagedIntegration.from_secret(record)
    except PermanentError as exc:
        raise Refused(Status.FAILED, exc.reason, exc.code) from exc


def rotatable(record: SecretRecord, integration: ManagedIntegration, policy: AccessPolicy, probe: KeyProbe) -> None:
    """Refuse an integration that lacks what a rotation needs, or that the access policy does not allow."""
    missing = _missing_fields(record, integration)
    if missing:
        raise Refused(
            Status.FAILED,
            f"managed secret {record.secret_id} cannot be rotated: it lacks {', '.join(missing)}; re-provision it",
            "bad-integration",
        )
    try:
        policy.check_record(
            org_id=integration.org_id, service_account=integration.service_account, secret_id=record.secret_id
        )
    except NotAllowed as exc:
        raise Refused(
            Status.FAILED,
            f"{exc.reason}; not rotated (no key is made for, or sent to, what the access policy does not allow)",
            exc.code,
        ) from exc
    try:
        probe.check_target(integration)
    except PermanentError as exc:
        raise Refused(Status.FAILED, f"{exc.reason}; not rotated", exc.code) from exc


def wanted(
    record: SecretRecord,
    now: datetime,
    *,
    force: bool,
    request_id: str | None,
    default_period_seconds: float,
    expiry_margin_seconds: float = DEFAULT_EXPIRY_MARGIN_SECONDS,
) -> None:
    """Skip a run that another run is doing, that this request already did, or that is not due yet."""
    held = Lease.from_annotations(record.annotations)
    if held is not None and held.live(now):
        raise Refused(
            Status.SKIPPED,
            f"rotation in progress: run {held.holder} holds the lease until {timestamp(held.expires)}",
            "rotation-in-progress",
        )
    if (
        request_id
        and record.annotations.get(Annotation.ROTATED_FOR_REQUEST) == request_id
        and PENDING not in record.version_aliases
    ):
        raise Refused(
            Status.SKIPPED,
            f"request {request_id} already rotated {record.secret_id} (at "
            f"{record.annotations.get(Annotation.ROTATED_AT, 'an unrecorded time')}): a redelivery, not rotated again",
            "already-rotated",
        )
    if not force and not is_due(record, now, default_period_seconds, expiry_margin_seconds):
        when = due_at(record, default_period_seconds, expiry_margin_seconds)
        expires = key_expires_at(record.annotations)
        raise Refused(
            Status.SKIPPED,
            f"not due: next rotation at {timestamp(when) if when else 'now'}"
            + (f" (the key expires at {timestamp(expires)})" if expires else "")
            + " (force to rotate anyway)",
            "not-due",
        )


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
