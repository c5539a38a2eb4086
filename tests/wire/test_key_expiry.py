"""Keys that expire: an organisation's ``iam.serviceAccountKeyExpiryHours`` policy (docs/external-apis.md §3.3)
against the local cloud.

The IAM stand-in gives every new key a lifetime of a few seconds and its token endpoint refuses
a key past it, as Google's does. A sweep runs over and over, its fan-out rotating at once; a
prober pulls all the while with whatever Dataloop holds. With a 30-day rotation period, only
the expiry can make the rotations due, so the prober stays green only if the sweep rotates
every key before it expires.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from shared.adapters.registry import RegistryClient, RegistryCredential
from shared.core.errors import GarDataloopError
from shared.model.results import Outcome, Status
from shared.workflows.rotation.workflow import KeyRotation
from shared.workflows.sweep import Sweep
from tests.fixtures.rotation import EMAIL, SECRET_ID, Stack

pytestmark = pytest.mark.wire

#: Seconds a key lives; the sweep runs many times within it, and the test outlives several.
KEY_LIFETIME = 8.0
EXPIRIES = 3


class RotatingFanOut:
    """A fan-out that rotates each integration at once, as the rotate function would on delivery."""

    def __init__(self, rotation: KeyRotation) -> None:
        self._rotation = rotation
        self.outcomes: list[Outcome] = []

    def publish(self, messages: Sequence[Mapping[str, Any]]) -> int:
        for message in messages:
            self.outcomes.append(self._rotation.rotate(str(message["integration"])))
        return len(messages)


def test_a_sweep_keeps_dataloop_pulling_across_key_expiries(stack: Stack) -> None:
    stack.iam.state.set_key_expiry(KEY_LIFETIME)
    first = stack.provision(rotated_days_ago=0)  # just provisioned: the period is nowhere near
    fanout = RotatingFanOut(stack.rotation())
    sweep = Sweep(stack.secrets, fanout)
    prober = RegistryClient(insecure_hosts=[stack.host], timeout=5.0, retries=0)
    stop = threading.Event()
    pulls: list[tuple[str, str]] = []  # (key id, refusal or "")

    def probe() -> None:
        while not stop.is_set():
            credential = RegistryCredential(*stack.dataloop_credentials())
            prober.forget(credential)  # every pull asks the token endpoint, which checks the expiry
            try:
                prober.resolve(stack.canary.by_digest, credential)
                pulls.append((credential.key_id or "", ""))
            except GarDataloopError as exc:
                pulls.append((credential.key_id or "", exc.reason))
            time.sleep(0.05)

    thread = threading.Thread(target=probe, name="prober", daemon=True)
    thread.start()
    sweeps = []
    try:
        deadline = time.monotonic() + KEY_LIFETIME * EXPIRIES + 2
        while time.monotonic() < deadline:
            sweeps.append(sweep.run())
            time.sleep(0.25)
    finally:
        stop.set()
        thread.join(timeout=10)
        prober.close()

    failures = [(key, reason) for key, reason in pulls if reason]
    assert failures == [], failures[:3]
    assert all(s.status is Status.OK for s in sweeps)
    assert [o.status for o in fanout.outcomes] == [Status.OK] * len(fanout.outcomes), [
        o.reason for o in fanout.outcomes if o.status is not Status.OK
    ]
    assert len(fanout.outcomes) >= EXPIRIES  # each key was replaced before it expired
    keys_pulled_with = {key for key, _ in pulls}
    assert first in keys_pulled_with and len(keys_pulled_with) >= EXPIRIES + 1
    assert len(stack.iam.state.keys_of(EMAIL)) <= 3
    assert stack.dataloop_key() == stack.key_of("current", SECRET_ID)
