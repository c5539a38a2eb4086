"""Publishing on Pub/Sub: outcomes on the results topic, rotation messages on the rotation topic.

Both build their publisher on first use (the client's import is heavy, and only the
functions that publish pay for it) and reuse it for the life of the instance.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from shared.core.errors import ServiceUnavailable
from shared.core.group_commit import GroupCommit
from shared.model.results import Outcome


class PubSubResultSink:
    """Publishes outcomes as JSON on the results topic; one publisher per process.

    Results go out through the generated client's ``Publish``, and the function waits for
    the server's acknowledgement, so it never reports success for a result that was not
    delivered. Concurrent events share calls by group commit (:mod:`shared.core.group_commit`):
    a lone result is published at once, in its own call, while results that arrive during
    a call in flight go out together in the next one. The batching
    ``google.cloud.pubsub_v1.PublisherClient`` is the wrong tool: a function waits for each
    result anyway, so its timer (``max_latency``, 10 ms) only adds latency, and it starts a
    commit thread per batch; one result at a time against the emulator cost 0.8 ms of CPU
    and 2 ms this way, 2.9 ms and 17 ms batched (README, "Performance"). The client is
    created on first use (its import is heavy) and reused; like the batching client, it
    honours ``PUBSUB_EMULATOR_HOST``.
    """

    #: Pub/Sub allows 1,000 messages and 10 MB per Publish; stay well inside both.
    MAX_BATCH_MESSAGES = 100
    MAX_BATCH_BYTES = 4 * 1024 * 1024

    def __init__(self, topic_path: str, *, timeout: float = 30.0) -> None:
        self.topic_path = topic_path
        self.timeout = timeout
        self._publisher: Any = None
        self._retry: Any = None
        self._lock = threading.Lock()
        self._batches = GroupCommit(self._send, max_items=self.MAX_BATCH_MESSAGES, max_bytes=self.MAX_BATCH_BYTES)

    def _client(self) -> Any:
        if self._publisher is None:
            with self._lock:
                if self._publisher is None:
                    from google.api_core import exceptions as gexc
                    from google.api_core import retry as gretry
                    from google.pubsub_v1 import PublisherClient

                    # The generated client's own retry for Publish, bounded by our timeout
                    # rather than its 600 s.
                    self._retry = gretry.Retry(
                        predicate=gretry.if_exception_type(
                            gexc.Aborted,
                            gexc.Cancelled,
                            gexc.DeadlineExceeded,
                            gexc.InternalServerError,
                            gexc.ResourceExhausted,
                            gexc.ServiceUnavailable,
                            gexc.Unknown,
                        ),
                        initial=0.1,
                        maximum=5.0,
                        multiplier=4.0,
                        timeout=self.timeout,
                    )
                    self._publisher = PublisherClient()
        return self._publisher

    @property
    def publish_calls(self) -> int:
        """``Publish`` calls made so far (each carries one or more results)."""
        return self._batches.commits

    def publish(self, outcome: Outcome, message: Mapping[str, Any] | None = None) -> None:
        """Publish ``outcome`` (as ``message``, its ``to_message()``, if already built) once the server has it.

        Raises:
            ServiceUnavailable: it could not be published (transient: redeliver the event).
        """
        if message is None:
            message = outcome.to_message()
        data = json.dumps(message, separators=(",", ":"), default=str).encode()
        attributes = {"kind": outcome.kind, "status": outcome.status.value}
        if outcome.request_id:
            attributes["request_id"] = str(outcome.request_id)[:256]
        error = self._batches.submit({"data": data, "attributes": attributes}, size=len(data) + 200)
        if error is not None:
            raise ServiceUnavailable(
                f"could not publish the result on {self.topic_path}: {type(error).__name__}: {error}"
            ) from error

    def _send(self, messages: Sequence[dict[str, Any]]) -> None:
        self._client().publish(
            request={"topic": self.topic_path, "messages": list(messages)},
            retry=self._retry,
            timeout=self.timeout,
        )


class PubSubFanOut:
    """Publishes JSON messages on the rotation topic with one reused ``PublisherClient``.

    All messages are handed to the client first (it batches them), then every future is
    awaited, so a sweep never reports messages as sent that Pub/Sub did not accept.
    """

    def __init__(self, topic_path: str, *, publisher: Any = None, timeout: float = 60.0) -> None:
        self.topic_path = topic_path
        self.timeout = timeout
        self._publisher = publisher
        self._lock = threading.Lock()

    def _client(self) -> Any:
        if self._publisher is None:
            with self._lock:
                if self._publisher is None:
                    from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # google-cloud-pubsub ships no type information

                    self._publisher = pubsub_v1.PublisherClient()
        return self._publisher

    def publish(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """Publish every message and wait for all; raises ServiceUnavailable naming the failures."""
        if not messages:
            return 0
        client = self._client()
        futures = []
        for message in messages:
            data = json.dumps(message, separators=(",", ":")).encode()
            attributes = {k: str(v) for k, v in message.items() if k in ("kind", "integration")}
            futures.append((message, client.publish(self.topic_path, data, **attributes)))
        deadline = time.monotonic() + self.timeout
        failed: list[tuple[Mapping[str, Any], BaseException]] = []
        for message, future in futures:
            try:
                future.result(timeout=max(0.1, deadline - time.monotonic()))
            except Exception as exc:
                failed.append((message, exc))
        if failed:
            first = failed[0][1]
            raise ServiceUnavailable(
                f"{len(failed)} of {len(messages)} rotation messages could not be published on {self.topic_path} "
                f"(first: {type(first).__name__}: {first}); the sweep is redelivered and publishes again"
            )
        return len(futures)
