"""The scheduled sweep: find the integrations whose rotation is due and fan out one message each.

Cloud Scheduler publishes ``{"kind": "sweep"}`` on the rotation topic (hourly or daily;
the period of each integration decides, not the schedule). One sweep must not rotate a
thousand integrations in one loop inside one 540 s function: it lists the managed
secrets with ONE filtered ``list`` call (paged by the client; no per-secret reads, since
labels, annotations and aliases come with the listing) and publishes one
``{"kind": "rotate", "integration": SECRET_ID}`` per due integration on the same topic,
so the rotations run in parallel function instances.

Due means ``rotated-at`` + period ≤ now (period from the ``rotation-period`` annotation,
else the default), or the ``current`` key expires within the safety margin (its
``key-expires-at`` annotation, under an organisation's key-expiry policy: docs/external-apis.md
§3.3), or never rotated, or an interrupted rotation (``pending`` exists). The result names the
integrations due because of their key's expiry, and those whose key has already expired
(Dataloop cannot pull with it: the rotation is late, and someone should know why).
A secret whose lease is live is being rotated right now and is left out. A duplicate
message is harmless: the rotation re-checks due-ness and takes the lease with an etag.

The listing is also the one place that sees every key's age at once, so the sweep logs one
``key_age`` line per well-formed integration (the key-age distribution in deploy/monitoring.py
takes one number per line: docs/external-apis.md §9.1) and names the oldest key in its result.
An integration never rotated (or whose ``rotated-at`` is unreadable) has no age and no line:
it is due, the result lists it, and the next sweep sees the age its rotation wrote. A dry run
logs none, so an operator's look does not count every key twice in that hour's distribution.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shared.core import logs
from shared.core.errors import PermanentError
from shared.model.integrations import MANAGED_FILTER, ManagedIntegration
from shared.model.lease import Lease
from shared.model.record import timestamp
from shared.model.results import Outcome, Status
from shared.model.schedule import (
    DEFAULT_EXPIRY_MARGIN_SECONDS,
    due_by_expiry,
    is_due,
    key_age_days,
    key_expires_at,
)
from shared.ports import FanOut, SecretLister

KIND = "rotation-sweep"
#: Lists in the result are cut at this length (counts are always complete).
MAX_LISTED = 200
logger = logging.getLogger("dataloop_gar")


def rotate_message(secret_id: str) -> dict[str, Any]:
    """The fan-out message for one integration (what ``functions/rotate`` accepts as ``rotate``)."""
    return {"kind": "rotate", "integration": secret_id}


class Sweep:
    """Finds due integrations and fans out their rotations."""

    def __init__(
        self,
        secrets: SecretLister,
        fanout: FanOut,
        *,
        default_period_seconds: float = 30 * 86400.0,
        expiry_margin_seconds: float = DEFAULT_EXPIRY_MARGIN_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``expiry_margin_seconds``: the least notice of a key's expiry (the rotation must use the
        same, or it would refuse as not due what the sweep sent it)."""
        self._secrets = secrets
        self._fanout = fanout
        self.default_period_seconds = default_period_seconds
        self.expiry_margin_seconds = expiry_margin_seconds
        self._clock = clock

    def run(self, *, dry_run: bool = False, request_id: str | None = None) -> Outcome:
        """One sweep; ``dry_run`` lists what is due and publishes nothing.

        Raises:
            TransientError: Secret Manager or Pub/Sub unavailable; the sweep is redelivered
                (the rotations it already fanned out are then skipped as not due, or as in
                progress, so nothing rotates twice).
        """
        started = time.perf_counter()
        now = self._clock()
        records = self._secrets.list_secrets(MANAGED_FILTER)
        due: list[str] = []
        busy: list[str] = []
        invalid: dict[str, str] = {}
        expiring: dict[str, str] = {}  # due because the key expires: secret id -> key-expires-at
        expired: list[str] = []
        oldest: tuple[float, str] | None = None
        for record in records:
            try:
                integration = ManagedIntegration.from_secret(record)
            except PermanentError as exc:
                invalid[record.secret_id] = exc.reason
                continue
            expires = key_expires_at(record.annotations)
            age = key_age_days(record.annotations, now)
            if age is not None:
                if not dry_run:
                    _log_key_age(integration, age, expires)
                if oldest is None or age > oldest[0]:
                    oldest = (age, record.secret_id)
            if expires is not None and expires <= now:
                expired.append(record.secret_id)
            if not is_due(record, now, self.default_period_seconds, self.expiry_margin_seconds):
                continue
            if expires is not None and due_by_expiry(record, self.default_period_seconds, self.expiry_margin_seconds):
                expiring[record.secret_id] = timestamp(expires)
            lease = Lease.from_annotations(record.annotations)
            if lease is not None and lease.live(now):
                busy.append(record.secret_id)
            else:
                due.append(record.secret_id)
        published = 0 if dry_run else self._fanout.publish([rotate_message(s) for s in due])
        verb = "would publish" if dry_run else "published"
        reason = (
            f"{len(due)} of {len(records)} managed integrations due; {verb} {len(due)} rotation messages"
            + (f"; {len(expiring)} because their key expires soon" if expiring else "")
            + (f"; {len(expired)} with a key that has EXPIRED (Dataloop cannot pull)" if expired else "")
            + (f"; {len(busy)} already rotating" if busy else "")
            + (f"; {len(invalid)} malformed, left out" if invalid else "")
        )
        details: dict[str, Any] = {
            "managed": len(records),
            "due_count": len(due),
            "published": published,
            "dry_run": dry_run,
            "due": due[:MAX_LISTED],
        }
        if oldest is not None:
            details["oldest_key_age_days"], details["oldest_key_integration"] = oldest
        if expiring:
            details["key_expiring"] = dict(list(expiring.items())[:MAX_LISTED])
        if expired:
            details["key_expired"] = expired[:MAX_LISTED]
        if busy:
            details["in_progress"] = busy[:MAX_LISTED]
        if invalid:
            details["invalid"] = dict(list(invalid.items())[:MAX_LISTED])
        return Outcome(
            KIND,
            Status.SKIPPED if dry_run else Status.OK,
            reason,
            code="dry-run" if dry_run else None,
            details=details,
            durations_ms={"total": (time.perf_counter() - started) * 1000},
            request_id=request_id,
        )


def _log_key_age(integration: ManagedIntegration, age_days: float, expires: datetime | None) -> None:
    """One line per key, naming the integration and nothing of the key but its age and expiry;
    ``key_age`` is the field the key-age metric reads (deploy/monitoring.py). ``integration`` is
    the name, as in every other metric's ``integration`` label, so that charts of both line up."""
    logs.log(
        logger,
        logging.INFO,
        f"key of {integration.name} is {age_days:.1f} days old",
        key_age={
            "integration": integration.name,
            "secret": integration.secret_id,
            "age_days": age_days,
            "expires_at": timestamp(expires) if expires else None,
        },
    )
