"""The error answer of Google's REST APIs, as the stand-ins that play them send it.

Google's JSON APIs answer a failure with the HTTP status and a body
``{"error": {"code": HTTP_STATUS, "message": TEXT, "status": CANONICAL_CODE}}``
(Google Cloud's "API design guide", section Errors; the canonical codes are those of
``google.rpc.Code``). The client libraries read ``status`` to pick the exception they
raise, so every stand-in that plays a Google REST API raises this one type.
"""

from __future__ import annotations

from typing import Any

#: The canonical code Google pairs with each HTTP status (API design guide, "Error model").
CANONICAL = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}


class GoogleApiError(Exception):
    """A failure a stand-in reports as Google's JSON error; ``status`` when the canonical
    code is not the usual one for ``code`` (400 FAILED_PRECONDITION, 409 ABORTED)."""

    def __init__(self, code: int, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or CANONICAL.get(code, "UNKNOWN")

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}
