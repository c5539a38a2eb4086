"""The one way every function turns a CloudEvent into an acknowledged, reported outcome.

It decodes the envelope, runs the workflow, logs one structured record, publishes one
result, and decides delivery: return normally (acknowledge) for every outcome, including
permanent failures and rejections; raise only for transient failures, so that Pub/Sub
redelivers. Unexpected exceptions also raise (a dead-letter policy bounds them) but are
logged with the stack so a person sees the bug.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from shared.core import logs
from shared.core.errors import PermanentError, RejectedMessage, TransientError
from shared.model.events import PubSubMessage, from_cloud_event
from shared.model.results import Outcome, Status
from shared.ports import ResultSink

logger = logging.getLogger("dataloop_gar")


def handle_event(kind: str, event: Any, workflow: Callable[[PubSubMessage], Outcome], results: ResultSink) -> Outcome:
    """Run ``workflow`` on the Pub/Sub message in ``event``; see the module docstring."""
    started = time.perf_counter()
    trace, span = logs.parse_trace(_extension(event, "traceparent"))
    event_id = _extension(event, "id")
    with logs.bound(trace=trace, span=span, function=kind, event_id=event_id):
        message: PubSubMessage | None = None
        try:
            message = from_cloud_event(event)
            outcome = workflow(message)
        except RejectedMessage as exc:
            outcome = Outcome(kind, Status.REJECTED, exc.reason, code=exc.code)
        except PermanentError as exc:
            outcome = Outcome(kind, Status.FAILED, exc.reason, code=exc.code)
        except TransientError as exc:
            logs.log(
                logger,
                logging.WARNING,
                f"{kind}: transient failure, asking for redelivery: {exc.reason}",
                code=exc.code,
            )
            raise
        except Exception:
            logger.exception(f"{kind}: unexpected error; asking for redelivery")
            raise
        outcome.event_id = outcome.event_id or (message.message_id if message else None) or event_id
        outcome.durations_ms.setdefault("total", (time.perf_counter() - started) * 1000)
        result = outcome.to_message()  # built (and masked) once, for the log line and the result
        logs.log(logger, outcome.severity, f"{kind} {outcome.status.value}: {outcome.reason}", outcome=result)
        results.publish(outcome, result)
        return outcome


def _extension(event: Any, name: str) -> str | None:
    try:
        value = event[name]
    except (KeyError, TypeError, AttributeError):
        return None
    return value if isinstance(value, str) else None
