"""Service-account key files: the credential this whole system exists to look after.

A key file is the JSON that IAM returns once at key creation. We keep its text as it
was (Dataloop and the registry both want that exact text) and expose only the few
fields we reason about. The private key never appears in ``repr`` and is registered
with the redactor the moment it is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared import json_text
from shared.errors import PermanentError
from shared.redaction import register_secret

_REQUIRED = ("type", "private_key_id", "private_key", "client_email")


@dataclass(frozen=True)
class ServiceAccountKey:
    """One service-account key file."""

    key_id: str
    client_email: str
    project_id: str | None
    json_text: str = field(repr=False)

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "key file") -> ServiceAccountKey:
        """Parse a key file.

        Raises:
            PermanentError: the payload is not a service-account key file; the message
                names ``source`` and the missing fields, never the content.
        """
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        register_secret(text)
        try:
            data = json_text.loads(text)
        except ValueError:  # also a 5000-digit number, or nesting deeper than any key file
            raise PermanentError(f"{source} is not JSON; expected a service-account key file", code="bad-key") from None
        if not isinstance(data, dict):
            raise PermanentError(f"{source} is not a JSON object; expected a service-account key file", code="bad-key")
        missing = [k for k in _REQUIRED if not isinstance(data.get(k), str) or not data.get(k)]
        if missing or data.get("type") != "service_account":
            what = f"missing {', '.join(missing)}" if missing else f"type is {data.get('type')!r}"
            raise PermanentError(f"{source} is not a service-account key file ({what})", code="bad-key")
        register_secret(data["private_key"])
        return cls(
            key_id=data["private_key_id"],
            client_email=data["client_email"],
            project_id=data.get("project_id"),
            json_text=text,
        )

    def __str__(self) -> str:
        return f"key {self.key_id} of {self.client_email}"
