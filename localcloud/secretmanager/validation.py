"""What a request may say about a secret: the shape of each body field and the documented limits.

Separate from the service so the rules read as the Secret resource reference states
them, and so that create and update are held to the same ones.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from localcloud.secretmanager.errors import invalid, precondition
from localcloud.secretmanager.model import Rotation, Secret
from localcloud.secretmanager.wire import parse_duration, parse_timestamp, pick

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_ANNOTATIONS_BYTES = 16 * 1024  # total must be *less* than this
MAX_LABELS = 64
MAX_ALIASES = 50
MAX_TOPICS = 10
MIN_ROTATION_LEAD = timedelta(seconds=300)
MIN_ROTATION_PERIOD = timedelta(seconds=3600)
MAX_ROTATION_SPAN = timedelta(seconds=3153600000)  # 100 years, both for the lead and the period


SECRET_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
_ANNOTATION_KEY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_TOPIC = re.compile(r"^projects/[^/]+/topics/[^/]+$")


def _is_label_letter(ch: str) -> bool:
    return unicodedata.category(ch) in ("Ll", "Lo")


def _is_label_char(ch: str) -> bool:
    return _is_label_letter(ch) or unicodedata.category(ch).startswith("N") or ch in "_-"


def validate_labels(labels: Mapping[str, str]) -> None:
    """Label rules from the Secret resource reference (PCRE classes \\p{Ll}, \\p{Lo}, \\p{N})."""
    if len(labels) > MAX_LABELS:
        raise invalid(f"A secret may have at most {MAX_LABELS} labels; got {len(labels)}.")
    for key, value in labels.items():
        if not isinstance(value, str):
            raise invalid(f"Label value for key [{key}] must be a string.")
        if not (1 <= len(key) <= 63) or len(key.encode()) > 128:
            raise invalid(f"Label key [{key}] must be 1 to 63 characters and at most 128 bytes.")
        if not _is_label_letter(key[0]) or not all(_is_label_char(ch) for ch in key):
            raise invalid(
                f"Label key [{key}] must start with a lowercase letter and contain only lowercase letters, digits, '_' and '-'."
            )
        if len(value) > 63 or len(value.encode()) > 128:
            raise invalid(f"Label value for key [{key}] must be at most 63 characters and 128 bytes.")
        if not all(_is_label_char(ch) for ch in value):
            raise invalid(
                f"Label value [{value}] for key [{key}] may contain only lowercase letters, digits, '_' and '-'."
            )


def validate_annotations(annotations: Mapping[str, str]) -> None:
    total = 0
    for key, value in annotations.items():
        if not isinstance(value, str):
            raise invalid(f"Annotation value for key [{key}] must be a string.")
        if len(key.encode()) > 128 or not _ANNOTATION_KEY.match(key):
            raise invalid(
                f"Annotation key [{key}] must be 1 to 63 characters, begin and end with an alphanumeric character "
                "and contain only alphanumerics, '-', '_' and '.'."
            )
        total += len(key.encode()) + len(value.encode())
    if total >= MAX_ANNOTATIONS_BYTES:
        raise invalid(f"The total size of annotation keys and values must be less than 16KiB; got {total} bytes.")


def validate_topics(topics: list[str]) -> None:
    if len(topics) > MAX_TOPICS:
        raise invalid(f"A secret may have at most {MAX_TOPICS} topics; got {len(topics)}.")
    for topic in topics:
        if not _TOPIC.match(topic):
            raise invalid(f"Topic name [{topic}] must be of the form projects/*/topics/*.")


def read_replication(body: Mapping[str, Any]) -> dict[str, Any]:
    replication = body.get("replication")
    if not isinstance(replication, dict) or not replication:
        raise invalid("Secret.replication is required: set either replication.automatic or replication.userManaged.")
    automatic = replication.get("automatic")
    user_managed = pick(replication, "userManaged", "user_managed")
    if (automatic is not None) == (user_managed is not None):
        raise invalid("Exactly one of replication.automatic and replication.userManaged must be set.")
    if automatic is not None:
        return {"automatic": {}}
    replicas = user_managed.get("replicas") if isinstance(user_managed, dict) else None
    if not replicas or not all(isinstance(r, dict) and r.get("location") for r in replicas):
        raise invalid("replication.userManaged.replicas must name at least one location.")
    return {"userManaged": {"replicas": [{"location": r["location"]} for r in replicas]}}


def read_string_map(body: Mapping[str, Any], camel: str, snake: str) -> dict[str, str]:
    value = pick(body, camel, snake)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"Invalid value at 'secret.{snake}': expected a map.")
    return dict(value)


def read_topics(body: Mapping[str, Any]) -> list[str]:
    topics = body.get("topics") or []
    if not isinstance(topics, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in topics):
        raise invalid("Invalid value at 'secret.topics': expected a list of {\"name\": ...}.")
    return [t["name"] for t in topics]


def read_aliases(body: Mapping[str, Any]) -> dict[str, int]:
    raw = pick(body, "versionAliases", "version_aliases") or {}
    if not isinstance(raw, dict):
        raise invalid("Invalid value at 'secret.version_aliases': expected a map.")
    aliases: dict[str, int] = {}
    for alias, number in raw.items():
        try:
            aliases[alias] = int(number)
        except (TypeError, ValueError):
            raise invalid(f"Invalid value at 'secret.version_aliases[{alias}]': expected an int64.") from None
    return aliases


def read_rotation(body: Mapping[str, Any]) -> Rotation:
    raw = body.get("rotation") or {}
    if not isinstance(raw, dict):
        raise invalid("Invalid value at 'secret.rotation': expected an object.")
    next_time = pick(raw, "nextRotationTime", "next_rotation_time")
    period = pick(raw, "rotationPeriod", "rotation_period")
    return Rotation(
        next_time=parse_timestamp(next_time, "secret.rotation.next_rotation_time") if next_time else None,
        period=parse_duration(period, "secret.rotation.rotation_period") if period else None,
    )


def read_expiration(body: Mapping[str, Any], now: datetime) -> datetime | None:
    expire = pick(body, "expireTime", "expire_time")
    ttl = body.get("ttl")
    if expire and ttl:
        raise invalid("Only one of secret.expire_time and secret.ttl may be set.")
    if ttl:
        span = parse_duration(ttl, "secret.ttl")
        if span <= timedelta(0):
            raise invalid("secret.ttl must be positive.")
        return now + span
    if expire:
        stamp = parse_timestamp(expire, "secret.expire_time")
        if stamp <= now:
            raise invalid("secret.expire_time must be in the future.")
        return stamp
    return None


def check_aliases(secret: Secret, aliases: Mapping[str, int]) -> None:
    if len(aliases) > MAX_ALIASES:
        raise invalid(f"A secret may have at most {MAX_ALIASES} version aliases; got {len(aliases)}.")
    for alias, number in aliases.items():
        if not ALIAS.match(alias) or alias in ("latest", "NEW"):
            raise invalid(
                f"Version alias [{alias}] must start with a letter, be at most 63 letters, digits, '-' or '_', "
                "and must not be 'latest' or 'NEW'."
            )
        version = secret.versions.get(number)
        if version is None:
            raise invalid(f"Version alias [{alias}] refers to version [{number}], which does not exist.")
        if version.state == "DESTROYED":
            raise invalid(f"Version alias [{alias}] refers to version [{number}], which is destroyed.")


def check_rotation(rotation: Rotation, topics: list[str], now: datetime, *, new_time: bool) -> None:
    if not rotation.is_set:
        return
    if not topics:
        raise invalid("A secret with a rotation policy must have at least one topic (Secret.topics).")
    if rotation.period is not None:
        if rotation.next_time is None:
            raise invalid("rotation.next_rotation_time must be set when rotation.rotation_period is set.")
        if rotation.period.microseconds:
            raise invalid("rotation.rotation_period must be a whole number of seconds.")
        if not (MIN_ROTATION_PERIOD <= rotation.period <= MAX_ROTATION_SPAN):
            raise invalid("rotation.rotation_period must be at least 3600s and at most 3153600000s.")
    if new_time and rotation.next_time is not None:
        if rotation.next_time < now + MIN_ROTATION_LEAD:
            raise invalid("rotation.next_rotation_time must be at least 300s (5 min) in the future.")
        if rotation.next_time > now + MAX_ROTATION_SPAN:
            raise invalid("rotation.next_rotation_time must be at most 3153600000s (100 years) in the future.")


def check_etag(given: str | None, current: str, what: str) -> None:
    if given and given != current:
        raise precondition(f"The etag provided in the request does not match the current etag of the {what}.")
