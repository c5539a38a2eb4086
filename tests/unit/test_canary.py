"""The platform tier's watch, over in-memory Dataloop services."""

from __future__ import annotations

from shared.canary import CanaryTest
from tests.unit.fakes import FakeServices

SERVICE = "6543abcd"
BASE = "gcr.io/team/runner@sha256:" + "0" * 64
FIRST = "us-central1-docker.pkg.dev/proj/images/app@sha256:" + "1" * 64


def test_entries_from_before_the_restart_do_not_count_even_within_the_skew_second() -> None:
    """A run right before this one left a running replica; this restart's pull never finishes."""
    services = FakeServices(images={SERVICE: BASE}, restart_entry=None)
    services.report(SERVICE, status=True, message="the previous test's replica runs")

    verdict = CanaryTest(services, timeout=0.2, poll_interval=0.01).run(SERVICE, FIRST)

    assert not verdict.passed and verdict.code == "canary-timeout", verdict.reason
    assert services.images[SERVICE] == BASE
