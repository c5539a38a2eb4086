"""The documented limits on a secret's ids, labels, annotations and topics.

Separate from the service so the rules read as the Secret resource reference states
them, and so that create and update are held to the same ones.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import timedelta

from localcloud.secretmanager.errors import invalid

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
