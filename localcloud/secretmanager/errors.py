"""Secret Manager's failures, worded as the real service words them.

Kept apart from the service because the validators, the wire codecs and the filter
parser raise them too, and tests compare the messages verbatim.
"""

from __future__ import annotations

from localcloud.google_errors import GoogleApiError


def invalid(message: str) -> GoogleApiError:
    return GoogleApiError(400, message)


def precondition(message: str) -> GoogleApiError:
    return GoogleApiError(400, message, "FAILED_PRECONDITION")


def not_found(message: str) -> GoogleApiError:
    return GoogleApiError(404, message)


def already_exists(message: str) -> GoogleApiError:
    return GoogleApiError(409, message)


def unimplemented(message: str) -> GoogleApiError:
    return GoogleApiError(501, message)


def permission_denied(permission: str, resource: str) -> GoogleApiError:
    """Google's refusal, worded alike whether or not ``resource`` exists, so it reveals nothing."""
    return GoogleApiError(403, f"Permission '{permission}' denied for resource '{resource}' (or it may not exist).")


def unauthenticated() -> GoogleApiError:
    return GoogleApiError(
        401,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
        "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
    )
