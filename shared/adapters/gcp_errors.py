"""One translation of Google API errors into the project's transient/permanent taxonomy.

Both transports need care: gRPC errors carry their canonical status, but the REST
transport picks the exception class from the HTTP status alone, so a 400
FAILED_PRECONDITION (e.g. a stale etag) arrives as a plain ``BadRequest`` and a 409
ALREADY_EXISTS as ``Conflict``. :func:`api_status` recovers the canonical status from
the JSON error body so that callers can branch on what the API actually said.

Every Google adapter (Secret Manager, IAM, Artifact Registry) translates through
:func:`translated`; what differs between them is data: the role to grant, what a
NOT_FOUND means, the codes their callers branch on.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from shared.core.errors import Conflict, PermanentError, ServiceUnavailable

#: Statuses worth trying again later: the service was down, slow or over quota, not refusing.
TRANSIENT_STATUSES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "RESOURCE_EXHAUSTED", "UNKNOWN"})
_HTTP_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def api_status(exc: BaseException) -> str | None:
    """The canonical status name (``FAILED_PRECONDITION``, ``ABORTED``…) of a Google API error."""
    grpc_code = getattr(exc, "grpc_status_code", None)
    if grpc_code is not None:
        return str(getattr(grpc_code, "name", grpc_code))
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            status = response.json().get("error", {}).get("status")
        except Exception:
            status = None
        if isinstance(status, str) and status:
            return status
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return _HTTP_STATUS.get(code)
    return None


def api_message(exc: BaseException) -> str:
    return str(getattr(exc, "message", None) or exc)


@contextmanager
def translated(
    service: str,
    action: str,
    *,
    permission_hint: str = "",
    not_found: str = "",
    code: str | None = None,
    codes: Mapping[str, str] | None = None,
    conflict_statuses: Collection[str] = ("ALREADY_EXISTS",),
    transient_statuses: Collection[str] = TRANSIENT_STATUSES,
) -> Iterator[None]:
    """Re-raise Google API errors from the block as TransientError/PermanentError.

    The canonical status (:func:`api_status`) decides, whatever the transport:

    - ``conflict_statuses`` become :class:`Conflict` (``already-exists``, or ``etag-mismatch``
      for how the API reports a stale etag), which concurrency-aware callers catch;
    - ``transient_statuses``, retries that ran out and unreachable endpoints become
      :class:`ServiceUnavailable`;
    - PERMISSION_DENIED becomes ``permission-denied``, with ``permission_hint`` (the role to
      grant, and where) after the action: the sentence an operator needs;
    - every other status is a :class:`PermanentError` coded by ``codes[status]``, else ``code``,
      else the status itself (``not-found``, ``failed-precondition``…); ``not_found``, when
      given, replaces the API's words for NOT_FOUND (what it means for this call).
    """
    from google.api_core import exceptions as gexc

    try:
        yield
    except gexc.RetryError as exc:
        last = api_status(exc.cause) if exc.cause is not None else None
        tried = f"{last}, still failing after retries" if last else "still failing after retries"
        raise ServiceUnavailable(
            f"{service} unavailable while trying to {action} ({tried}): {api_message(exc)}"
        ) from None
    except gexc.GoogleAPICallError as exc:
        status = api_status(exc) or "UNKNOWN"
        message = api_message(exc)
        if status in conflict_statuses:
            conflict = "already-exists" if status == "ALREADY_EXISTS" else "etag-mismatch"
            raise Conflict(f"{service}: could not {action}: {message}", code=conflict) from None
        if status in transient_statuses:
            raise ServiceUnavailable(f"{service} unavailable while trying to {action} ({status}): {message}") from None
        if status == "PERMISSION_DENIED":
            hint = f" {permission_hint}" if permission_hint else ""
            raise PermanentError(
                f"{service} denied permission to {action}.{hint} ({message})", code="permission-denied"
            ) from None
        refusal = (codes or {}).get(status) or code or status.lower().replace("_", "-")
        if status == "NOT_FOUND" and not_found:
            raise PermanentError(f"{service}: {not_found}", code=refusal) from None
        raise PermanentError(f"{service} refused to {action} ({status}): {message}", code=refusal) from None
    except Exception as exc:
        if _is_transport_error(exc):
            raise ServiceUnavailable(f"{service} unreachable while trying to {action}: {type(exc).__name__}") from None
        raise


def _is_transport_error(exc: Any) -> bool:
    import requests

    if isinstance(exc, requests.RequestException):
        return True
    try:
        import google.auth.exceptions as gauth

        return isinstance(exc, gauth.TransportError)
    except ImportError:  # pragma: no cover
        return False
