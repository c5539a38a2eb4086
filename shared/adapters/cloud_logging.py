"""Reading past outcomes back from Cloud Logging, for the operator's ``history`` command.

Every event ends in one outcome line on a function's stdout (shared.app.entrypoint), and
Cloud Run files it as a LogEntry whose ``jsonPayload.outcome`` is the result message. That
record already exists for every event, kept by Google for the log bucket's retention, so
reading it needs no store of our own and sees the outcomes no one was subscribed to.

google-cloud-logging costs a noticeable import, and nothing on a function's path needs it:
it is imported here, lazily, and only the CLI imports this module. The client runs on its
HTTP transport (``entries.list`` is one POST), which is also what the local stand-in speaks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.model.results import SCHEMA

#: Where the outcome sits in the LogEntry: the formatter's ``outcome`` key, under jsonPayload.
OUTCOME_FIELD = "jsonPayload.outcome"
#: The subject keys that name an integration: provisioning's ``name``, rotation's
#: ``integration`` and a push's ``integrations`` (every integration covering the image).
NAME_FIELDS = ("name", "integration", "integrations")


@dataclass(frozen=True)
class PastOutcome:
    """One outcome as logged: when, which function, and the result message itself."""

    at: datetime | None
    service: str
    outcome: dict[str, Any] = field(default_factory=dict)

    @property
    def integrations(self) -> tuple[str, ...]:
        subject = self.outcome.get("subject") or {}
        found: list[str] = []
        for key in NAME_FIELDS:
            value = subject.get(key) if isinstance(subject, dict) else None
            for name in value if isinstance(value, list) else [value]:
                if isinstance(name, str) and name and name not in found:
                    found.append(name)
        return tuple(found)

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat() if self.at else None, "service": self.service, **self.outcome}


def _quoted(value: str) -> str:
    """A query-language string: JSON's escapes (backslash, quote) are the language's own."""
    return json.dumps(value, ensure_ascii=False)


def outcome_filter(since: datetime, *, name: str | None = None, status: str | None = None) -> str:
    """The Logging query for outcomes logged at or after ``since``, narrowed as asked.

    The timestamp bound is always there: without one the client library adds its own
    (the last 24 hours), and the API would otherwise scan the bucket's whole retention.
    """
    terms = [
        f"{OUTCOME_FIELD}.schema={_quoted(SCHEMA)}",
        f"timestamp>={_quoted(since.isoformat().replace('+00:00', 'Z'))}",
    ]
    if status:
        terms.append(f"{OUTCOME_FIELD}.status={_quoted(status)}")
    if name:
        either = [f"{OUTCOME_FIELD}.subject.{key}={_quoted(name)}" for key in NAME_FIELDS]
        # How Logging compares a repeated field (a push's subject.integrations) is not documented; a push's
        # details are keyed by integration name, and a field's presence (FIELD:*) is documented.
        either.append(f'({OUTCOME_FIELD}.kind="reference-test" AND {OUTCOME_FIELD}.details.{_quoted(name)}:*)')
        terms.append(f"({' OR '.join(either)})")
    return " AND ".join(terms)


def _past(entry: Any) -> PastOutcome | None:
    payload = getattr(entry, "payload", None)
    outcome = payload.get("outcome") if isinstance(payload, dict) else None
    if not isinstance(outcome, dict):
        return None
    resource = getattr(entry, "resource", None)
    labels = getattr(resource, "labels", None) or {}
    service = labels.get("service_name") or labels.get("function_name") or ""
    return PastOutcome(at=getattr(entry, "timestamp", None), service=service, outcome=outcome)


class OutcomeLog:
    """The project's logged outcomes, newest first, through google-cloud-logging.

    ``endpoint`` ("http://HOST:PORT") points the client at a local stand-in, anonymously;
    without it the client uses Google's endpoint and the caller's default credentials.
    """

    def __init__(self, project: str, *, endpoint: str | None = None, page_size: int = 100) -> None:
        self.project = project
        self.endpoint = endpoint
        self.page_size = page_size
        self._client: Any = None

    def _logging(self) -> Any:
        if self._client is None:
            from google.cloud import logging as cloud_logging

            kwargs: dict[str, Any] = {"project": self.project, "_use_grpc": False}
            if self.endpoint:
                from google.auth.credentials import AnonymousCredentials

                kwargs.update(credentials=AnonymousCredentials(), client_options={"api_endpoint": self.endpoint})
            self._client = cloud_logging.Client(**kwargs)
        return self._client

    def recent(
        self, since: datetime, *, name: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[PastOutcome]:
        """At most ``limit`` outcomes since ``since``, newest first.

        Raises:
            google.api_core.exceptions.GoogleAPICallError: the API refused or failed.
        """
        from google.cloud.logging import DESCENDING

        entries: Iterable[Any] = self._logging().list_entries(
            resource_names=[f"projects/{self.project}"],
            filter_=outcome_filter(since, name=name, status=status),
            order_by=DESCENDING,
            page_size=min(self.page_size, max(limit, 1)),
            max_results=limit,
        )
        found = (past for past in map(_past, entries) if past is not None)
        # The query may match more than asked (details keyed by a name that is not an integration's); the
        # subject says for sure.
        return [past for past in found if not name or name in past.integrations]
