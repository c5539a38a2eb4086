"""Finding secrets in what the system writes: the scanner behind the hygiene evidence.

Two nets, independent of ``shared.core.redaction`` (a scanner that reused the redactor's own
patterns could only ever agree with it):

- **shapes**: a PEM private-key header, a ``private_key`` field with a value in (possibly
  escaped) JSON, a bearer or basic credential, a password/token field with a value, a JWT,
  an OAuth access token, and any long base64 run that *decodes* to key material or to a
  docker config that carries one;
- **exact values**: every secret the test worlds handed out (key files, their private keys
  and PEM lines, their base64, API keys, bot passwords, registry admin passwords), in the
  forms they travel in (raw, JSON-escaped, base64, URL-safe base64).

A finding names the kind of secret and where it was, never the value. ``CAPTURED`` is the
run's capture: every log line (formatted by the production formatter) and every result
message produced in this process by the reliability tests, appended by the conftest.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_KEY_FIELD = re.compile(r'private_key\\*"\s*:\s*\\*"(?!\[REDACTED\])(?!\\*")')
_FIELD = re.compile(
    r'(?i)\b(?:password|passwd|client_secret|refresh_token|id_token|access_token|api_?key)\\*"?\s*[:=]\s*\\*"?'
    r'(?!\[REDACTED\])[^\s"\\,}&]{4,}'
)
_BEARER = re.compile(r"\bBearer\s+(?!\[REDACTED\])(?!realm\b)[A-Za-z0-9._~+/=-]{12,}")
_BASIC = re.compile(r"\bBasic\s+(?!\[REDACTED\])(?=[A-Za-z+/=]*[0-9+/=])[A-Za-z0-9+/]{12,}={0,2}")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{6,}\.eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{8,}")
_OAUTH = re.compile(r"\bya29\.[A-Za-z0-9._-]{10,}")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{40,}={0,2}")
_KEY_MARKERS = (b"PRIVATE KEY", b'"private_key"', b"_json_key", b'\\"private_key\\"')

SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("private key (PEM)", _PEM),
    ("key-file JSON (private_key field)", _KEY_FIELD),
    ("password or token field", _FIELD),
    ("bearer token", _BEARER),
    ("basic credential", _BASIC),
    ("JWT (API key, id or registry token)", _JWT),
    ("OAuth access token", _OAUTH),
)


@dataclass(frozen=True)
class Leak:
    """One secret found: what kind, where, and at which offset (never the value itself)."""

    kind: str
    where: str
    offset: int

    def __str__(self) -> str:
        return f"{self.kind} in {self.where} at offset {self.offset}"


class SecretScanner:
    """Knows secrets by shape and by value; :meth:`scan` returns what it finds in a text."""

    def __init__(self) -> None:
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def known_count(self) -> int:
        return len(self._known)

    def know(self, value: str | bytes, kind: str) -> None:
        """Remember a secret value, in every form it may travel in."""
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if len(text) < 8:
            return
        forms = {
            text,
            text.replace("\n", "\\n"),
            json.dumps(text)[1:-1],
            base64.b64encode(text.encode()).decode(),
            base64.urlsafe_b64encode(text.encode()).decode().rstrip("="),
        }
        with self._lock:
            for form in forms:
                self._known.setdefault(form, kind)

    def know_key_file(self, text: str | bytes) -> None:
        """A service-account key file: the file, its private key, each line of the PEM body."""
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        self.know(text, "key-file JSON")
        try:
            document = json.loads(text)
        except ValueError:
            return
        private = document.get("private_key") if isinstance(document, dict) else None
        if isinstance(private, str):
            self.know(private, "private key")
            for line in private.splitlines():
                if len(line) >= 40 and "-----" not in line:
                    self.know(line, "private key (a PEM line)")

    def know_payload(self, payload: str | bytes) -> None:
        """A Secret Manager payload: a key file, Dataloop credentials JSON, or an opaque secret."""
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if isinstance(document, dict) and "private_key" in document:
            self.know_key_file(text)
            return
        self.know(text, "secret payload")
        if isinstance(document, dict):
            for value in document.values():
                if isinstance(value, str):
                    self.know(value, "credential value")

    def scan(self, text: str, where: str) -> list[Leak]:
        found = [Leak(kind, where, m.start()) for kind, pattern in SHAPES for m in pattern.finditer(text)]
        with self._lock:
            known = list(self._known.items())
        for value, kind in known:
            at = text.find(value)
            if at >= 0:
                found.append(Leak(f"{kind} (exact value)", where, at))
        for match in _BASE64_RUN.finditer(text):
            decoded = _b64decode(match.group(0))
            if decoded is not None and any(marker in decoded for marker in _KEY_MARKERS):
                found.append(Leak("base64 of key material or of a docker config", where, match.start()))
        return found

    def scan_all(self, texts: Iterable[tuple[str, str]]) -> tuple[int, list[Leak]]:
        """Scan ``(where, text)`` pairs; returns how many were scanned and what was found."""
        count, found = 0, []
        for where, text in texts:
            count += 1
            found += self.scan(text, where)
        return count, found


def _b64decode(run: str) -> bytes | None:
    padded = run + "=" * (-len(run) % 4)
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            return decode(padded)
        except (binascii.Error, ValueError):
            continue
    return None


# -- what this run wrote, captured by tests/reliability/conftest.py ------------------------------------


class Capture:
    """Texts written by the system during the run, in order; tests scan what is new since their start."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def add(self, where: str, text: str) -> None:
        with self._lock:
            self.texts.append((where, text))

    def since(self, mark: int) -> list[tuple[str, str]]:
        with self._lock:
            return self.texts[mark:]

    def __len__(self) -> int:
        with self._lock:
            return len(self.texts)

    def clear(self) -> None:
        with self._lock:
            self.texts.clear()


CAPTURED = Capture()


def capture_outcome(outcome: Any) -> None:
    """Have an outcome that no entry point published rendered as its result message.

    The conftest records every ``Outcome.to_message()`` (what is logged and what is
    published); workflow-level tests call this for the outcomes they assert on directly,
    so those are scanned too.
    """
    outcome.to_message()
