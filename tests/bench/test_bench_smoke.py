"""The benchmark in miniature, so ``python -m bench`` cannot rot between the times someone runs it.

One tiny run (20 pushes per burst, one round, 40 managed integrations) takes every
measurement through the same code as the real one. Timings on a shared machine prove
nothing, so only structure is asserted, plus the targets that do not depend on timing:
remote calls per push, no Dataloop call without a canary, no unused client library, and
a sweep that lists by pages and fans out exactly once per due integration.

The last tests pin the two changes the bench's table led to in ``shared/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import machine
from bench.run import Config, Report, run
from bench.table import Verdict, render

pytestmark = pytest.mark.e2e

SMOKE = Config(events=20, rounds=1, warmup=0, cold_repeats=0, images=2, integrations=40, due=5)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Report]:
    yield run(SMOKE, Path(tmp_path_factory.mktemp("bench")))


def test_every_event_was_answered_as_expected(report: Report) -> None:
    assert report.failures == []


def test_the_table_covers_the_five_measurements(report: Report) -> None:
    assert {row.section for row in report.rows} == {"1", "2", "3", "4", "5"}
    text = render(report.rows, title="t", machine=machine.describe(), command="python -m bench")
    assert "nproc" in text and "Python 3." in text and "`python -m bench`" in text
    assert text.count("\n| ") == len(report.rows) + 1  # header and one line per row


def test_cold_starts_were_measured_for_each_function(report: Report) -> None:
    assert set(report.cold.seconds) == {"hello", "libraries", "on_push", "requests", "rotate"}
    assert all(seconds and min(seconds) > 0 for seconds in report.cold.seconds.values())


def test_no_function_imports_a_client_library_it_never_calls(report: Report) -> None:
    audits = report.cold.audits
    assert set(audits) == {"hello", "libraries", "on_push", "requests", "rotate"}
    assert {name: audit.unused for name, audit in audits.items()} == {name: [] for name in audits}
    assert "google.cloud.secretmanager" in audits["on_push"].libraries  # the audit does see imports
    assert "shared.adapters.dataloop" in audits["rotate"].libraries  # the forced rotation reached Dataloop


def test_the_cold_start_floor_imports_exactly_the_client_libraries_on_push_does(report: Report) -> None:
    audits = report.cold.audits
    on_push = [lib for lib in audits["on_push"].libraries if not lib.startswith("shared.")]
    assert audits["libraries"].libraries == on_push


def test_a_warm_push_costs_one_manifest_head(report: Report) -> None:
    calls = report.cold.push_calls
    assert calls is not None
    assert calls.warm.by_peer["registry"] == ("HEAD manifest",)
    assert calls.warm.total == 1


def test_another_image_on_a_warm_instance_costs_a_token_and_a_head(report: Report) -> None:
    calls = report.cold.push_calls
    assert calls is not None
    assert calls.new_repository.of("registry-token") == ("token",)
    assert calls.new_repository.of("registry") == ("HEAD manifest",)
    assert calls.new_repository.total <= 3


def test_a_new_instance_adds_only_the_listing(report: Report) -> None:
    calls = report.cold.push_calls
    assert calls is not None
    first = calls.first
    assert sorted(first.of("secretmanager")) == ["access", "list"]
    assert first.of("registry-token") == ("token",)
    # No anonymous HEAD to learn the challenge: provisioning recorded it on the integration.
    assert first.of("registry") == ("HEAD manifest",)
    assert first.total - 1 <= 3  # secret access, token, HEAD; see the README on the listing


def test_the_push_path_never_calls_dataloop_without_a_canary(report: Report) -> None:
    calls = report.cold.push_calls
    assert calls is not None
    for count in (calls.first, calls.new_repository, calls.warm):
        assert count.of("dataloop") == () and count.of("iam") == () and count.of("artifactregistry") == ()
    row = next(r for r in report.rows if r.measurement.startswith("Dataloop"))
    assert row.verdict is Verdict.MET


def test_the_sweep_lists_by_pages_and_fans_out_once_per_due_integration(report: Report) -> None:
    swept = report.sweep
    assert swept.status == 200
    assert swept.due == SMOKE.due
    assert swept.list_calls == swept.pages == 1
    assert swept.calls.total == swept.list_calls  # no per-secret read, no other call
    assert swept.messages == swept.distinct == SMOKE.due and swept.matches_due


def test_every_contestant_ran_every_burst(report: Report) -> None:
    contestants = report.bursts.contestants
    assert set(contestants) == {"on_push", "naive", "bare", "bare_publish"}
    for contestant in contestants.values():
        assert contestant.failures == []
        assert contestant.events == SMOKE.events * SMOKE.rounds
        assert 0 < contestant.best_seconds < float("inf")
        assert contestant.cpu_seconds >= 0


def test_memory_was_read_from_the_on_push_instance(report: Report) -> None:
    memory = report.bursts.memory
    assert 0 < memory.first_event_worker <= memory.after_events_instance
    assert memory.after_events_instance < 256 * 2**20
    assert memory.events == 1 + SMOKE.warmup + SMOKE.events


def test_a_warm_push_writes_the_record_only_when_its_verdict_changes(report: Report) -> None:
    calls = report.cold.push_calls
    assert calls is not None and calls.changed and calls.still_failing and calls.recovered
    for changed in (calls.changed, calls.recovered):
        assert changed.of("registry") == ("HEAD manifest",)
        assert changed.of("secretmanager") == ("PATCH secret",)
        assert changed.total == 2
    assert calls.still_failing.by_peer["registry"] == ("HEAD manifest",) and calls.still_failing.total == 1
    assert calls.warm.of("secretmanager") == ()
    rows = [r for r in report.rows if "verdict" in r.measurement or "failing again" in r.measurement]
    assert len(rows) == 3 and all(r.verdict is Verdict.MET for r in rows)
