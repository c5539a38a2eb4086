"""Provisioning's reference test: can the integration's key pull the image, as Dataloop would?

A key made moments ago may be refused for a minute or more while IAM propagates it
(docs/external-apis.md §3.4), so right after provisioning the check is *patient*: it retries refused
credentials (and an unreachable registry) with bounded, growing waits until a deadline.
An operator's ``test`` request is not patient: it reports what is true now. Either way the
verdict is recorded on the secret (``last-test``), which the ``status`` action reports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from shared.core.errors import TransientError
from shared.core.logs import log
from shared.model.images import RegistryImage
from shared.model.integrations import Annotation
from shared.model.keys import ServiceAccountKey
from shared.model.record import timestamp, update_record
from shared.ports import SecretStore
from shared.workflows.provisioning.records import (
    last_test_annotation,
    now_utc,
)
from shared.workflows.reference_test import ReferenceTest, Verdict

logger = logging.getLogger(__name__)

#: Only these failures can be IAM propagation; a missing image will not appear by waiting.
_WORTH_WAITING = frozenset({"credentials-refused"})


class PullCheck:
    """Runs the registry tier of the reference test for provisioning and ``test`` requests."""

    def __init__(
        self,
        reference_test: ReferenceTest,
        *,
        patience_seconds: float,
        first_wait_seconds: float = 2.0,
        longest_wait_seconds: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._test = reference_test
        self._patience = patience_seconds
        self._first_wait = first_wait_seconds
        self._longest_wait = longest_wait_seconds
        self._sleep = sleep
        self._clock = clock

    def check(self, image: RegistryImage, key: ServiceAccountKey, *, patient: bool) -> tuple[Verdict, int]:
        """The verdict and how many attempts it took.

        Raises:
            TransientError: the registry stayed unreachable (patient: until the deadline).
        """
        deadline = self._clock() + (self._patience if patient else 0.0)
        wait = self._first_wait
        attempts = 0
        while True:
            attempts += 1
            try:
                verdict = self._test.registry_tier(image, key)
            except TransientError as exc:
                if not patient or self._clock() + wait > deadline:
                    raise
                log(logger, logging.INFO, f"registry unreachable, retrying: {exc.reason}", image=str(image))
            else:
                if verdict.passed or verdict.code not in _WORTH_WAITING or not patient:
                    return verdict, attempts
                if self._clock() + wait > deadline:
                    return verdict, attempts
                log(
                    logger,
                    logging.INFO,
                    "key refused by the registry; waiting for IAM to propagate it",
                    image=str(image),
                    key_id=key.key_id,
                    attempt=attempts,
                )
            self._sleep(wait)
            wait = min(wait * 2, self._longest_wait)


def summary(image: RegistryImage, verdict: Verdict, attempts: int) -> dict[str, Any]:
    """What is recorded (``last-test``) and replied about one test: never key material."""
    return {
        "at": timestamp(now_utc()),
        "image": str(image),
        "tier": verdict.tier,
        "passed": verdict.passed,
        "code": verdict.code,
        "reason": verdict.reason,
        "digest": verdict.digest,
        "key_id": verdict.key_id,
        "attempts": attempts,
    }


def record_test(secrets: SecretStore, secret_id: str, result: dict[str, Any], *, challenge: str | None = None) -> None:
    """Write ``result`` as the secret's ``last-test`` annotation (under the etag).

    With the registry's ``challenge`` learnt during the test, record it too
    (``registry-challenge``): a cold ``on_push`` instance then goes straight to the token
    endpoint instead of first asking the registry how to authenticate.
    """
    wanted = {Annotation.LAST_TEST: last_test_annotation(result)}
    if challenge:
        wanted[Annotation.REGISTRY_CHALLENGE] = challenge
    update_record(
        secrets,
        secret_id,
        lambda record: (
            None
            if all(record.annotations.get(k) == v for k, v in wanted.items())
            else {"annotations": {**record.annotations, **wanted}}
        ),
    )
