"""Measurements 1 and 2: cold starts against a hello-world, what each function imports, and
the remote calls one push costs on a new and on a warm instance.

Every function is started fresh for each cold start, as Cloud Functions starts a new
instance, and given its most common first event: ``on_push`` a push of a covered image,
``requests`` a status request, ``rotate`` the scheduler's sweep. The hello-world gets the
same push notification and does nothing with it, so the difference is the function's own
imports, clients and work.

Imports are recorded in one more start of each function (``-X importtime`` slows imports
a little, so it is kept out of the timed starts), which also handles the events that
reach the rest of the function: the warm pushes for ``on_push``, a forced key rotation for
``rotate``. A function that imported a client library it never calls on any of them would
be paying for it at every cold start.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench import launch
from bench.cloud import COUNTED, BenchCloud, CallCount
from bench.notifications import Delivery, delivery, push_notification
from localcloud.stack import PushedImage

#: (directory, functions-framework target) of each function measured, hello-world first.
FUNCTIONS: tuple[tuple[str, str], ...] = (
    ("hello", "hello"),
    ("libraries", "libraries"),  # hello-world plus the client libraries on_push imports
    ("on_push", "on_push"),
    ("requests", "on_request"),
    ("rotate", "rotate"),
)

#: Module prefixes each function never calls on any path (no canary configured for on_push).
NEVER_USED: Mapping[str, tuple[str, ...]] = {
    "on_push": (
        "google.cloud.iam_admin",
        "google.cloud.artifactregistry",
        "google.cloud.pubsub_v1",  # the batching publisher: results go out by one generated-client call
        "google.cloud.logging",
        "shared.adapters.dataloop",
        "shared.adapters.iam",
        "shared.adapters.artifact_registry",
        "shared.workflows.provisioning",
        "shared.workflows.rotation",
    ),
    "requests": ("google.cloud.logging",),
    "rotate": (
        "google.cloud.artifactregistry",
        "google.cloud.logging",
        "shared.adapters.artifact_registry",
        "shared.workflows.provisioning",
    ),
}

#: Client libraries worth naming in the table when a function loads them.
CLIENT_LIBRARIES = (
    "google.cloud.secretmanager",
    "google.pubsub_v1",
    "google.cloud.pubsub_v1",
    "google.cloud.iam_admin_v1",
    "google.cloud.artifactregistry_v1",
    "shared.adapters.dataloop",
    "grpc",
    "requests",
)


@dataclass
class ImportAudit:
    function: str
    total_ms: float
    modules: int
    top: list[tuple[str, float]]  # top-level imports by cumulative milliseconds
    libraries: list[str]
    unused: list[str]  # loaded modules under NEVER_USED prefixes


@dataclass
class PushCalls:
    """Remote calls of one push, on a new instance and on warm ones."""

    first: CallCount  # the instance's first event: nothing known yet
    new_repository: CallCount  # warm instance, an image it has not tested (new token scope)
    warm: CallCount  # warm instance, another push of an image it has tested (verdict unchanged: passed)
    changed: CallCount | None = None  # warm instance, a push whose verdict changed (passed -> failed: recorded)
    still_failing: CallCount | None = None  # warm instance, failing again with the same code (nothing written)
    recovered: CallCount | None = None  # warm instance, passing again (failed -> passed: recorded)


@dataclass
class ColdStarts:
    seconds: dict[str, list[float]] = field(default_factory=dict)
    audits: dict[str, ImportAudit] = field(default_factory=dict)
    push_calls: PushCalls | None = None
    failures: list[str] = field(default_factory=list)

    def median(self, function: str) -> float:
        return statistics.median(self.seconds[function])

    def ratio(self, function: str, base: str = "hello") -> float:
        """Median of the per-round ratios: each round starts every function back to back, so a
        round's ratio is taken under one load, whatever the rest of the machine does later."""
        pairs = zip(self.seconds[function], self.seconds[base], strict=True)
        return statistics.median(value / reference for value, reference in pairs)


@dataclass(frozen=True)
class PushImages:
    """The images the call counts use: named by the counting front's host."""

    first: PushedImage  # image a, tag v1
    same_scope: PushedImage  # image a, tag v2 (another digest, same repository scope)
    other_scope: PushedImage  # image b

    @property
    def missing(self) -> PushedImage:
        """Image a under a digest the registry does not hold: a push that fails ``image-missing``."""
        return PushedImage(replace(self.same_scope.image, tag="gone", digest="sha256:" + "0" * 64))


def first_events(cloud: BenchCloud, images: PushImages) -> dict[str, Delivery]:
    push = push_notification(images.first, project=cloud.project, host=cloud.front_host)
    return {
        "hello": push,
        "libraries": push,
        "on_push": push,
        "requests": delivery(
            {"version": 1, "action": "status", "request_id": "bench-status"},
            project=cloud.project,
            topic=cloud.cloud.topics.requests,
        ),
        "rotate": delivery({"kind": "sweep"}, project=cloud.project, topic=cloud.cloud.topics.rotation),
    }


