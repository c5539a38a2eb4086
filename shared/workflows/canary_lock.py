"""One platform-tier run per canary service at a time, and the service's original image, kept once.

A canary service is shared: every push an integration with that ``canary-service`` tests
points it at a test image and back. Two such runs at once would race: the second would
read the first one's test image as "the original" and restore that. So each canary
service has a *lock secret*, ``dataloop-gar_canary-SERVICE_ID``, holding two annotations:

- ``canary-lease``: ``{"holder", "expires"}`` of the run that may touch the service now
  (a :class:`shared.model.lease.Lease`, taken and dropped with the secret's etag, as rotations
  take theirs);
- ``canary-original``: the runner image to restore. It is read from the service once, by
  the first run that holds the lease, and written before the service is changed; every
  later run restores it from here, because the service itself may be on a test image
  (a run that died mid-test, with its lease since expired). To let the canary's owner
  change its image, they set this annotation (or remove it, with no test in flight).

The lock secret has no versions and carries no ``managed-by`` label, so the catalog and
rotations never see it. Provisioning creates it (:func:`ensure_lock`); ``on_push`` only
reads and updates it: its IAM grant is conditioned on the name prefix, and a condition on
``resource.name`` cannot narrow a *create*, which Secret Manager checks on the project.

Facts relied on (Secret Manager REST reference, ``projects.secrets.create``): a secret id
is at most 255 characters of letters, numerals, ``-`` and ``_``. Dataloop service ids
are accepted here only in the form requests accept them (shared/model/request.py), so
the annotation, which anyone who may edit the managed secret can change, cannot build
any other name.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from shared.core import logs
from shared.core.errors import Conflict, PermanentError, TransientError
from shared.model.lease import Lease, timestamp
from shared.model.record import SecretRecord, update_record
from shared.model.request import SERVICE_ID
from shared.ports import LockCreator, PushSecrets

logger = logging.getLogger("dataloop_gar")

LOCK_PREFIX = "dataloop-gar_canary-"
LEASE = "canary-lease"
ORIGINAL = "canary-original"
SERVICE = "canary-service"
#: Labels say what the secret is to whoever lists secrets; none of them is ``managed-by``.
LOCK_LABEL = ("dataloop-gar", "canary-lock")
#: A recorded original that is not one token of reasonable length is not an image reference.
_IMAGE = re.compile(r"[^\s\x00-\x1f\x7f]{1,2048}")
#: A lease lasts the watch timeout plus this: the calls before the watch and the restore after
#: it are HTTP calls, each with its own timeout and retries.
LEASE_MARGIN_SECONDS = 120.0
MISCONFIGURED = "canary-misconfigured"
BUSY = "canary-busy"


def lock_secret_id(service_id: str) -> str:
    """The lock secret of ``service_id``.

    Raises:
        PermanentError: ``canary-misconfigured``, the id is not a Dataloop service id.
    """
    if not isinstance(service_id, str) or not SERVICE_ID.fullmatch(service_id):
        raise PermanentError(
            f"canary service id {str(service_id)[:80]!r} is not a Dataloop service id (letters, digits and '-', "
            "at most 64); fix the integration's canary.service_id and re-provision it",
            code=MISCONFIGURED,
        )
    return LOCK_PREFIX + service_id


def ensure_lock(secrets: LockCreator, service_id: str) -> str:
    """Create the lock secret of ``service_id`` unless it exists ("created" or "exists").

    Several integrations may share one canary service, and so one lock: an existing lock
    is left exactly as it is (a run may hold it right now).

    Raises:
        PermanentError: the service id is not one (``canary-misconfigured``), or Secret
            Manager refused the create.
    """
    secret_id = lock_secret_id(service_id)
    try:
        secrets.create_secret(secret_id, labels=dict([LOCK_LABEL]), annotations={SERVICE: service_id})
    except Conflict as exc:
        if exc.code != "already-exists":
            raise
        return "exists"
    return "created"


@dataclass(frozen=True)
class Held:
    """A lease this run holds on one canary service's lock."""

    service_id: str
    secret_id: str
    holder: str
    record: SecretRecord
    took_over: str | None = None  # the holder whose expired lease this run took over

    @property
    def original(self) -> str | None:
        """The recorded original image, if one was recorded (and reads as an image reference).

        Raises:
            PermanentError: ``canary-misconfigured``, the recorded value is not an image reference.
        """
        raw = self.record.annotations.get(ORIGINAL)
        if raw is None or raw == "":
            return None
        if not _IMAGE.fullmatch(raw):
            raise PermanentError(
                f"annotation {ORIGINAL!r} of secret {self.secret_id} is not an image reference; set it to the "
                f"image canary service {self.service_id} should run (or remove it while no test is in flight)",
                code=MISCONFIGURED,
            )
        return raw


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CanaryLock:
    """Takes, uses and drops the lease on a canary service's lock secret.

    Args:
        lease_seconds: how long a run may hold the service; longer than a whole run
            (watch timeout plus restore), so that only a run that died loses it.
        wait_seconds: how long a run waits for another run's lease before it gives up
            with a TransientError, so that Pub/Sub redelivers the push later instead of
            the function sitting idle towards its own timeout.
        poll_seconds: how often a waiting run looks again.
    """

    def __init__(
        self,
        secrets: PushSecrets,
        *,
        lease_seconds: float,
        wait_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._secrets = secrets
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep

    def acquire(self, service_id: str) -> Held:
        """Take the service's lease, waiting up to ``wait_seconds`` for another run's to end.

        An expired lease is taken over (its run died or overran; the recorded original is
        what gets restored).

        Raises:
            PermanentError: ``canary-misconfigured``: a bad service id, or no lock secret.
            TransientError: ``canary-busy``: another run still holds it after the wait; or
                Secret Manager is unavailable.
        """
        secret_id = lock_secret_id(service_id)
        holder = f"canary-{uuid.uuid4().hex[:16]}"
        deadline = self._monotonic() + self.wait_seconds
        while True:
            record = self._read(service_id, secret_id)
            now = self._clock()
            held = Lease.from_annotations(record.annotations, LEASE)
            if held is not None and held.live(now):
                left = deadline - self._monotonic()
                if left <= 0:
                    raise TransientError(
                        f"canary service {service_id} is being tested by run {held.holder} (lease on secret "
                        f"{secret_id} until {timestamp(held.expires)}); waited {self.wait_seconds:g} s, the push "
                        "is redelivered and tested again later. If no test is running, the lease expires by itself "
                        f"at that time, or remove annotation {LEASE!r} of {secret_id}",
                        code=BUSY,
                    )
                self._sleep(min(self.poll_seconds, left))
                continue
            notes = dict(record.annotations)
            notes[LEASE] = Lease(holder, now + timedelta(seconds=self.lease_seconds)).to_annotation()
            try:
                record = self._secrets.update_secret(secret_id, etag=record.etag, annotations=notes)
            except Conflict as exc:
                if exc.code != "etag-mismatch" or self._monotonic() >= deadline:
                    raise
                continue  # another run wrote first: read again and find its lease (or not)
            took_over = held.holder if held is not None else None
            if took_over:
                logs.log(
                    logger,
                    logging.WARNING,
                    f"took over the expired canary lease of run {took_over} on service {service_id}",
                    secret_id=secret_id,
                    holder=holder,
                )
            return Held(service_id, secret_id, holder, record, took_over)

    def record_original(self, held: Held, image: str) -> Held:
        """Record ``image`` as the service's original, unless one is recorded already (that one stays).

        Raises:
            PermanentError: ``canary-misconfigured``, ``image`` (Dataloop's answer) is not
                an image reference; nothing is recorded.
            TransientError: the lease was lost (the run must not touch the service), or
                the lock kept changing, or Secret Manager is unavailable.
        """
        if not _IMAGE.fullmatch(image):
            raise PermanentError(
                f"Dataloop reports a runner image for canary service {held.service_id} that is not an image "
                f"reference ({image[:80]!r}…); fix the service's runtime.runnerImage in Dataloop",
                code=MISCONFIGURED,
            )

        def record_once(current: SecretRecord) -> dict[str, object] | None:
            self._check_holder(held, current)
            if current.annotations.get(ORIGINAL):
                return None
            return {"annotations": {**current.annotations, ORIGINAL: image}}

        return replace(held, record=update_record(self._secrets, held.secret_id, record_once, record=held.record))

    def release(self, held: Held) -> bool:
        """Drop this run's lease; never raises (an undropped lease expires by itself)."""

        def drop(current: SecretRecord) -> dict[str, object] | None:
            lease = Lease.from_annotations(current.annotations, LEASE)
            if lease is None or lease.holder != held.holder:
                return None  # not ours any more: nothing of ours to drop
            return {"annotations": {k: v for k, v in current.annotations.items() if k != LEASE}}

        try:
            update_record(self._secrets, held.secret_id, drop, record=held.record)
            return True
        except (TransientError, PermanentError) as exc:
            logs.log(
                logger,
                logging.WARNING,
                f"could not release the canary lease on service {held.service_id}; it expires by itself: {exc.reason}",
                secret_id=held.secret_id,
                holder=held.holder,
            )
        return False

    def _read(self, service_id: str, secret_id: str) -> SecretRecord:
        try:
            return self._secrets.get_secret(secret_id)
        except PermanentError as exc:
            if exc.code != "not-found":
                raise PermanentError(
                    f"cannot read the lock secret {secret_id} of canary service {service_id}: {exc.reason} "
                    "(on_push needs secretmanager.secrets.get and .update on dataloop-gar_canary-* secrets; "
                    "redeploy to grant them)",
                    code=exc.code,
                ) from exc
            raise PermanentError(
                f"canary service {service_id} has no lock secret {secret_id}, so it cannot be tested safely; "
                "re-send the integration's provision request (with canary.service_id) to create it",
                code=MISCONFIGURED,
            ) from exc

    def _check_holder(self, held: Held, record: SecretRecord) -> None:
        lease = Lease.from_annotations(record.annotations, LEASE)
        if lease is None or lease.holder != held.holder:
            raise TransientError(
                f"this run ({held.holder}) lost the canary lease on service {held.service_id} before changing it "
                f"({'run ' + lease.holder + ' holds it' if lease else 'no one holds it'}); the push is redelivered",
                code=BUSY,
            )
