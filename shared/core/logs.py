"""Structured logs in Cloud Logging's JSON-on-stdout format, with secrets masked.

Cloud Run and Cloud Functions (gen2) parse each JSON line on stdout into a LogEntry:
``severity``, ``message``, ``logging.googleapis.com/labels`` and
``logging.googleapis.com/trace`` are lifted into the entry; other keys land in
``jsonPayload``. google-cloud-logging's StructuredLogHandler writes the same format but
costs ~0.4 s of imports at cold start, more than functions-framework itself, so this
small formatter writes it instead.

Every line passes through :func:`shared.core.redaction.redact` *after* it is assembled, so no
call site can log a key, token or password, whatever it passes.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import traceback
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from shared.core.redaction import redact

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("log_context", default=None)

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class CloudLoggingFormatter(logging.Formatter):
    """Formats a record as one Cloud Logging JSON line, masked."""

    def __init__(self, project: str | None = None) -> None:
        super().__init__()
        self.project = project

    def format(self, record: logging.LogRecord) -> str:
        context = _context.get() or {}
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        labels = dict(context.get("labels", {}))
        labels.update(getattr(record, "labels", None) or {})
        if labels:
            entry["logging.googleapis.com/labels"] = {k: str(v) for k, v in labels.items()}
        trace = context.get("trace")
        if trace:
            entry["logging.googleapis.com/trace"] = f"projects/{self.project}/traces/{trace}" if self.project else trace
            if context.get("span"):
                entry["logging.googleapis.com/spanId"] = context["span"]
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key != "labels" and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(redact(entry), default=str, ensure_ascii=False)


_configured = False


class _ConfiguredHandler(logging.StreamHandler):
    """The handler :func:`configure` installs, told apart from anyone else's so that
    configuring twice replaces ours and leaves theirs."""


def configure(level: str = "INFO", project: str | None = None, stream: Any = None) -> None:
    """Route the root logger to stdout as masked JSON lines (idempotent)."""
    global _configured
    root = logging.getLogger()
    handler = _ConfiguredHandler(stream or sys.stdout)
    handler.setFormatter(CloudLoggingFormatter(project))
    for old in [h for h in root.handlers if isinstance(h, _ConfiguredHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Client libraries log request details at DEBUG; keep them quiet unless asked.
    for noisy in ("urllib3", "google", "grpc", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))
    _configured = True


def parse_trace(traceparent: str | None = None, cloud_trace: str | None = None) -> tuple[str | None, str | None]:
    """Trace and span ids from a W3C ``traceparent`` or an ``X-Cloud-Trace-Context`` value."""
    if traceparent:
        parts = traceparent.split("-")
        if len(parts) >= 3 and len(parts[1]) == 32:
            return parts[1], parts[2]
    if cloud_trace:
        trace, _, rest = cloud_trace.partition("/")
        span = rest.split(";")[0] or None
        if trace:
            return trace, span
    return None, None


@contextlib.contextmanager
def bound(trace: str | None = None, span: str | None = None, **labels: Any) -> Iterator[None]:
    """Attach a trace and labels to every line logged inside the block."""
    current = _context.get() or {}
    merged = {**current, "labels": {**current.get("labels", {}), **{k: v for k, v in labels.items() if v}}}
    if trace:
        merged["trace"], merged["span"] = trace, span
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def log(logger: logging.Logger, severity: int, message: str, **fields: Any) -> None:
    """Log ``message`` with ``fields`` as structured ``jsonPayload`` keys."""
    labels: Mapping[str, Any] | None = fields.pop("labels", None)
    extra = {(f"{k}_" if k in _RECORD_ATTRS else k): v for k, v in fields.items()}
    logger.log(severity, message, extra={**extra, "labels": labels or {}})
