"""Group commit: concurrent callers' items go out together, and each caller waits for its own.

A function instance that serves several events at once (Cloud Functions gen2 concurrency)
publishes one result per event. Sending each in its own ``Publish`` call makes the round
trips, and the server's per-call work, the cost of a burst. Batching with a timer (the
``PublisherClient`` way) trades that for added latency on every result. Group commit, as
databases do it for their logs, needs no timer: the first caller commits at once; callers
who arrive while that commit is in flight queue up, and the next of them commits the whole
queue in one call when the first returns. A lone caller therefore pays exactly one call,
and eight concurrent callers about two calls between them.

Nothing is acknowledged early: :meth:`GroupCommit.submit` returns only when the batch that
holds the caller's item has been committed, and reports that batch's error to every caller
in it, so the caller can still fail its event (and have it redelivered).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(eq=False)
class _Slot(Generic[T]):
    item: T
    size: int
    woken: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    error: Exception | None = None


class GroupCommit(Generic[T]):
    """Commits items in batches of whatever concurrent callers have ready.

    Args:
        commit: sends one batch; raising fails every item in it.
        max_items / max_bytes: bounds on one batch (``size`` is what the caller says an item weighs);
            a single item larger than ``max_bytes`` still goes out, alone.
    """

    def __init__(self, commit: Callable[[Sequence[T]], None], *, max_items: int, max_bytes: int) -> None:
        self._commit = commit
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._queue: list[_Slot[T]] = []
        self._leading = False  # a caller is committing; the queue's head commits next
        self.commits = 0  # batches sent, for tests and the benchmark

    def submit(self, item: T, *, size: int = 0) -> Exception | None:
        """Commit ``item`` (with whatever else is waiting) and return the batch's error, if any."""
        slot = _Slot(item, size)
        with self._lock:
            self._queue.append(slot)
            lead = not self._leading
            self._leading = True
        if lead:
            self._lead()
        while not slot.done:
            slot.woken.wait()  # set once: either our batch is done, or it is our turn to commit
            if not slot.done:
                self._lead()
        return slot.error

    def _lead(self) -> None:
        """Commit a batch from the head of the queue (the caller's own slot is its first item)."""
        with self._lock:
            batch = self._take()
        error: Exception | None = None
        try:
            self._commit([slot.item for slot in batch])
        except Exception as exc:  # every caller in the batch gets it; none is acknowledged
            error = exc
        except BaseException as exc:  # interrupted: the others must not take it for a commit
            error = RuntimeError(f"the commit was interrupted ({type(exc).__name__})")
            raise
        finally:
            with self._lock:
                self.commits += 1
                successor = self._queue[0] if self._queue else None
                self._leading = successor is not None
            for slot in batch:
                slot.error, slot.done = error, True
                slot.woken.set()
            if successor is not None:
                successor.woken.set()

    def _take(self) -> list[_Slot[T]]:
        """The longest prefix of the queue within the bounds (at least one item); lock held."""
        count, weight = 0, 0
        for slot in self._queue:
            if count and (count >= self._max_items or weight + slot.size > self._max_bytes):
                break
            count, weight = count + 1, weight + slot.size
        batch, self._queue[:count] = self._queue[:count], []
        return batch
