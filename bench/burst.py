"""Measurements 3 and 5: a burst of pushes through on_push and its yardsticks, and on_push's memory.

A CI pipeline pushes several images at once; ``on_push`` should then cost little more
than the HEAD each push needs. Four functions take the same bursts, in rounds, on the
same instances (started fresh for this, each warmed up first):

* ``on_push`` as deployed, publishing every result to the Pub/Sub emulator with the real
  client (the emulator runs on this machine: its CPU is part of what on_push costs here);
* the *naive* function: secret read, token and HEAD for every event;
* the *bare* function: only the HEAD, with a token in hand: the limit;
* *bare+publish*: the bare HEAD, then one result published with the project's own sink:
  the limit for a function that must report every verdict, as ``on_push`` must.

Each burst is 1,000 notifications over eight images, eight at a time, sent by a separate
process. The best round of each counts (noise on a shared machine only ever slows a
burst down). The worker's CPU time per event is reported too: it is what the instance is
billed for, and it does not depend on what else the machine runs.

Memory is ``on_push``'s worker RSS after its first event and after 1,000 more.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import launch, load
from bench.cloud import DIRECT, BenchCloud
from bench.notifications import Delivery, push_notification
from localcloud.stack import PushedImage

CONCURRENCY = 8
#: (directory, target) of the contestants.
CONTESTANTS = (("on_push", "on_push"), ("naive", "naive"), ("bare", "bare"), ("bare_publish", "bare_publish"))


@dataclass
class Contestant:
    name: str
    best_seconds: float = float("inf")
    rounds: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    events: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def cpu_ms_per_event(self) -> float:
        return self.cpu_seconds / self.events * 1000 if self.events else 0.0


@dataclass
class Memory:
    first_event_worker: int
    after_events_worker: int
    after_events_instance: int
    events: int

    @property
    def growth(self) -> float:
        return self.after_events_worker / self.first_event_worker - 1


@dataclass
class BurstResults:
    events: int
    rounds: int
    contestants: dict[str, Contestant]
    memory: Memory


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU time of ``pids`` so far.

    Raises:
        RuntimeError: a worker is gone (it crashed, and gunicorn replaced it mid-burst).
    """
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            raise RuntimeError(f"worker {pid} exited during the burst") from None
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measure(
    cloud: BenchCloud,
    images: Sequence[PushedImage],
    *,
    events: int,
    rounds: int,
    warmup: int,
    log_dir: Path,
) -> BurstResults:
    """Start the contestants, warm them up, run ``rounds`` bursts of ``events`` each, interleaved."""
    deliveries = [push_notification(images[i % len(images)], project=cloud.project) for i in range(events)]
    integration = cloud.integrations[DIRECT]
    env = cloud.function_env(
        BENCH_SECRET_ID=integration.secret_id,
        BENCH_TOKEN_REALM=cloud.cloud.token_realm,
        BENCH_TOKEN_SERVICE=cloud.cloud.token_endpoint.service,
    )
    contestants = {name: Contestant(name) for name, _ in CONTESTANTS}
    running: dict[str, launch.RunningFunction] = {}
    memory: Memory | None = None
    try:
        # One after the other, from this thread: each child is set to die with the thread that
        # started it (localcloud.processes), so a pool thread finishing would take it along.
        for name, target in CONTESTANTS:
            running[name] = launch.start(name, launch.source_of(name), target, env, deliveries[0], log_dir=log_dir)
            if running[name].first.status != 200:
                contestants[name].failures.append(f"first event: HTTP {running[name].first.status}")
        first_rss = running["on_push"].rss_bytes()[0]
        if warmup:
            for name, _ in CONTESTANTS:
                _burst(running[name], deliveries[:warmup], None)
        for round_number in range(rounds):
            # Rotate who goes first, so no contestant always follows the same one.
            shift = round_number % len(CONTESTANTS)
            order = CONTESTANTS[shift:] + CONTESTANTS[:shift]
            for name, _ in order:
                _burst(running[name], deliveries, contestants[name])
                if name == "on_push" and memory is None:
                    worker, instance = running[name].rss_bytes()
                    memory = Memory(first_rss, worker, instance, 1 + warmup + events)
    finally:
        for function in running.values():
            function.stop()
    assert memory is not None
    return BurstResults(events, rounds, contestants, memory)


def _burst(function: launch.RunningFunction, deliveries: Sequence[Delivery], into: Contestant | None) -> None:
    workers = function.worker_pids()
    cpu_before = cpu_seconds(workers)
    result = load.burst(function.url + "/", deliveries, CONCURRENCY)
    cpu_after = cpu_seconds(workers)
    if into is None:
        return
    if not result.all_ok:
        into.failures.append(f"statuses {result.statuses}")
    into.rounds.append(result.seconds)
    if result.seconds < into.best_seconds:
        into.best_seconds, into.p50_ms, into.p99_ms = result.seconds, result.p50_ms, result.p99_ms
    into.cpu_seconds += cpu_after - cpu_before
    into.events += result.sent
