"""Keeps credentials out of everything we write: log lines and published results.

Two nets, because either alone leaks. Patterns catch the *shapes* of secrets that pass
through this system (PEM private keys, key-file JSON fields, bearer/basic headers, JWTs,
OAuth tokens, long base64 blobs such as a docker config). Registered values catch the
exact secrets we have handled in this process, even when they have no telling shape.
"""

from __future__ import annotations

import base64
import re
import threading
from collections import OrderedDict
from typing import Any

MASK = "[REDACTED]"

_PEM = re.compile(r"-----BEGIN[A-Z ]*PRIVATE KEY-----.*?(?:-----END[A-Z ]*PRIVATE KEY-----|\Z)", re.DOTALL)
#: JSON-ish  "password": "…"  (also with escaped quotes inside an already-serialised string)
_JSON_FIELD = re.compile(
    r'(?P<key>\\?"(?:private_key|password|passwd|token|access_token|refresh_token|id_token|'
    r'client_secret|auth|apiKey|api_key|secret)\\?"\s*:\s*)(?P<value>\\?"(?:[^"\\]|\\.)*?\\?")',
    re.IGNORECASE,
)
#: key=value in URLs, form bodies and free text
_KV = re.compile(
    r"(?P<key>\b(?:password|passwd|token|access_token|refresh_token|id_token|client_secret|api_key)=)"
    r"(?P<value>[^&\s\"',;]+)",
    re.IGNORECASE,
)
_AUTH_HEADER = re.compile(r"\b(?P<scheme>Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
_BASIC_USERS = re.compile(r"\b(?P<user>_json_key_base64|_json_key|oauth2accesstoken):\S+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*")
_OAUTH = re.compile(r"\bya29\.[A-Za-z0-9._-]{10,}")
_LONG_B64 = re.compile(r"[A-Za-z0-9+/_-]{64,}={0,2}")
_HEX = re.compile(r"[0-9a-f]+")


def _long_b64(match: re.Match[str]) -> str:
    text = match.group(0)
    # Digests and ids are lower-case hex; base64 of real data mixes cases and digits.
    if _HEX.fullmatch(text) or text.islower() or text.isupper():
        return text
    return MASK


class _Registry:
    """Exact secret values seen by this process, bounded so it cannot grow forever.

    ``generation`` changes whenever a value is added that was not known yet, so that a
    text found clean before may be checked again; re-registering a known value (every
    event registers the key it tests) changes nothing.
    """

    def __init__(self, limit: int = 256) -> None:
        self._values: OrderedDict[str, None] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()
        self._longest_first: tuple[str, ...] = ()
        self.generation = 0

    def add(self, secret: str) -> None:
        if len(secret) < 8:
            return  # too short to redact without mangling ordinary words
        variants = {
            secret,
            base64.b64encode(secret.encode()).decode(),
            base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="),
            secret.replace("\n", "\\n"),
        }
        with self._lock:
            new = False
            for value in variants:
                new = new or value not in self._values
                self._values[value] = None
                self._values.move_to_end(value)
            if not new:
                return
            while len(self._values) > self._limit:
                self._values.popitem(last=False)
            # Longest first, so a secret is masked whole before any shorter secret inside it.
            self._longest_first = tuple(sorted(self._values, key=len, reverse=True))
            self.generation += 1

    def scrub(self, text: str) -> str:
        for value in self._longest_first:
            if value in text:
                text = text.replace(value, MASK)
        return text


_registry = _Registry()


def register_secret(secret: str | bytes) -> None:
    """Remember an exact secret value (and its base64 forms) so it is always masked."""
    if isinstance(secret, bytes):
        secret = secret.decode("utf-8", "replace")
    _registry.add(secret)


#: Texts found to hold no secret, with the registry generation they were checked against.
#: Logging an outcome and publishing it redact the same strings three times (the result,
#: the log line around it, the published copy), and most strings recur from event to event;
#: each is scanned once per generation. Only clean texts are kept: never a secret.
_clean: dict[str, int] = {}
_CLEAN_LIMIT = 2048
_CLEAN_MAX_LENGTH = 1024
_clean_lock = threading.Lock()


def redact_text(text: str) -> str:
    """Mask every secret in ``text``; idempotent."""
    generation = _registry.generation
    if _clean.get(text) == generation:
        return text
    masked = _mask(text)
    if masked == text and len(text) <= _CLEAN_MAX_LENGTH:
        with _clean_lock:
            if len(_clean) >= _CLEAN_LIMIT:
                _clean.clear()
            _clean[text] = generation  # checked against `generation`: a newer secret forces a rescan
    return masked


def _mask(text: str) -> str:
    text = _registry.scrub(text)
    text = _PEM.sub(MASK, text)
    text = _JSON_FIELD.sub(lambda m: f'{m.group("key")}"{MASK}"', text)
    text = _KV.sub(lambda m: m.group("key") + MASK, text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group('scheme')} {MASK}", text)
    text = _BASIC_USERS.sub(lambda m: f"{m.group('user')}:{MASK}", text)
    text = _JWT.sub(MASK, text)
    text = _OAUTH.sub(MASK, text)
    return _LONG_B64.sub(_long_b64, text)


_SECRET_KEYS = frozenset(
    {
        "private_key",
        "password",
        "passwd",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "client_secret",
        "auth",
        "authorization",
        "api_key",
        "apikey",
        "secret",
        "key_json",
    }
)


def redact(value: Any) -> Any:
    """Return ``value`` with secrets masked, walking dicts, lists and tuples.

    A dict entry whose *key* names a secret is masked whatever its value looks like.
    """
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and k.lower() in _SECRET_KEYS and v else redact(v)) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    return value
