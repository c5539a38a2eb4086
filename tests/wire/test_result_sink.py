"""The results sink through the real generated Pub/Sub client, against the emulator.

Concurrent results share ``Publish`` calls (group commit), and each arrives exactly once
with its attributes; a publish that cannot reach Pub/Sub fails its event.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from shared.adapters.pubsub import PubSubResultSink
from shared.core.errors import ServiceUnavailable
from shared.model.results import Outcome, Status
from tests.fixtures.pubsub import PubSubSandbox

pytestmark = pytest.mark.wire


class FirstCallHeld(PubSubResultSink):
    """Holds the first ``Publish`` until the other results are queued behind it."""

    def __init__(self, topic_path: str, waiting: int) -> None:
        super().__init__(topic_path, timeout=10)
        self.waiting = waiting
        self.sizes: list[int] = []
        self.holding = threading.Event()

    def _send(self, messages: Sequence[dict[str, Any]]) -> None:
        if not self.holding.is_set():
            self.holding.set()
            for _ in range(2000):  # at most 10 s
                if len(self._batches._queue) >= self.waiting:
                    break
                threading.Event().wait(0.005)
        self.sizes.append(len(messages))
        super()._send(messages)


def test_concurrent_results_share_publish_calls_and_all_arrive_once(
    pubsub: PubSubSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub.emulator.host_port)
    topic = pubsub.topic("results")
    collector = pubsub.collector(topic)
    sink = FirstCallHeld(topic, waiting=7)
    errors: list[BaseException] = []

    def publish(number: int) -> None:
        try:
            sink.publish(Outcome("reference-test", Status.PASSED, f"result {number}", request_id=f"r-{number}"))
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=publish, args=(0,))
    first.start()
    assert sink.holding.wait(10)
    others = [threading.Thread(target=publish, args=(n,)) for n in range(1, 8)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(20)

    assert errors == []
    assert sink.sizes == [1, 7] and sink.publish_calls == 2
    for _ in range(10):
        if len(collector.messages) >= 8:
            break
        collector.pull_once()
    got = sorted(message.attributes["request_id"] for message in collector.messages)
    assert got == sorted(f"r-{n}" for n in range(8))
    assert all(m.attributes["status"] == "passed" and m.json["schema"] for m in collector.messages)


def test_a_result_that_cannot_be_published_fails_its_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:9")  # nothing listens there
    sink = PubSubResultSink("projects/p/topics/results", timeout=1.0)
    with pytest.raises(ServiceUnavailable) as info:
        sink.publish(Outcome("reference-test", Status.PASSED, "lost?"))
    assert "could not publish the result on projects/p/topics/results" in str(info.value)
    assert sink.publish_calls == 1
