"""Outcomes: what every event ends as, logged once and published once.

A result message is the contract with whoever watches this system (alerts, dashboards,
the operator CLI waiting for a reply), so its shape is versioned (``schema``) and it
passes through the redactor before it leaves the process.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.core.redaction import redact

SCHEMA = "dataloop-gar.result/v1"


class Status(enum.StrEnum):
    PASSED = "passed"  # a reference test proved the pull works
    OK = "ok"  # a request or rotation did what was asked
    FAILED = "failed"  # permanent failure; the reason says what to fix
    REJECTED = "rejected"  # the message itself is invalid
    SKIPPED = "skipped"  # deliberately not tested (signature/attestation tags, dry runs)
    IGNORED = "ignored"  # nothing to do (DELETE notifications, other Secret Manager events)
    UNCOVERED = "uncovered"  # no managed integration covers the image


@dataclass
class Outcome:
    """How one event ended."""

    kind: str
    status: Status
    reason: str
    code: str | None = None
    subject: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    durations_ms: dict[str, float] = field(default_factory=dict)
    event_id: str | None = None
    request_id: str | None = None

    @property
    def severity(self) -> int:
        """ERROR where a person must act on credentials, WARNING for other failures."""
        if self.status is Status.FAILED:
            return logging.ERROR if self.code in ("credentials-refused", "permission-denied") else logging.WARNING
        if self.status is Status.REJECTED:
            return logging.WARNING
        return logging.INFO

    def to_message(self) -> dict[str, Any]:
        message = {
            "schema": SCHEMA,
            "kind": self.kind,
            "status": self.status.value,
            "reason": self.reason,
            "code": self.code,
            "subject": self.subject,
            "details": self.details,
            "durations_ms": {k: round(v, 1) for k, v in self.durations_ms.items()},
            "event_id": self.event_id,
            "request_id": self.request_id,
            "at": datetime.now(UTC).isoformat(),
        }
        return redact(message)
