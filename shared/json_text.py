"""JSON that somebody else wrote, parsed without letting its shape reach the stack.

CPython's JSON parser recurses once per nesting level and counts against the
interpreter's recursion limit. A document a few thousand levels deep makes it raise
``RecursionError``, which is not the ``ValueError`` callers expect. Worse, while the
parser sits near the limit, any finaliser the garbage collector happens to run (a
socket's ``__del__``, a generator's cleanup) fails with ``RecursionError`` of its own,
and those surface elsewhere as unraisable-exception noise, at random. So nesting is
counted first, with a scan that never recurses, and a document past the limit is
refused before the parser sees it.

Every document this project reads (key files, token answers, Dataloop's answers,
annotations, request messages) nests fewer than ten levels; :data:`MAX_DEPTH` leaves
room for anything plausible.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64

#: A whole string (escapes included, so a quoted bracket is skipped) or one bracket.
#: An unterminated string runs to the end, so its brackets are not counted either.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\Z)|[\[\]{}]', re.DOTALL)


class TooDeep(ValueError):
    """The document nests deeper than the caller allows; it was not parsed."""


def nesting_exceeds(text: str, limit: int) -> bool:
    """Whether ``text`` opens more than ``limit`` arrays/objects at once (strings ignored)."""
    if text.count("[") + text.count("{") <= limit:  # the common case, at C speed
        return False
    depth = 0
    for token in _TOKENS.finditer(text):
        char = text[token.start()]
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def loads(raw: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` for untrusted text: every refusal is a ``ValueError``.

    Raises:
        TooDeep: nesting past ``max_depth`` (checked before parsing).
        ValueError: not JSON, not decodable, or a number longer than the interpreter converts.
    """
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = raw.decode(json.detect_encoding(raw), "surrogatepass")
        except UnicodeDecodeError as exc:
            raise ValueError(f"JSON text is not {exc.encoding} (byte {exc.start})") from None
    if nesting_exceeds(raw, max_depth):
        raise TooDeep(f"JSON nests deeper than {max_depth} levels")
    return json.loads(raw)