def measure(cloud: BenchCloud, images: PushImages, *, repeats: int, log_dir: Path) -> ColdStarts:
    """``repeats`` timed cold starts of each function (interleaved), then one audited start each.

    With ``repeats=0`` the audited starts are the timed ones (a quick run: ``-X importtime``
    adds its own overhead to every start alike).
    """
    found = ColdStarts()
    events = first_events(cloud, images)
    env = cloud.function_env()
    for _ in range(repeats):
        for name, target in FUNCTIONS:
            function = launch.start(name, launch.source_of(name), target, env, events[name], log_dir=log_dir)
            try:
                _expect(found, function, function.first, _expected_outcome(name))
                found.seconds.setdefault(name, []).append(function.cold_start_seconds)
            finally:
                function.stop()
    for name, target in FUNCTIONS:
        with cloud.counting() as first_calls:
            function = launch.start(
                name, launch.source_of(name), target, env, events[name], log_dir=log_dir, importtime=True
            )
        try:
            _expect(found, function, function.first, _expected_outcome(name))
            if not repeats:
                found.seconds.setdefault(name, []).append(function.cold_start_seconds)
            if name == "on_push":
                found.push_calls = _warm_pushes(cloud, function, images, first_calls["calls"], found)
            if name == "rotate":
                _rotate_once(cloud, function, found)
            found.audits[name] = audit(name, function.imports())
        finally:
            function.stop()
    return found


def _warm_pushes(
    cloud: BenchCloud, function: launch.RunningFunction, images: PushImages, first: CallCount, found: ColdStarts
) -> PushCalls:
    with cloud.counting() as other:
        answer = function.send(push_notification(images.other_scope, project=cloud.project, host=cloud.front_host))
    _expect(found, function, answer, "passed")
    with cloud.counting() as warm:
        answer = function.send(push_notification(images.same_scope, project=cloud.project, host=cloud.front_host))
    _expect(found, function, answer, "passed")
    # The verdict is recorded only when it changes: a manifest the registry lacks (same scope, so
    # the token is cached) fails the push, once to change it and once more to keep it; pushing
    # the image that passes changes it back, so the bursts after this start from a passing record.
    missing = push_notification(images.missing, project=cloud.project, host=cloud.front_host)
    counts = []
    for delivery_, status in (
        (missing, "failed"),
        (missing, "failed"),
        (push_notification(images.same_scope, project=cloud.project, host=cloud.front_host), "passed"),
    ):
        with cloud.counting() as counted:
            answer = function.send(delivery_)
        _expect(found, function, answer, status)
        counts.append(counted["calls"])
    return PushCalls(
        first=first,
        new_repository=other["calls"],
        warm=warm["calls"],
        changed=counts[0],
        still_failing=counts[1],
        recovered=counts[2],
    )


def _rotate_once(cloud: BenchCloud, function: launch.RunningFunction, found: ColdStarts) -> None:
    """A forced rotation of the counted integration: IAM, the registry test, Dataloop, Secret Manager."""
    secret_id = cloud.integrations[COUNTED].secret_id
    message = delivery(
        {"kind": "rotate", "integration": secret_id, "force": True},
        project=cloud.project,
        topic=cloud.cloud.topics.rotation,
    )
    _expect(found, function, function.send(message), "ok")


def _expected_outcome(name: str) -> str | None:
    return {"on_push": "passed", "requests": "ok", "rotate": "ok"}.get(name)


def _expect(found: ColdStarts, function: launch.RunningFunction, answer: launch.Answer, status: str | None) -> None:
    """Record a failure unless the event was answered 200 and (when it logs one) ended as ``status``."""
    if answer.status != 200:
        found.failures.append(f"{function.name}: HTTP {answer.status}")
        return
    if status is None:
        return
    outcomes = [r["outcome"].get("status") for r in function.process.json_lines() if isinstance(r.get("outcome"), dict)]
    if not outcomes or outcomes[-1] != status:
        found.failures.append(f"{function.name}: outcome {outcomes[-1:] or 'none'}, expected {status}")


def audit(function: str, records: Sequence[launch.ImportRecord]) -> ImportAudit:
    top = sorted((r for r in records if r.depth == 0), key=lambda r: r.cumulative_us, reverse=True)
    names = {r.module for r in records}
    libraries = [lib for lib in CLIENT_LIBRARIES if lib in names]
    unused = sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in NEVER_USED.get(function, ())))
    return ImportAudit(
        function=function,
        total_ms=sum(r.cumulative_us for r in top) / 1000,
        modules=len(names),
        top=[(r.module, r.cumulative_us / 1000) for r in top[:4]],
        libraries=libraries,
        unused=unused,
    )
