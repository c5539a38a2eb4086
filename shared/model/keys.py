"""Service-account key files: the credential this whole system exists to look after.

A key file is the JSON that IAM returns once at key creation. We keep its text as it
was (Dataloop and the registry both want that exact text) and expose only the few
fields we reason about. The private key never appears in ``repr`` and is registered
with the redactor the moment it is parsed.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

from shared.core import json_text
from shared.core.errors import PermanentError
from shared.core.redaction import register_secret

#: IAM allows at most this many user-managed keys per service account (IAM docs,
#: "Create and delete service account keys": the limit is 10 keys per account).
USER_MANAGED_KEY_LIMIT = 10


def expiry(valid_before: dt.datetime | None) -> dt.datetime | None:
    """When a key stops authenticating, or None if it never does.

    IAM reports a key with no expiry as valid until 9999-12-31 rather than leaving the field
    empty (docs/external-apis.md §3.3); only an organisation's key-expiry policy gives a real
    end. Treating that sentinel as "never" keeps it out of due-ness and status.
    """
    if valid_before is None or valid_before.year >= 9999:
        return None
    return valid_before


@dataclass(frozen=True)
class KeyInfo:
    """A user-managed key as IAM lists it: identity and lifecycle, never key material."""

    key_id: str
    name: str
    valid_after: dt.datetime | None
    valid_before: dt.datetime | None
    disabled: bool

    @property
    def expires_at(self) -> dt.datetime | None:
        return expiry(self.valid_before)


_REQUIRED = ("type", "private_key_id", "private_key", "client_email")


@dataclass(frozen=True)
class ServiceAccountKey:
    """One service-account key file.

    ``valid_before`` is what IAM said when it created the key (the key file itself says
    nothing about expiry), so it is known only to the run that created the key; a key read
    back from a secret has None, and its expiry is whatever the record noted at creation.
    """

    key_id: str
    client_email: str
    project_id: str | None
    json_text: str = field(repr=False)
    valid_before: dt.datetime | None = field(default=None, compare=False)

    @property
    def expires_at(self) -> dt.datetime | None:
        return expiry(self.valid_before)

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


# -- the same key as registry credentials -------------------------------------------------------


@dataclass(frozen=True)
class RegistryCredential:
    """Basic-auth credentials for a GAR token endpoint.

    ``username`` is one of ``_json_key`` (password = key-file JSON text),
    ``_json_key_base64`` (password = base64 of it) or ``oauth2accesstoken``. The password
    is registered with the redactor on creation and left out of ``repr``, so neither a log
    line nor a traceback can show it.
    """

    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        register_secret(self.password)
        key = self._key_document()
        if key is not None and isinstance(key.get("private_key"), str):
            register_secret(key["private_key"])

    @classmethod
    def from_key_file(cls, key_json_text: str) -> RegistryCredential:
        """``_json_key`` credentials from a service-account key file, as Dataloop stores them.

        Raises:
            PermanentError: the text is not a service-account key file (code ``bad-key``,
                as wherever else a key file is read: one parser, one answer).
        """
        ServiceAccountKey.from_json(key_json_text, source="the key file")
        return cls("_json_key", key_json_text)

    @classmethod
    def from_key_file_base64(cls, key_json_text: str) -> RegistryCredential:
        """``_json_key_base64`` credentials: the same key, base64-encoded, as some tools send it."""
        ServiceAccountKey.from_json(key_json_text, source="the key file")
        return cls("_json_key_base64", base64.b64encode(key_json_text.encode()).decode())

    @classmethod
    def from_access_token(cls, token: str) -> RegistryCredential:
        """``oauth2accesstoken`` credentials from an OAuth access token (``gcloud auth print-access-token``)."""
        return cls("oauth2accesstoken", token)

    @property
    def fingerprint(self) -> str:
        """A short one-way digest of the credentials: a cache key that is safe to log."""
        return hashlib.sha256(f"{self.username}\0{self.password}".encode()).hexdigest()[:16]

    @functools.cached_property
    def client_email(self) -> str | None:
        """The service account the key belongs to, when the password is a key file."""
        email = (self._key_document() or {}).get("client_email")
        return email if isinstance(email, str) else None

    @functools.cached_property
    def key_id(self) -> str | None:
        """The key's ``private_key_id`` (as in IAM's key resource name), when known."""
        key_id = (self._key_document() or {}).get("private_key_id")
        return key_id if isinstance(key_id, str) else None

    def describe(self) -> str:
        """Who these credentials claim to be, in words a person can look up in IAM; no secret."""
        if self.client_email:
            key = f" (key {self.key_id})" if self.key_id else ""
            return f"service account {self.client_email}{key}"
        if self.username == "oauth2accesstoken":
            return "an OAuth access token"
        return f"user {self.username!r}"

    def _key_document(self) -> dict[str, Any] | None:
        if self.username == "_json_key":
            text = self.password
        elif self.username == "_json_key_base64":
            try:
                text = base64.b64decode(self.password, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
        else:
            return None
        try:
            document = json_text.loads(text)
        except ValueError:
            return None
        return document if isinstance(document, dict) else None
