"""The repository explains itself: no comment or document points at material a maintainer will not have.

Facts about other services are cited to docs/external-apis.md, whose entries name public
sources. What is refused here is the other kind of reference: a design file kept outside the
repository, a brief someone was given, or a bare issue number of a tracker that is not
named. A public issue or pull request of another project is a legitimate source when it
is given as its URL, so URLs are removed from a line before it is checked.

The patterns are built so that this file does not match them itself.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = (".py", ".md", ".yaml", ".yml", ".sh")
NAMES = ("Makefile",)

URL = re.compile(r"\bhttps?://\S+")
FORBIDDEN = {
    "an outside design file": re.compile(r"\bDESIGN\.md\b", re.IGNORECASE),
    "a brief": re.compile(r"\bthe\s+brief\b", re.IGNORECASE),
    "an issue number": re.compile(r"\bissues?\s*(?:no\.?\s*)?#?\d+\b", re.IGNORECASE),
}


def tracked_files() -> list[str]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout.decode("utf-8")
    except (OSError, subprocess.CalledProcessError) as error:  # pragma: no cover - no git checkout
        pytest.skip(f"not a git checkout: {error}")
    return sorted(name for name in listed.split("\0") if name and (name.endswith(SUFFIXES) or Path(name).name in NAMES))


def references(text: str) -> list[tuple[int, str, str]]:
    """``(line number, kind, line)`` for every forbidden reference, URLs ignored."""
    found: list[tuple[int, str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        bare = URL.sub("", line)
        found.extend((number, kind, line.strip()) for kind, pattern in FORBIDDEN.items() if pattern.search(bare))
    return found


def test_no_tracked_file_refers_to_material_outside_the_repository() -> None:
    offenders = []
    for name in tracked_files():
        path = ROOT / name
        if not path.is_file():  # deleted in the work tree, not yet in the index
            continue
        for number, kind, line in references(path.read_text(encoding="utf-8", errors="replace")):
            offenders.append(f"{name}:{number}: {kind}: {line}")
    assert not offenders, "cite docs/external-apis.md or a public URL instead:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("see " + "DESIGN" + ".md 3.1", "an outside design file"),
        ("as the " + "brief asks", "a brief"),
        ("# fixes iss" + "ue 12", "an issue number"),
        ("(Iss" + "ue #7)", "an issue number"),
        ("SEED = 8  # iss" + "ue no. 8", "an issue number"),
    ],
)
def test_the_patterns_catch_what_they_are_for(line: str, kind: str) -> None:
    assert [found for _, found, _ in references(line)] == [kind]


@pytest.mark.parametrize(
    "line",
    [
        "https://github.com/GoogleContainerTools/skaffold/issues/6743 (a GAR token URL)",
        "the source: <https://github.com/crossplane-contrib/provider-gcp/issues/373>",
        "waiting briefly for a just-created account",
        "responses quoted in public issue threads",
        "def _issue(self, email: str) -> dict[str, Any]:",
    ],
)
def test_the_patterns_leave_legitimate_text_alone(line: str) -> None:
    assert references(line) == []
