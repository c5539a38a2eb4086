"""Reading and writing the managed secret that records an integration (docs/external-apis.md §4.1).

Every workflow here starts by reading that record and ends by writing it, and two writers
may meet (a provisioning request and a rotation, or a redelivered request and itself).
Writes therefore go through :func:`update_record`: read, decide, write under the etag,
and decide again on a stale etag, so that no writer silently undoes another's change.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.core.errors import PermanentError, TransientError
from shared.model.images import location_of, repository_path
from shared.model.integrations import MANAGED_FILTER, MANAGED_LABEL, Annotation
from shared.model.lease import Lease
from shared.model.record import SecretRecord, json_annotation, retired_keys, update_record
from shared.ports import SecretStore

logger = logging.getLogger(__name__)

#: Annotations only provisioning reads and writes (the shared ones are in shared.model.integrations).
PROVISIONED_AT = "provisioned-at"  # RFC 3339: when the record was first written
#: The request_id of the request that last gave Dataloop the current key. A redelivery of that
#: request leaves Dataloop alone: its PATCH (reloadServices=true) reloads the services pulling with it.
PROVISIONED_FOR_REQUEST = "provisioned-for-request"
#: ``scope=path`` of reader grants this system added for the record's account while the
#: record was not yet active: what a provision that fails for good takes back.
GRANTS_MADE = "grants-made"
DEPROVISIONED_AT = "deprovisioned-at"  # RFC 3339: deprovisioned with keep_secret; the record stays as history
#: "SCOPE=PATH,…": repositories a newer request no longer names, whose grants are still to be taken back.
PREVIOUS_REPOSITORIES = "previous-repositories"


def now_utc() -> datetime:
    return datetime.now(UTC)


def read_record(secrets: SecretStore, secret_id: str) -> SecretRecord | None:
    """The secret's metadata, or None when there is no such secret."""
    try:
        return secrets.get_secret(secret_id)
    except PermanentError as exc:
        if exc.code == "not-found":
            return None
        raise


def records_integration(record: SecretRecord, name: str) -> bool:
    """Whether ``record`` was written by provisioning for integration ``name``.

    A secret that merely has the right id (made by hand, or by another tool) is not ours
    to rewrite or delete.
    """
    return record.annotations.get(Annotation.INTEGRATION_NAME) == name


def is_active(record: SecretRecord) -> bool:
    """Labelled as managed: the catalog, on-push tests and rotations see it."""
    return record.labels.get(MANAGED_LABEL[0]) == MANAGED_LABEL[1]


def rotation_holder(record: SecretRecord, now: datetime) -> str | None:
    """Who holds an unexpired rotation lease on the record, if anyone.

    Provisioning must not put a key into Dataloop, or delete keys, while a rotation is
    between its steps: the rotation would then finish against a state it did not make.
    """
    lease = Lease.from_annotations(record.annotations)
    return lease.holder if lease is not None and lease.live(now) else None


#: Deprovision's lease holders start with this; a redelivered deprovision takes over its own.
DEPROVISION_HOLDER = "deprovision"


def take_rotation_lease(
    secrets: SecretStore, record: SecretRecord, holder: str, now: datetime, seconds: float
) -> SecretRecord:
    """Hold the record's rotation lease, so no rotation starts (or writes) until it is released.

    Taken with the record's etag, like a rotation's own; a deprovision's earlier lease
    (a redelivery of a deprovision that stopped half way) is taken over.

    Raises:
        TransientError: a rotation holds the lease; the request is redelivered after it ends.
    """
    lease = Lease(holder, now + timedelta(seconds=seconds))

    def take(current: SecretRecord) -> dict[str, Any] | None:
        held = Lease.from_annotations(current.annotations)
        if held is not None and held.live(now) and not held.holder.startswith(DEPROVISION_HOLDER):
            refuse_during_rotation(current, now)
        return {"annotations": {**current.annotations, Annotation.ROTATION_LEASE: lease.to_annotation()}}

    return update_record(secrets, record.secret_id, take, record=record)


def refuse_during_rotation(record: SecretRecord, now: datetime) -> None:
    """Raises:
    TransientError: a rotation holds the lease; the request is redelivered after it ends.
    """
    holder = rotation_holder(record, now)
    if holder is not None:
        what = "a deprovision" if holder.startswith(DEPROVISION_HOLDER) else "a key rotation"
        raise TransientError(
            f"{what} ({holder}) is in progress on {record.secret_id}; the request will be retried after it",
            code="rotation-in-progress",
        )


def retired_key_ids(record: SecretRecord) -> list[str]:
    """Key ids in the rotation's ``retired-keys`` annotation (malformed entries are skipped)."""
    return [e.key_id for e in retired_keys(record.annotations).values() if e.key_id]


def repository_paths(scopes: list[str] | tuple[str, ...], location: str) -> dict[str, str]:
    """``PROJECT/REPO`` scope -> the repository's resource path in ``location``."""
    paths = {}
    for scope in scopes:
        project, _, repository = scope.partition("/")
        paths[scope] = repository_path(project, location, repository)
    return paths


def recorded_paths(record: SecretRecord) -> dict[str, str]:
    """The repositories the record says this integration reads (scope -> path)."""
    notes = record.annotations
    scopes = [s.strip() for s in notes.get(Annotation.REPOSITORIES, "").split(",") if s.strip()]
    location = notes.get(Annotation.LOCATION) or location_of(notes.get(Annotation.REGISTRY_HOST, "")) or ""
    return repository_paths(scopes, location) if location else {}


def previous_paths(record: SecretRecord) -> dict[str, str]:
    """Repositories dropped by a later request whose grants may still stand (scope -> path)."""
    return _parse_paths(record.annotations.get(PREVIOUS_REPOSITORIES, ""))


def _parse_paths(text: str) -> dict[str, str]:
    """The inverse of :func:`format_paths`; malformed items are skipped."""
    found = {}
    for item in text.split(","):
        scope, _, path = item.partition("=")
        if scope and path:
            found[scope] = path
    return found


def grants_made(record: SecretRecord | None) -> dict[str, str]:
    """The grants a not-yet-active record's provisioning added (scope -> path)."""
    return {} if record is None else _parse_paths(record.annotations.get(GRANTS_MADE, ""))


def others_using_account(secrets: SecretStore, secret_id: str, email: str) -> list[SecretRecord]:
    """The managed integrations other than ``secret_id`` whose account is ``email``: their
    grants and the account itself must outlive this one (one filtered listing)."""
    if not email:
        return []
    return [
        other
        for other in secrets.list_secrets(MANAGED_FILTER)
        if other.secret_id != secret_id and other.annotations.get(Annotation.SERVICE_ACCOUNT) == email
    ]


def paths_needed_by(others: list[SecretRecord]) -> dict[str, str]:
    """Repository path -> the other record that still needs the account's grant on it."""
    return {
        path: other.secret_id
        for other in others
        for path in {**previous_paths(other), **recorded_paths(other)}.values()
    }


def format_paths(paths: dict[str, str]) -> str:
    return ",".join(f"{scope}={path}" for scope, path in sorted(paths.items()))


def last_test_annotation(summary: dict[str, Any]) -> str:
    """The ``last-test`` annotation: compact JSON, with the free text bounded (annotations
    share a 16 KiB budget with everything else on the secret)."""
    bounded = {k: (v[:300] if isinstance(v, str) else v) for k, v in summary.items()}
    return json.dumps(bounded, separators=(",", ":"), sort_keys=True)


def read_last_test(record: SecretRecord) -> dict[str, Any] | None:
    return json_annotation(record.annotations, Annotation.LAST_TEST)
