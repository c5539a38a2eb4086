"""One benchmark run: start the world, take every measurement, and turn them into the table.

Order matters. Cold starts and call counts come first, while the Secret Manager holds only
the two integrations the bench provisioned (so a catalog listing is one page); the bursts
next; the sweep last, because it adds a thousand managed secrets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import burst, coldstart, launch, sweep
from bench.cloud import BenchCloud, CallCount
from bench.notifications import delivery
from bench.table import Row, Verdict, check, megabytes, ratio
from localcloud.stack import PushedImage

#: Cloud Functions memory size the instance is held against.
FUNCTION_MEMORY_BYTES = 256 * 2**20
COLD_START_TARGET = 2.5
#: What on_push may add over hello-world + its libraries for a miss to count as explained.
OWN_COLD_START_SHARE = 1.25
BARE_TARGET = 1.3
GROWTH_TARGET = 0.10


@dataclass(frozen=True)
class Config:
    """How big each measurement is.

    ``events``, ``integrations`` and ``due`` are the benchmark's targets. ``rounds`` and
    ``warmup`` keep one noisy moment on a shared machine from deciding a ratio, and give the
    emulator's JIT and every instance's caches their steady state before anything is timed.
    """

    events: int = 1000
    rounds: int = 3
    warmup: int = 100
    cold_repeats: int = 7
    images: int = 8
    integrations: int = 1000
    due: int = 50


@dataclass
class Report:
    """Everything one run measured, and the table rows made of it (the smoke test reads both)."""

    config: Config
    cold: coldstart.ColdStarts
    bursts: burst.BurstResults
    sweep: sweep.SweepResult
    rows: list[Row] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        found = list(self.cold.failures)
        for contestant in self.bursts.contestants.values():
            found += [f"{contestant.name}: {f}" for f in contestant.failures]
        if self.sweep.status != 200:
            found.append(f"sweep: HTTP {self.sweep.status}")
        return found


def run(config: Config, workdir: Path, *, progress: Callable[[str], None] = lambda line: None) -> Report:
    """Take every measurement in a fresh local cloud under ``workdir``."""
    logs = workdir / "logs"
    if not launch.compile_sources():
        raise RuntimeError("the project's sources do not compile")
    with BenchCloud(workdir, progress=progress) as cloud:
        progress("pushing images")
        images = [cloud.push(f"burst-{n}", "v1") for n in range(config.images)]
        counted = coldstart.PushImages(
            cloud.push("calls-a", "v1"), cloud.push("calls-a", "v2"), cloud.push("calls-b", "v1")
        )
        progress("provisioning two integrations through the requests function")
        _provision(cloud, images[0], logs)
        progress(f"cold starts ({config.cold_repeats} of each function, then one with -X importtime)")
        cold = coldstart.measure(cloud, counted, repeats=config.cold_repeats, log_dir=logs)
        progress(f"bursts ({config.rounds} rounds of {config.events} pushes at concurrency {burst.CONCURRENCY})")
        bursts = burst.measure(
            cloud, images, events=config.events, rounds=config.rounds, warmup=config.warmup, log_dir=logs
        )
        progress(f"sweep over {config.integrations} managed integrations, {config.due} due")
        swept = sweep.measure(cloud, integrations=config.integrations, due=config.due, log_dir=logs)
    report = Report(config, cold, bursts, swept)
    report.rows = rows(report)
    return report


def _provision(cloud: BenchCloud, image: PushedImage, log_dir: Path) -> None:
    first = delivery(
        {"version": 1, "action": "status", "request_id": "bench-warmup"},
        project=cloud.project,
        topic=cloud.cloud.topics.requests,
    )
    env = cloud.function_env()
    with launch.running(
        "requests", launch.source_of("requests"), "on_request", env, first, log_dir=log_dir
    ) as function:
        cloud.provision(function, image)


# -- the table ---------------------------------------------------------------------------------


def rows(report: Report) -> list[Row]:
    return [
        *_cold_rows(report.cold),
        *_call_rows(report.cold),
        *_burst_rows(report.bursts),
        *_sweep_rows(report.sweep),
        *_memory_rows(report.bursts),
        *_failure_rows(report),
    ]


def _cold_rows(cold: coldstart.ColdStarts) -> list[Row]:
    base = cold.median("hello")
    repeats = len(cold.seconds["hello"])
    found = [
        Row(
            "1",
            "cold start, hello-world (process start → first event answered)",
            f"1.00x ({base:.2f} s; median of {repeats} rounds)",
            "baseline",
        )
    ]
    floor = cold.ratio("libraries")
    found.append(
        Row(
            "1",
            "cold start, hello-world + importing on_push's client libraries (the floor)",
            f"{floor:.2f}x ({cold.median('libraries'):.2f} s)",
        )
    )
    firsts = {"on_push": "a covered push", "requests": "a status request", "rotate": "the sweep"}
    for name, event in firsts.items():
        value = cold.ratio(name)
        result = f"{value:.2f}x ({cold.median(name):.2f} s)"
        if name == "on_push":
            # Missed, but by what the client libraries cost rather than by our code: explained.
            own = cold.ratio("on_push", base="libraries")
            verdict = check(value <= COLD_START_TARGET) if own > OWN_COLD_START_SHARE else Verdict.EXPLAINED
            verdict = Verdict.MET if value <= COLD_START_TARGET else verdict
            found.append(
                Row("1", f"cold start, {name} ({event})", result, f"≤ {COLD_START_TARGET}x", verdict),
            )
            found.append(
                Row("1", "cold start, on_push ÷ the floor (our code and the first event's calls)", f"{own:.2f}x")
            )
        else:
            found.append(Row("1", f"cold start, {name} ({event})", result))
    for name in ("hello", "libraries", "on_push", "requests", "rotate"):
        audit = cold.audits.get(name)
        if audit is None:
            continue
        top = ", ".join(f"{module} {ms:.0f}" for module, ms in audit.top)
        libraries = ", ".join(audit.libraries) or "none"
        result = f"{audit.modules} modules, {audit.total_ms:.0f} ms; top (ms): {top}; clients: {libraries}"
        if name in coldstart.NEVER_USED:
            unused = ", ".join(audit.unused) or "none unused"
            found.append(
                Row("1", f"imports, {name}", f"{result}; {unused}", "no unused client", check(not audit.unused))
            )
        else:
            found.append(Row("1", f"imports, {name}", result))
    return found


def _calls(count: CallCount) -> str:
    return f"{count.total} ({count.describe()})"


def _call_rows(cold: coldstart.ColdStarts) -> list[Row]:
    calls = cold.push_calls
    if calls is None:
        return [Row("2", "remote calls per push", "not measured", verdict=Verdict.MISSED)]
    first = calls.first
    # What a new instance cannot know yet: which integration covers the image (one listing).
    # The registry's token endpoint it reads from the integration (``registry-challenge``),
    # so an anonymous 401 round trip here counts against the target. See the README.
    learned = first.of("secretmanager").count("list")
    first_verdict = (
        Verdict.MET if first.total <= 3 else Verdict.EXPLAINED if first.total - learned <= 3 else Verdict.MISSED
    )
    dataloop = sum(
        len(c.of("dataloop")) + len(c.of("iam")) + len(c.of("artifactregistry"))
        for c in (first, calls.new_repository, calls.warm)
    )
    return [
        Row("2", "remote calls, push on a new instance", _calls(first), "≤ 3 (+ listing)", first_verdict),
        Row(
            "2",
            "remote calls, push of another image, warm instance",
            _calls(calls.new_repository),
            "≤ 3",
            check(calls.new_repository.total <= 3),
        ),
        Row("2", "remote calls, push on a warm instance", _calls(calls.warm), "≤ 1", check(calls.warm.total <= 1)),
        *_verdict_rows(calls),
        Row(
            "2",
            "Dataloop (and IAM, Artifact Registry) calls on the push path",
            str(dataloop),
            "0 (no canary)",
            check(dataloop == 0),
        ),
    ]


def _verdict_rows(calls: coldstart.PushCalls) -> list[Row]:
    """A push whose verdict changed costs the one write that records it; one that keeps it, nothing more."""
    if calls.changed is None or calls.still_failing is None or calls.recovered is None:
        return [Row("2", "remote calls, push whose verdict changed", "not measured", verdict=Verdict.MISSED)]
    return [
        Row(
            "2",
            "remote calls, warm push whose verdict changed (passed → failed)",
            _calls(calls.changed),
            "≤ 2",
            check(calls.changed.total <= 2),
        ),
        Row(
            "2",
            "remote calls, warm push failing again the same way",
            _calls(calls.still_failing),
            "≤ 1",
            check(calls.still_failing.total <= 1),
        ),
        Row(
            "2",
            "remote calls, warm push whose verdict changed back (failed → passed)",
            _calls(calls.recovered),
            "≤ 2",
            check(calls.recovered.total <= 2),
        ),
    ]


def _burst_rows(bursts: burst.BurstResults) -> list[Row]:
    order = ("on_push", "naive", "bare", "bare_publish")
    on_push, naive, bare, bare_publish = (bursts.contestants[n] for n in order)
    label = f"burst of {bursts.events:,} pushes at concurrency {burst.CONCURRENCY}, best of {bursts.rounds}"
    names = "on_push / naive / bare / bare+publish"
    times = " / ".join(f"{bursts.contestants[n].best_seconds:.2f}" for n in order)
    latency = " / ".join(f"{bursts.contestants[n].p50_ms:.0f}" for n in order)
    cpu = " / ".join(f"{bursts.contestants[n].cpu_ms_per_event:.2f}" for n in order)
    versus_bare = on_push.best_seconds / bare.best_seconds
    versus_publishing = on_push.best_seconds / bare_publish.best_seconds
    # The bare function reports nothing; on_push must publish every verdict. When the gap
    # to bare is the publishing, the README says so (see "Performance").
    bare_verdict = (
        Verdict.MET
        if versus_bare <= BARE_TARGET
        else Verdict.EXPLAINED
        if versus_publishing <= BARE_TARGET
        else Verdict.MISSED
    )
    return [
        Row(
            "3",
            f"{label}: on_push ÷ naive",
            ratio(on_push.best_seconds, naive.best_seconds),
            "< 1x",
            check(on_push.best_seconds < naive.best_seconds),
        ),
        Row(
            "3",
            f"{label}: on_push ÷ bare",
            ratio(on_push.best_seconds, bare.best_seconds),
            f"≤ {BARE_TARGET}x",
            bare_verdict,
        ),
        Row(
            "3",
            f"{label}: on_push ÷ bare+publish",
            ratio(on_push.best_seconds, bare_publish.best_seconds),
            f"≤ {BARE_TARGET}x",
            check(versus_publishing <= BARE_TARGET),
        ),
        Row("3", f"burst wall time, {names}", f"{times} s; p50 {latency} ms"),
        Row("3", f"function CPU per event, {names}", f"{cpu} ms"),
    ]


def _sweep_rows(result: sweep.SweepResult) -> list[Row]:
    others = result.calls.total - result.list_calls
    return [
        Row(
            "4",
            f"sweep over {result.managed:,} managed integrations, {result.due} due: wall time",
            f"{result.seconds:.2f} s",
        ),
        Row(
            "4",
            "sweep remote calls",
            f"{result.list_calls} list calls for {result.pages} pages of {sweep.PAGE_SIZE}; {others} other",
            "list calls = pages",
            check(result.list_calls == result.pages and others == 0),
        ),
        Row(
            "4",
            "sweep fan-out",
            f"{result.messages} messages for {result.distinct} integrations",
            f"one per due ({result.due})",
            check(result.matches_due and result.messages == result.due),
        ),
    ]


def _memory_rows(bursts: burst.BurstResults) -> list[Row]:
    memory = bursts.memory
    growth = f"{megabytes(memory.first_event_worker)} → {megabytes(memory.after_events_worker)} ({memory.growth:+.1%})"
    return [
        Row(
            "5",
            f"on_push worker RSS, after 1 event → after {memory.events:,}",
            growth,
            f"≤ +{GROWTH_TARGET:.0%}",
            check(memory.growth <= GROWTH_TARGET),
        ),
        Row(
            "5",
            "on_push instance RSS (arbiter + worker)",
            f"{megabytes(memory.after_events_instance)} of {megabytes(FUNCTION_MEMORY_BYTES)}",
            "< 256 MB",
            check(memory.after_events_instance < FUNCTION_MEMORY_BYTES),
        ),
    ]


def _failure_rows(report: Report) -> list[Row]:
    failures = report.failures
    if not failures:
        return []
    return [Row("!", "events not answered as expected", "; ".join(failures[:5]), "none", Verdict.MISSED)]
