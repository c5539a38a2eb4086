"""Group commit: batches of what concurrent callers have ready, and nobody acknowledged early."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from shared.core.group_commit import GroupCommit


class GatedCommit:
    """Records batches; the first commit waits until ``release`` so that others can queue."""

    def __init__(self, fail_batches: Sequence[int] = ()) -> None:
        self.batches: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_batches = set(fail_batches)

    def __call__(self, items: Sequence[str]) -> None:
        number = len(self.batches)
        self.batches.append(list(items))
        if number == 0:
            self.entered.set()
            assert self.release.wait(10)
        if number in self.fail_batches:
            raise ConnectionError(f"batch {number} lost")


def run_concurrently(
    group: GroupCommit[str], gate: GatedCommit, items: Sequence[str], *, sizes: Sequence[int] = ()
) -> dict[str, Exception | None]:
    """Submit ``items[0]`` first; once its commit is in flight, queue the rest, then let it finish."""
    results: dict[str, Exception | None] = {}

    def submit(item: str, size: int) -> None:
        results[item] = group.submit(item, size=size)

    sizes = list(sizes) or [0] * len(items)
    first = threading.Thread(target=submit, args=(items[0], sizes[0]))
    first.start()
    assert gate.entered.wait(10)
    others = [
        threading.Thread(target=submit, args=(item, size)) for item, size in zip(items[1:], sizes[1:], strict=True)
    ]
    for thread in others:
        thread.start()
    while len(group._queue) < len(others):  # every later caller is queued behind the first commit
        threading.Event().wait(0.001)
    gate.release.set()
    for thread in [first, *others]:
        thread.join(10)
        assert not thread.is_alive()
    return results


def test_a_lone_caller_commits_at_once_in_its_own_batch():
    batches: list[list[str]] = []
    group = GroupCommit(lambda items: batches.append(list(items)), max_items=10, max_bytes=100)
    assert group.submit("a") is None
    assert group.submit("b") is None
    assert batches == [["a"], ["b"]] and group.commits == 2


def test_callers_arriving_during_a_commit_share_the_next_one():
    gate = GatedCommit()
    group = GroupCommit(gate, max_items=100, max_bytes=10_000)
    items = [f"r{i}" for i in range(8)]

    results = run_concurrently(group, gate, items)

    assert results == dict.fromkeys(items)
    assert gate.batches[0] == ["r0"] and sorted(gate.batches[1]) == items[1:]
    assert group.commits == 2


def test_batches_respect_the_item_and_byte_bounds_but_an_oversized_item_still_goes():
    gate = GatedCommit()
    group = GroupCommit(gate, max_items=3, max_bytes=100)
    items = ["first", *(f"q{i}" for i in range(5)), "huge", "last"]
    sizes = [1, 10, 10, 10, 10, 10, 500, 10]

    results = run_concurrently(group, gate, items, sizes=sizes)

    assert all(error is None for error in results.values()) and len(results) == len(items)
    assert all(len(batch) <= 3 for batch in gate.batches)
    huge = next(batch for batch in gate.batches if "huge" in batch)
    assert huge == ["huge"]
    assert sorted(item for batch in gate.batches for item in batch) == sorted(items)


def test_a_failed_commit_fails_every_caller_in_its_batch_and_no_other():
    gate = GatedCommit(fail_batches=[1])
    group = GroupCommit(gate, max_items=100, max_bytes=10_000)

    results = run_concurrently(group, gate, ["ok", "x", "y", "z"])

    assert results["ok"] is None
    for item in ("x", "y", "z"):
        assert isinstance(results[item], ConnectionError)
    assert group.submit("after") is None  # the group keeps working


def test_an_interrupted_commit_is_never_taken_for_a_success():
    calls = []

    def interrupted(items: Sequence[str]) -> None:
        calls.append(list(items))
        raise KeyboardInterrupt

    group = GroupCommit(interrupted, max_items=10, max_bytes=100)
    with pytest.raises(KeyboardInterrupt):
        group.submit("a")
    assert calls == [["a"]] and not group._leading and not group._queue
