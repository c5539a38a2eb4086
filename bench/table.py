"""The one table the bench prints: a row per measured claim, its target, and whether it holds."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class Verdict(enum.StrEnum):
    MET = "ok"
    MISSED = "MISSED"
    EXPLAINED = "explained"  # short of the target for a reason the README gives
    INFO = ""  # context, no target


@dataclass(frozen=True)
class Row:
    section: str  # "1".."5", the README's numbering
    measurement: str
    result: str
    target: str = ""
    verdict: Verdict = Verdict.INFO


def check(ok: bool) -> Verdict:
    return Verdict.MET if ok else Verdict.MISSED


def render(rows: Sequence[Row], *, title: str, machine: str, command: str) -> str:
    """A Markdown table (pastes into the README as it is) under a title, the machine and the command."""
    header = ("#", "measurement", "result", "target", "")
    cells = [header] + [(r.section, r.measurement, r.result, r.target, r.verdict.value) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    out = [title, "", f"machine: {machine}", f"command: `{command}`", "", line(header)]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out += [line(row) for row in cells[1:]]
    return "\n".join(out)


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 else "n/a"


def megabytes(value: int) -> str:
    return f"{value / 2**20:.0f} MB"
