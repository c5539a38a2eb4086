"""What a failed Dataloop call means, and what a person should do about it.

The gateway answers errors as JSON with a ``message`` and tags every answer with an
``x-request-id`` header (docs/external-apis.md §5.5); Dataloop support asks for that id, so every
error carries it. Whether a failure is worth retrying is decided here, once: a 4xx is
*permanent* (retrying the same request cannot help), while a 5xx, a 429 or an unreachable
gateway that our retries could not outlast is *transient*, so the entry point raises and
Pub/Sub redelivers later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.core.json_text import loads
from shared.core.redaction import redact_text
from shared.model.dataloop import (
    DataloopConflict,
    DataloopError,
    DataloopForbidden,
    DataloopNotFound,
    DataloopRejected,
    DataloopUnauthorized,
    DataloopUnavailable,
)

if TYPE_CHECKING:
    import requests

_MAX_MESSAGE = 300


_BY_STATUS: dict[int, type[DataloopRejected]] = {
    401: DataloopUnauthorized,
    403: DataloopForbidden,
    404: DataloopNotFound,
    409: DataloopConflict,
}


def _hint(status: int, path: str) -> str:
    """The sentence that tells an operator what to check for ``status`` on ``path``."""
    if status == 401:
        return (
            "Check the Dataloop API key or the bot user's username/password "
            "(expired, revoked, or issued for another environment?)."
        )
    if status == 403:
        if "/integrations" in path:
            return "The Dataloop bot user needs the Admin or Owner role in the organization to manage integrations."
        return "The Dataloop user lacks permission for this resource (is it a member of the service's project?)."
    if status == 404:
        if path.startswith("/services"):
            return "Check the Dataloop service id (was the canary service deleted?)."
        return (
            "Check the Dataloop organization id and the integration id (was the integration deleted in the console?)."
        )
    if status == 409:
        return "Dataloop reports a conflict; an integration with that name may already exist."
    if status == 429:
        return "Dataloop is rate limiting us; the operation will be tried again later."
    if status >= 500:
        return "Dataloop is failing or unavailable; the operation will be tried again later."
    return "Dataloop refused the request as malformed; the client and the API disagree (a bug or an API change)."


def response_message(response: requests.Response) -> str | None:
    """Dataloop's ``message`` from an error body; other common shapes are tolerated.

    The text is masked and shortened: an error body may echo what was sent, and what was
    sent may be a docker config.
    """
    text = response.text or ""
    message: str | None = None
    try:
        body = loads(text) if text else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        value = body.get("message")
        error = body.get("error")
        if isinstance(value, str) and value:
            message = value
        elif isinstance(error, dict) and isinstance(error.get("message"), str):
            message = error["message"]
        elif isinstance(error, str):
            description = body.get("error_description")
            message = f"{error}: {description}" if isinstance(description, str) else error
    if message is None and text and body is None:
        message = " ".join(text.split())
    if message is None:
        return None
    message = redact_text(message)
    return message if len(message) <= _MAX_MESSAGE else message[:_MAX_MESSAGE] + "…"


def error_from_response(method: str, path: str, response: requests.Response) -> DataloopError:
    """The error for a non-2xx answer; the caller has already spent its retries."""
    status = response.status_code
    message = response_message(response)
    request_id = response.headers.get("x-request-id")
    reason = (
        f"Dataloop {method} {path} answered {status}"
        f"{f': {message}' if message else ''}"
        f" (x-request-id: {request_id or 'none'}). {_hint(status, path)}"
    )
    kind: type[DataloopError]
    kind = DataloopUnavailable if status == 429 or status >= 500 else _BY_STATUS.get(status, DataloopRejected)
    return kind(reason, status=status, message=message, request_id=request_id, method=method, path=path)


def unreachable(method: str, path: str, origin: str, exc: Exception) -> DataloopUnavailable:
    """The error for a call that got no answer at all (DNS, refused, reset, timed out)."""
    what = type(exc).__name__
    return DataloopUnavailable(
        f"Dataloop {method} {path} got no answer from {origin} ({what}) after retries. "
        "Check the Dataloop base URL and the network path; the operation will be tried again later.",
        method=method,
        path=path,
    )
