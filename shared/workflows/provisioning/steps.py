"""What a multi-step request did, step by step, and how long each step took.

An operator reading a reply wants to know which step failed and what the earlier steps
already did (so that re-sending is obviously safe); the durations show where the time
went (usually IAM propagation in the reference test).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shared.model.results import Outcome, Status

KIND = "request"


class Steps:
    """Times named steps and keeps what each one reports."""

    def __init__(self, action: str, name: str | None, request_id: str | None) -> None:
        self.action = action
        self.name = name
        self.request_id = request_id
        self.durations_ms: dict[str, float] = {}
        self.results: dict[str, Any] = {}
        self.current: str | None = None
        self._started = time.perf_counter()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the block as step ``name`` (time accumulates if a step is entered twice)."""
        self.current = name
        started = time.perf_counter()
        try:
            yield
            self.current = None  # only a step that raised stays "current": it is the one that failed
        finally:
            self.durations_ms[name] = self.durations_ms.get(name, 0.0) + (time.perf_counter() - started) * 1000

    def done(self, name: str, result: Any) -> None:
        self.results[name] = result

    def outcome(
        self, status: Status, reason: str, *, code: str | None = None, details: dict[str, Any] | None = None
    ) -> Outcome:
        """The reply: ``subject`` names the action and integration, ``details.steps`` what was done."""
        subject: dict[str, Any] = {"action": self.action}
        if self.name:
            subject["name"] = self.name
        body = dict(details or {})
        if self.results:
            body["steps"] = dict(self.results)
        if status is Status.FAILED and self.current is not None:
            body["failed_step"] = self.current
        durations = dict(self.durations_ms)
        durations["total"] = (time.perf_counter() - self._started) * 1000
        return Outcome(
            KIND,
            status,
            reason,
            code=code,
            subject=subject,
            details=body,
            durations_ms=durations,
            request_id=self.request_id,
        )
