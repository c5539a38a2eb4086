"""How Secret Manager's JSON spells checksums, timestamps, durations and etags.

The generated REST client is strict about these encodings, so they live in one place
that the service, the validators and the filter parser all decode and encode through.
"""

from __future__ import annotations

import re
import secrets as _random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from localcloud.secretmanager.errors import invalid


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli), the checksum Secret Manager verifies on ``payload.dataCrc32c``."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _crc32c_table()

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)


def parse_timestamp(text: str, what: str) -> datetime:
    """An RFC 3339 timestamp as the JSON mapping of ``google.protobuf.Timestamp`` allows."""
    match = _RFC3339.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise invalid(f"Invalid value at '{what}': '{text}' is not an RFC 3339 timestamp.")
    year, month, day, hour, minute, second, frac, _z, sign, off_h, off_m = match.groups()
    micros = int((frac or "0").ljust(9, "0")[:6])
    try:
        stamp = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tzinfo=UTC)
    except ValueError:
        raise invalid(f"Invalid value at '{what}': '{text}' is not a valid date.") from None
    if sign:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        stamp = stamp - offset if sign == "+" else stamp + offset
    return stamp


def format_timestamp(stamp: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as Google's JSON mapping writes timestamps."""
    stamp = stamp.astimezone(UTC)
    base = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{stamp.microsecond:06d}Z" if stamp.microsecond else f"{base}Z"


_DURATION = re.compile(r"^(-?\d+)(?:\.(\d{1,9}))?s$")


def parse_duration(text: Any, what: str) -> timedelta:
    """A ``google.protobuf.Duration`` in its JSON form (``"3600s"``, ``"1.5s"``)."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise invalid(f"Invalid value at '{what}': '{text}' is not a duration such as \"3600s\".")
    seconds, frac = match.groups()
    sign = -1 if seconds.startswith("-") else 1
    micros = int((frac or "0").ljust(9, "0")[:6])
    return timedelta(seconds=int(seconds)) + sign * timedelta(microseconds=micros)


def format_duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds:.6f}".rstrip("0") + "s"


def new_etag() -> str:
    """An opaque quoted etag (AIP-154), as the service returns them."""
    return f'"{_random.token_hex(7)}"'


def pick(body: Mapping[str, Any], camel: str, snake: str) -> Any:
    """A field by its JSON (camelCase) or proto (snake_case) name; the JSON mapping accepts both."""
    return body[camel] if camel in body else body.get(snake)


def camel_to_snake(path: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m.group(1).lower(), path)
