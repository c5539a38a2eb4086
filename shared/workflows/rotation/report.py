"""What a rotation run tells its caller: one ``rotation`` Outcome, never key material.

A run is finished by whichever delivery comes next, so its Outcome must say, on its own,
how far this run got and what it changed: each step's outcome and duration, the old and
new key *ids*, and what cleanup deleted or disabled. An operator reading one result
message, or a test asserting on it, needs nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.model.results import Outcome, Status

if TYPE_CHECKING:
    from shared.workflows.rotation.run import Run

KIND = "rotation"

#: One logger for the whole rotation, under the name its records have always carried, so
#: that a log filter written for them still selects them.
logger = logging.getLogger("shared.workflows.rotation.workflow")


class Refused(Exception):
    """A run that ends before it starts: ``failed`` (the record must be fixed) or ``skipped`` (nothing to do now)."""

    def __init__(self, status: Status, reason: str, code: str | None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.code = status, reason, code


@dataclass
class StepReport:
    """One step's outcome (``done``, ``resumed``, ``failed``, ``rolled-back``) and duration."""

    step: str
    outcome: str = "done"
    duration_ms: float = 0.0
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        report: dict[str, Any] = {"step": self.step, "outcome": self.outcome, "duration_ms": round(self.duration_ms, 1)}
        if self.note:
            report["note"] = self.note
        return report


@contextlib.contextmanager
def timed(steps: list[StepReport], name: str) -> Iterator[StepReport]:
    """Report step ``name`` in ``steps``: its duration, and ``failed`` with the reason if it raises."""
    report = StepReport(name)
    steps.append(report)
    began = time.perf_counter()
    try:
        yield report
    except BaseException as exc:
        if report.outcome == "done":
            report.outcome = "failed"
        report.note = report.note or getattr(exc, "reason", type(exc).__name__)
        raise
    finally:
        report.duration_ms = (time.perf_counter() - began) * 1000


def outcome(status: Status, reason: str, *, code: str | None, subject: dict[str, Any], rid: str | None) -> Outcome:
    """A bare ``rotation`` Outcome: for a run refused before it started, and the base of every other."""
    return Outcome(KIND, status, reason, code=code, subject=dict(subject), request_id=rid)


def report(run: Run, status: Status, reason: str, code: str | None = None) -> Outcome:
    """The Outcome of a run that took the lease: what it did, step by step."""
    result = outcome(status, reason, code=code, subject=run.subject, rid=run.request_id)
    result.details.update(
        old_key_id=run.old_key_id,
        new_key_id=run.new_key_id,
        resumed=run.resumed,
        holder=run.holder,
        steps=[s.to_json() for s in run.steps],
    )
    if run.notes:
        result.details["notes"] = list(run.notes)
    for name, ids in (
        ("orphan_keys_deleted", run.orphans_deleted),
        ("retired_keys_deleted", run.retired_deleted),
        ("stray_versions_disabled", run.strays_disabled),
    ):
        if ids:
            result.details[name] = list(ids)
    result.durations_ms.update({s.step: s.duration_ms for s in run.steps})
    result.durations_ms["total"] = (time.perf_counter() - run.started) * 1000
    return result
