"""Measurement 4: the scheduled rotation sweep over many managed integrations.

The sweep must read the managed secrets by listing them, a page per 250 (labels,
annotations and aliases come with the listing), never by reading each secret, and fan out
exactly one ``rotate`` message per due integration, so the rotations themselves run in
parallel instances. Here ``integrations`` managed secrets are created of which ``due``
were last rotated beyond the rotation period; the two integrations the bench provisioned
are fresh, so not due.

The sweep runs in a warm ``rotate`` instance: a first sweep creates its publisher, the
second is timed and counted (nothing consumes the rotation topic here, so the same
integrations are still due).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import launch
from bench.cloud import BenchCloud, CallCount
from bench.notifications import delivery
from shared.adapters.secrets import SecretManager
from shared.model.integrations import MANAGED_LABEL, SECRET_PREFIX, Annotation

#: Secret Manager's list page size as the adapter asks for it (shared/adapters/secrets.py).
PAGE_SIZE = 250


@dataclass
class SweepResult:
    managed: int
    due: int
    seconds: float
    calls: CallCount
    messages: int
    distinct: int
    matches_due: bool
    status: int

    @property
    def pages(self) -> int:
        return math.ceil(self.managed / PAGE_SIZE)

    @property
    def list_calls(self) -> int:
        return self.calls.of("secretmanager").count("list")


def seed(cloud: BenchCloud, *, integrations: int, due: int) -> list[str]:
    """Create ``integrations`` managed secrets, ``due`` of them due; returns the due secret ids."""
    secrets = SecretManager(cloud.project, endpoint=cloud.cloud.secret_manager_url, timeout=10.0)
    now = datetime.now(UTC)
    due_ids: list[str] = []
    for number in range(integrations):
        secret_id = f"{SECRET_PREFIX}sweep-{number:05d}"
        is_due = number % max(1, integrations // due) == 0 and len(due_ids) < due if due else False
        rotated = now - timedelta(days=40 if is_due else 1)
        secrets.create_secret(
            secret_id,
            labels=dict([MANAGED_LABEL]),
            annotations={
                Annotation.REGISTRY_HOST: cloud.direct_host,
                Annotation.REPOSITORIES: f"{cloud.project}/sweep-{number:05d}",
                Annotation.ROTATED_AT: rotated.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            },
        )
        if is_due:
            due_ids.append(secret_id)
    return due_ids


def measure(cloud: BenchCloud, *, integrations: int, due: int, log_dir: Path) -> SweepResult:
    sweep = delivery({"kind": "sweep"}, project=cloud.project, topic=cloud.cloud.topics.rotation)
    env = cloud.function_env()
    due_ids = seed(cloud, integrations=integrations, due=due)
    managed = integrations + len(cloud.integrations)
    with launch.running("rotate", launch.source_of("rotate"), "rotate", env, sweep, log_dir=log_dir) as function:
        collector = cloud.cloud.emulator.collector(
            cloud.cloud.emulator.ensure_pull_subscription(f"bench-fanout-{function.port}", cloud.cloud.topics.rotation)
        )
        try:
            with cloud.counting() as counted:
                started = time.perf_counter()
                answer = function.send(sweep)
                seconds = time.perf_counter() - started
            received = collector.drain(quiet_seconds=0.5, timeout=30.0)
        finally:
            cloud.cloud.delete_subscription(collector)
    rotations = Counter(
        m.json.get("integration") for m in received if isinstance(m.json, dict) and m.json.get("kind") == "rotate"
    )
    return SweepResult(
        managed=managed,
        due=len(due_ids),
        seconds=seconds,
        calls=counted["calls"],
        messages=sum(rotations.values()),
        distinct=len(rotations),
        matches_due=set(rotations) == set(due_ids) and all(n == 1 for n in rotations.values()),
        status=answer.status,
    )
