"""The error taxonomy that decides how an event is acknowledged.

Pub/Sub redelivers a message whose function raised; so only *transient* failures may
propagate out of an entry point. Everything else is *permanent*: the message is
acknowledged and the reason is reported where a person will read it.
"""

from __future__ import annotations


class GarDataloopError(Exception):
    """Base of every error this project raises on purpose.

    ``code`` is a short stable identifier for dashboards and alerts; ``reason`` is the
    sentence a person reads, and must say what to do about it.
    """

    code = "error"

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code


class TransientError(GarDataloopError):
    """Worth trying again later: the entry point raises so that Pub/Sub redelivers."""

    code = "transient"


class PermanentError(GarDataloopError):
    """Trying again cannot help: the message is acknowledged with a ``failed`` result."""

    code = "failed"


class RejectedMessage(PermanentError):
    """The message itself is malformed: acknowledged with a ``rejected`` result."""

    code = "rejected"


class ConfigError(GarDataloopError):
    """The function's environment is wrong; raised once at start with every problem."""

    code = "config"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        text = "invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(text)


class CredentialsRefused(PermanentError):
    """The registry (or another service) refused the credentials we presented."""

    code = "credentials-refused"


class ImageNotFound(PermanentError):
    """The registry does not know the manifest that was asked for."""

    code = "image-missing"


class DigestMismatch(PermanentError):
    """The registry answered for a digest other than the one asked for."""

    code = "digest-mismatch"


class RegistryUnavailable(TransientError):
    """The registry could not be reached or answered 5xx after our retries."""

    code = "registry-unavailable"


class Conflict(TransientError):
    """Someone else changed the resource first (stale etag) or it already exists.

    Transient because the usual answer is to re-read and try again; workflows that can
    decide better (an ``ensure`` that reads the existing resource, a lease that someone
    else holds) catch it.
    """

    code = "conflict"


class ServiceUnavailable(TransientError):
    """A Google API or Dataloop could not be reached or answered 5xx after retries."""

    code = "service-unavailable"
