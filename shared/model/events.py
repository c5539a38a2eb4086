"""Pub/Sub messages out of the CloudEvents that Eventarc and functions-framework deliver.

The same message reaches a function in several envelopes: a CloudEvent in binary mode
(``ce-*`` headers, body = data), in structured mode (the whole event as JSON), or a raw
Pub/Sub push body that functions-framework converts. Real payloads also spell fields
both ways (``messageId``/``message_id``, ``publishTime``/``publish_time``). This module
is the one place that knows all of that; the rest of the code sees a :class:`PubSubMessage`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.core.errors import RejectedMessage
from shared.core.json_text import nesting_exceeds

#: Largest decoded message body we accept. Our messages are a few hundred bytes; this
#: keeps a broken or hostile publisher from making us hold megabytes.
MAX_DATA_BYTES = 64 * 1024
MAX_ATTRIBUTES = 64
MAX_JSON_DEPTH = 16
_URLSAFE = re.compile(r"[A-Za-z0-9_-]+={0,2}")


@dataclass(frozen=True)
class PubSubMessage:
    """One Pub/Sub message, whatever envelope it arrived in."""

    data: bytes
    attributes: Mapping[str, str] = field(default_factory=dict)
    message_id: str | None = None
    publish_time: str | None = None
    subscription: str | None = None

    def json(self) -> Any:
        """The data parsed as JSON.

        Raises:
            RejectedMessage: not UTF-8, not JSON, or nested deeper than MAX_JSON_DEPTH.
        """
        return parse_json(self.data, what="message data")


def parse_json(raw: bytes | str, *, what: str) -> Any:
    """Parse bounded JSON with a precise rejection instead of a stack trace."""
    if isinstance(raw, bytes):
        if len(raw) > MAX_DATA_BYTES:
            raise RejectedMessage(f"{what} is {len(raw)} bytes; the limit is {MAX_DATA_BYTES}")
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RejectedMessage(f"{what} is not UTF-8 text (byte {exc.start})") from None
    if not raw.strip():
        raise RejectedMessage(f"{what} is empty; expected a JSON object")
    if nesting_exceeds(raw, MAX_JSON_DEPTH):
        raise RejectedMessage(f"{what} nests JSON deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RejectedMessage(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:
        # CPython refuses integers longer than sys.get_int_max_str_digits() with a bare ValueError;
        # left alone it would escape as an "unexpected error" and be redelivered until dead-lettered.
        raise RejectedMessage(
            f"{what} holds a number longer than {sys.get_int_max_str_digits()} digits; no field takes one"
        ) from None


def from_cloud_event(event: Any) -> PubSubMessage:
    """Decode the Pub/Sub message carried by a CloudEvent (or a raw push body).

    ``event`` is a ``cloudevents`` event (``event.data``), or the body itself as a dict,
    bytes or str.

    Raises:
        RejectedMessage: with the precise reason the envelope is not a Pub/Sub message.
    """
    body = getattr(event, "data", event)
    if isinstance(body, (bytes, str)):
        body = parse_json(body, what="event body")
    if not isinstance(body, dict):
        raise RejectedMessage(f"event data must be a JSON object with 'message', got {type(body).__name__}")
    message = body.get("message")
    if not isinstance(message, dict):
        raise RejectedMessage("event data has no 'message' object; is this a Pub/Sub event?")

    data = _decode_data(message.get("data"))
    attributes = message.get("attributes")
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict):
        raise RejectedMessage(f"message.attributes must be an object, got {type(attributes).__name__}")
    if len(attributes) > MAX_ATTRIBUTES:
        raise RejectedMessage(f"message has {len(attributes)} attributes; the limit is {MAX_ATTRIBUTES}")
    bad = [k for k, v in attributes.items() if not isinstance(v, str)]
    if bad:
        raise RejectedMessage(f"message attribute values must be strings: {', '.join(sorted(map(str, bad))[:5])}")

    return PubSubMessage(
        data=data,
        attributes=dict(attributes),
        message_id=_text(message, "messageId", "message_id") or _text_attr(event, "id"),
        publish_time=_text(message, "publishTime", "publish_time") or _text_attr(event, "time"),
        subscription=body.get("subscription") if isinstance(body.get("subscription"), str) else None,
    )


def _decode_data(raw: Any) -> bytes:
    if raw is None or raw == "":
        return b""  # attribute-only messages are valid Pub/Sub messages
    if not isinstance(raw, str):
        raise RejectedMessage(f"message.data must be a base64 string, got {type(raw).__name__}")
    if len(raw) > MAX_DATA_BYTES * 4 // 3 + 4:
        raise RejectedMessage(f"message.data is larger than the {MAX_DATA_BYTES}-byte limit")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        pass
    # Some producers use the URL-safe alphabet, often unpadded; decode it only when every
    # character belongs to it (the decoder would otherwise silently drop the rest).
    if _URLSAFE.fullmatch(raw):
        try:
            return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except (binascii.Error, ValueError):
            pass
    raise RejectedMessage("message.data is not valid base64")


def _text(message: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = message.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _text_attr(event: Any, name: str) -> str | None:
    try:
        value = event[name]  # cloudevents events expose attributes by item access
    except (KeyError, TypeError, AttributeError):
        return None
    return value if isinstance(value, str) else None
