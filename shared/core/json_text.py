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

import itertools
import json
import operator
import re
from typing import Any

MAX_DEPTH = 64

#: Escapes go first, so that no quote inside a string is escaped any more; then a string is
#: simply quote, non-quotes, quote (or the end, for an unterminated one).
_ESCAPE = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*(?:"|\Z)')
_BRACKETS_ONLY = str.maketrans("", "", "".join(chr(c) for c in range(128) if chr(c) not in "[]{}"))
#: An opening bracket counts 2 and a closing one 0, so after k brackets the running sum is k + depth.
_STEP = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


class TooDeep(ValueError):
    """The document nests deeper than the caller allows; it was not parsed."""


def nesting_exceeds(text: str, limit: int) -> bool:
    """Whether ``text`` opens more than ``limit`` arrays/objects at once (brackets in strings ignored).

    Every step runs in C (a regex, str.translate, itertools): a large answer costs under twice
    what parsing it does, never a Python loop per character.
    """
    if text.count("[") + text.count("{") <= limit:  # the common case
        return False
    structure = _STRING.sub("", _ESCAPE.sub("", text)).translate(_BRACKETS_ONLY)
    steps = structure.encode("ascii", "ignore").translate(_STEP)  # non-ASCII here is not JSON anyway
    return max(map(operator.sub, itertools.accumulate(steps), itertools.count(1)), default=0) > limit


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
