"""A lease: which run may write a secret's state, and until when, in one annotation.

Secret Manager is the only database (docs/external-apis.md §4.1, §4.2), so mutual exclusion between
function instances is an annotation ``{"holder", "expires"}`` written with the secret's
etag: of two runs that read the same etag, only one write succeeds, and the loser reads
again and finds the winner's lease. A lease expires by itself, so a run that dies while
holding one (a function killed at its timeout) wedges nobody for longer than that.

Rotations keep theirs in ``rotation-lease`` on the managed secret (shared/workflows/rotation), the
platform tier in ``canary-lease`` on a canary service's lock secret (shared/workflows/canary_lock.py).

Parsing is lenient on purpose: a hand-edited or garbled annotation reads as no lease
rather than wedging its owner forever; the etag still serialises the writers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from shared.core import json_text
from shared.model.integrations import Annotation
from shared.model.record import parse_timestamp, timestamp


@dataclass(frozen=True)
class Lease:
    """Who may write a secret's state, until when."""

    holder: str
    expires: datetime

    def live(self, now: datetime) -> bool:
        return now < self.expires

    def to_annotation(self) -> str:
        return json.dumps({"holder": self.holder, "expires": timestamp(self.expires)}, separators=(",", ":"))

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str], key: str = Annotation.ROTATION_LEASE) -> Lease | None:
        """The lease kept under annotation ``key`` (the rotation's unless told), or None."""
        raw = annotations.get(key)
        if not raw:
            return None
        try:
            data = json_text.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("holder"), str):
            return None
        expires = parse_timestamp(data.get("expires"))
        if expires is None:
            return None
        return cls(data["holder"], expires)
