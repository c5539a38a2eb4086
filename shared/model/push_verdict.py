"""An integration's last push verdict (the ``last-push`` annotation), and when it is rewritten.

``on_push`` tests every push, but the record is written only when the verdict changes
(passed to failed, failed to passed, one failure code to another): a warm push whose
verdict stays the same then costs no Secret Manager call at all, and ``since`` keeps the
moment the current verdict began, which is what an operator asks ("failing since when?").

Nothing recorded reads as passing: an integration is provisioned with a proven key, so
the first push that passes has nothing new to say, and the push path keeps its single
remote call on every instance.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.core import json_text
from shared.model.integrations import Annotation
from shared.model.record import SecretRecord, parse_timestamp, timestamp

#: A reason is for a person; the annotation must stay far below Secret Manager's 16 KiB total.
REASON_CHARS = 300


@dataclass(frozen=True)
class PushVerdict:
    """What the pushes of an integration have said since ``since`` (the image is the one that said it first)."""

    passed: bool
    code: str | None
    image: str
    since: datetime
    reason: str = ""

    def same_verdict(self, other: PushVerdict) -> bool:
        return self.passed == other.passed and (self.passed or self.code == other.code)

    def to_annotation(self) -> str:
        return json.dumps(
            {
                "status": "passed" if self.passed else "failed",
                "code": self.code,
                "image": self.image,
                "since": timestamp(self.since),
                "reason": self.reason[:REASON_CHARS],
            },
            separators=(",", ":"),
        )

    def to_status(self) -> dict[str, Any]:
        """The JSON-ready form ``status`` replies with (the annotation's, read back)."""
        return {
            "status": "passed" if self.passed else "failed",
            "code": self.code,
            "image": self.image,
            "since": timestamp(self.since),
            "reason": self.reason,
        }

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str]) -> PushVerdict | None:
        """The recorded verdict, or None when there is none or it does not read as one.

        Lenient, as leases are: a hand-edited annotation reads as no verdict, so the next
        push that disagrees with "passing" simply writes a good one.
        """
        raw = annotations.get(Annotation.LAST_PUSH)
        if not raw:
            return None
        try:
            data = json_text.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("status") not in ("passed", "failed"):
            return None
        since = parse_timestamp(data.get("since"))
        if since is None:
            return None
        code = data.get("code")
        image = data.get("image")
        reason = data.get("reason")
        return cls(
            passed=data["status"] == "passed",
            code=code if isinstance(code, str) and code else None,
            image=image if isinstance(image, str) else "",
            since=since,
            reason=reason if isinstance(reason, str) else "",
        )


def verdict_change(record: SecretRecord, verdict: PushVerdict) -> dict[str, Any] | None:
    """The write that records ``verdict`` on ``record``, or None when the record already says it.

    Shaped as a :data:`shared.model.record.Change`, so that after a stale etag the same
    decision is taken again on the fresh record: a concurrent push that recorded the same
    verdict makes this one a no-op (its ``since`` stays), and one that recorded a verdict
    of a later test is not overwritten by this older news.
    """
    recorded = PushVerdict.from_annotations(record.annotations)
    if recorded is None:
        if verdict.passed:
            return None
    elif recorded.same_verdict(verdict) or recorded.since > verdict.since:
        return None
    return {"annotations": {**record.annotations, Annotation.LAST_PUSH: verdict.to_annotation()}}
