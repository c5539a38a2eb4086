"""The error answer of Google's APIs, as the stand-ins that play them send it.

Google's JSON APIs answer a failure with the HTTP status and a body
``{"error": {"code": HTTP_STATUS, "message": TEXT, "status": CANONICAL_CODE}}``
(Google Cloud's "API design guide", section Errors; the canonical codes are those of
``google.rpc.Code``). The client libraries read ``status`` to pick the exception they
raise, so every stand-in that plays a Google REST API raises this one type.

The gRPC stand-ins raise it too: over gRPC the same error model travels as a
``google.rpc.Status`` (the canonical code, the message and any rich details), so one type
keeps one meaning of "code", "status" and "message" across transports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the REST stand-ins never need gRPC: only to_status imports it
    import grpc
    from google.protobuf.message import Message

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

#: The HTTP status of each canonical code (the mapping documented in ``google/rpc/code.proto``).
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
}


class GoogleApiError(Exception):
    """A failure a stand-in reports as Google's error; ``status`` when the canonical
    code is not the usual one for ``code`` (400 FAILED_PRECONDITION, 409 ABORTED).

    ``details`` are rich error details (``google.rpc.error_details_pb2`` messages); only
    gRPC carries them, which is why the REST ``body`` leaves them out.
    """

    def __init__(self, code: int, message: str, status: str | None = None, details: Sequence[Message] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or CANONICAL.get(code, "UNKNOWN")
        self.details = list(details)

    @classmethod
    def from_grpc(cls, code: grpc.StatusCode, message: str, details: Sequence[Message] = ()) -> GoogleApiError:
        """For the gRPC stand-ins, which speak in canonical codes rather than HTTP statuses."""
        return cls(HTTP_STATUS[code.name], message, code.name, details)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}

    def to_status(self) -> grpc.Status:
        """The error as a gRPC server aborts with it (``context.abort_with_status``)."""
        import grpc
        from google.protobuf import any_pb2
        from google.rpc import status_pb2
        from grpc_status import rpc_status

        status = status_pb2.Status(code=grpc.StatusCode[self.status].value[0], message=self.message)
        for detail in self.details:
            packed = any_pb2.Any()
            packed.Pack(detail)
            status.details.append(packed)
        return rpc_status.to_status(status)
