"""The platform tier of the reference test: let Dataloop itself pull the image.

The registry tier proves the key works; only Dataloop can prove that Dataloop matches the
image's host to the integration and pulls with it (docs/external-apis.md §5.3, §5.4). Dataloop has no "test
integration" endpoint, so a canary service is pointed at ``image@digest``, restarted, and
watched until it runs or reports an image-pull error. Its original runner image is put
back in every case (pass, failure, timeout, error), because a canary left on a test image
would surprise whoever owns it.

Runs on one service never overlap: each holds the lease on the service's lock secret
(shared/workflows/canary_lock.py) from before it reads the service until after it restored it, and
the original image is recorded there once and restored from the record, never re-read
from a service that a dead run may have left on a test image.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.core import logs
from shared.core.errors import GarDataloopError, PermanentError
from shared.ports import ServiceControl
from shared.workflows.canary_lock import MISCONFIGURED, CanaryLock, Held
from shared.workflows.reference_test import Verdict

logger = logging.getLogger("dataloop_gar")


class CanaryTest:
    """Runs the platform tier against one canary service."""

    def __init__(
        self,
        services: ServiceControl,
        lock: CanaryLock,
        *,
        timeout: float = 300.0,
        poll_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._services = services
        self._lock = lock
        self._timeout = timeout
        self._poll = poll_interval
        self._clock = clock
        self._sleep = sleep

    def run(self, service_id: str, image: str) -> Verdict:
        """Under the service's lease: point ``service_id`` at ``image``, restart, watch, restore.

        Raises:
            TransientError: another run holds the service past the lock's wait (``canary-busy``),
                or Secret Manager or Dataloop could not be reached before the image was
                changed (nothing to restore yet); failures after the image was changed
                become a failing verdict, after the original image is restored.
        """
        started = time.perf_counter()
        try:
            held = self._lock.acquire(service_id)
        except PermanentError as exc:
            return self._verdict(False, exc.reason, started, exc.code)
        try:
            verdict, held = self._run_held(held, service_id, image, started)
        finally:
            self._lock.release(held)  # the latest record: one write, not a stale etag and a retry
        return verdict

    def _run_held(self, held: Held, service_id: str, image: str, started: float) -> tuple[Verdict, Held]:
        try:
            original = held.original
        except PermanentError as exc:
            return self._verdict(False, exc.reason, started, exc.code), held
        if original is None:
            try:
                held, original = self._record_original(held, service_id)
            except PermanentError as exc:  # the service is gone, or its image is not one: say so
                return self._verdict(False, exc.reason, started, exc.code), held
        if original is None:
            return self._verdict(
                False, f"canary service {service_id} has no runtime.runnerImage to restore", started, MISCONFIGURED
            ), held
        return self._test(service_id, image, original, started), held

    def _record_original(self, held: Held, service_id: str) -> tuple[Held, str | None]:
        """No run before this one recorded the original, and this run holds the lease: the
        service is on its own image now, not on some other run's test image."""
        from shared.model.dataloop import runner_image

        original = runner_image(self._services.get(service_id))
        return (held, None) if original is None else (self._lock.record_original(held, original), original)

    def _test(self, service_id: str, image: str, original: str, started: float) -> Verdict:
        try:
            earlier = {_identity(e) for e in self._services.status(service_id).entries}
            since = datetime.now(UTC) - timedelta(seconds=1)
            self._services.set_runner_image(service_id, image)
            self._services.restart(service_id)
            verdict = self._watch(service_id, image, since, earlier, started)
        except GarDataloopError as exc:
            verdict = self._verdict(
                False, f"canary test of {image} on service {service_id} broke off: {exc.reason}", started, exc.code
            )
        restore_error = self._restore(service_id, original)
        if restore_error:
            return Verdict(
                tier=verdict.tier,
                passed=verdict.passed,
                reason=f"{verdict.reason}; and restoring {original} failed: {restore_error}",
                code=verdict.code or "canary-restore-failed",
                digest=verdict.digest,
                duration_ms=verdict.duration_ms,
            )
        return verdict

    def _watch(self, service_id: str, image: str, since: datetime, earlier: set[str], started: float) -> Verdict:
        """Only entries this restart produced count: stamped after it (less a second of clock
        skew), and not already there before it, because a run right before this one (one
        push after another on the same canary) leaves entries inside that second."""
        deadline = self._clock() + self._timeout
        while True:
            entries = [e for e in self._services.status(service_id).since(since) if _identity(e) not in earlier]
            if any(entry.pull_failed for entry in entries):
                reason = next(e.reason for e in reversed(entries) if e.pull_failed)
                return self._verdict(
                    False,
                    f"Dataloop could not pull {image} on canary service {service_id}: {reason} "
                    "(does the integration hold a working key, and is its registry host the image's host?)",
                    started,
                    "image-pull-failed",
                )
            if any(entry.status for entry in entries):
                return self._verdict(True, f"Dataloop pulled and ran {image} on canary service {service_id}", started)
            if self._clock() >= deadline:
                return self._verdict(
                    False,
                    f"canary service {service_id} neither ran {image} nor reported a pull error within {self._timeout:g} s",
                    started,
                    "canary-timeout",
                )
            self._sleep(self._poll)

    def _restore(self, service_id: str, original: str) -> str | None:
        try:
            self._services.set_runner_image(service_id, original)
            self._services.restart(service_id)
        except GarDataloopError as exc:
            logs.log(
                logger, logging.ERROR, f"could not restore canary service {service_id} to {original}: {exc.reason}"
            )
            return exc.reason
        return None

    @staticmethod
    def _verdict(passed: bool, reason: str, started: float, code: str | None = None) -> Verdict:
        return Verdict(
            tier="platform",
            passed=passed,
            reason=reason,
            code=code if not passed else None,
            digest=None,
            duration_ms=(time.perf_counter() - started) * 1000,
        )


def _identity(entry: Any) -> str:
    """A runtime status entry as a comparable value; this code relies on no field naming an
    entry uniquely (``replicaId`` names a replica, which may report several times)."""
    return json.dumps(dict(entry.raw), sort_keys=True, default=str)
