"""Google's Pub/Sub emulator, started by code, and the few admin steps tests and the demo need.

Everything here talks to the emulator through the real ``google-cloud-pubsub`` client, so
what the tests exercise is the same gRPC surface the functions use in production.

Emulator behaviour this module relies on (observed with emulator 0.8.20, see
``tests/localcloud/test_pubsub_emulator.py``):

* ``GET /`` on the gRPC port answers ``200 Ok``; that is the readiness probe.
* Topic and subscription ids need at least 3 characters; creating one that exists is
  ``409 AlreadyExists``; a subscription to a missing topic is ``404 NotFound``.
* Push subscriptions POST the raw push body ``{"message": {"data", "attributes",
  "messageId", "message_id", "publishTime", "publish_time"}, "subscription"}`` with
  ``Content-Type: application/json``: no ``ce-*`` headers, no auth token, no
  ``deliveryAttempt``. Any 2xx acknowledges; anything else (3xx, 4xx, 5xx) is redelivered
  about every second, forever, unless the subscription has a retry policy (then the
  delay grows towards ``maximum_backoff``) or a dead-letter policy (after
  ``max_delivery_attempts`` the message moves to the dead-letter topic with
  ``CloudPubSubDeadLetterSource*`` attributes).
* functions-framework turns that body into a ``messagePublished`` CloudEvent (id =
  messageId, ``source`` from a ``projects/P/topics/T`` in the request path) whose data
  is ``{"message": {"@type", "data", "attributes", "messageId", "publishTime"}}``: the
  ``subscription`` and the snake_case duplicates are dropped. A message with no data is
  pushed with ``"data": ""`` and converts fine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # google-cloud-pubsub ships no type information
from google.protobuf import duration_pb2
from google.pubsub_v1 import types as pubsub_types
from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

from localcloud.processes import ManagedProcess, free_port, start_process, stopping_on_error, wait_for_http

EMULATOR_SCRIPT = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
#: Any id works: the emulator accepts every project unless started with --projects.
DEFAULT_PROJECT = "local-project"
#: A cold JVM on 2 cores is ready in 1-2 s; the margin covers a loaded CI machine.
DEFAULT_READY_TIMEOUT = 60.0
#: Per-call deadline for admin and publish RPCs; the emulator answers in milliseconds.
RPC_TIMEOUT = 10.0


@dataclass(frozen=True)
class DeadLetter:
    """Where a subscription sends a message after ``max_delivery_attempts`` failed pushes/pulls."""

    topic_id: str
    max_delivery_attempts: int = 5  # Pub/Sub allows 5..100


@dataclass(frozen=True)
class RetryPolicy:
    """Redelivery backoff; without one the emulator retries about every second."""

    minimum_backoff_seconds: int = 1
    maximum_backoff_seconds: int = 10


def topic_push_endpoint(base_url: str, topic_path: str) -> str:
    """The push URL for a function at ``base_url`` fed by ``topic_path``.

    functions-framework builds the CloudEvent ``source`` from a ``projects/P/topics/T``
    it finds in the request path, so pushing to ``base_url/projects/P/topics/T`` gives the
    function the same ``source`` Eventarc would (``//pubsub.googleapis.com/projects/P/topics/T``).
    """
    return f"{base_url.rstrip('/')}/{topic_path}"


@dataclass(frozen=True)
class CollectedMessage:
    """A message a :class:`Collector` pulled, decoded for assertions."""

    data: bytes
    attributes: dict[str, str]
    message_id: str
    publish_time: str
    json: Any = None  # the data parsed as JSON, or None if it is not JSON

    @classmethod
    def from_received(cls, received: pubsub_types.ReceivedMessage) -> CollectedMessage:
        message = received.message
        data = bytes(message.data)
        try:
            parsed = json.loads(data) if data else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            parsed = None
        publish_time = message.publish_time
        return cls(
            data=data,
            attributes=dict(message.attributes),
            message_id=message.message_id,
            publish_time=publish_time.isoformat() if publish_time else "",
            json=parsed,
        )


class Collector:
    """Reads a pull subscription until a message of interest arrives.

    End-to-end tests read the functions' replies from the results topic this way. Every
    message pulled is acknowledged and kept in :attr:`messages`, so waiting for one reply
    does not lose another that arrived in the same batch.
    """

    def __init__(self, subscriber: pubsub_v1.SubscriberClient, subscription_path: str) -> None:
        self.subscriber = subscriber
        self.subscription_path = subscription_path
        self.messages: list[CollectedMessage] = []

    def pull_once(self, timeout: float = 2.0) -> list[CollectedMessage]:
        """One pull (the emulator holds an empty pull for about a second); acks what it got."""
        try:
            response = self.subscriber.pull(
                request={"subscription": self.subscription_path, "max_messages": 100},
                timeout=max(timeout, 0.5),
                retry=None,
            )
        except api_exceptions.DeadlineExceeded:
            return []
        if response.received_messages:
            self.subscriber.acknowledge(
                request={
                    "subscription": self.subscription_path,
                    "ack_ids": [received.ack_id for received in response.received_messages],
                },
                timeout=RPC_TIMEOUT,
            )
        batch = [CollectedMessage.from_received(received) for received in response.received_messages]
        self.messages.extend(batch)
        return batch

    def wait_for(
        self, predicate: Callable[[CollectedMessage], bool] = lambda message: True, *, timeout: float = 20.0
    ) -> CollectedMessage:
        """The first message, already collected or pulled before ``timeout``, matching ``predicate``.

        Raises:
            TimeoutError: nothing matched in time; the message lists what did arrive.
        """
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages:
                if predicate(message):
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [message.json if message.json is not None else message.data for message in self.messages]
                raise TimeoutError(
                    f"no matching message on {self.subscription_path} within {timeout:.1f}s; received {seen!r}"
                )
            self.pull_once(timeout=min(remaining, 2.0))

    def wait_for_json(self, *, timeout: float = 20.0, **expected: Any) -> CollectedMessage:
        """The first JSON message whose top-level keys include ``expected`` (e.g. ``request_id="r1"``)."""

        def matches(message: CollectedMessage) -> bool:
            body = message.json
            return isinstance(body, dict) and all(body.get(key) == value for key, value in expected.items())

        return self.wait_for(matches, timeout=timeout)

    def drain(self, quiet_seconds: float = 1.0, timeout: float = 10.0) -> list[CollectedMessage]:
        """Pull until nothing arrives for ``quiet_seconds`` (or ``timeout``); returns what was new."""
        start = len(self.messages)
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < quiet_seconds:
            if self.pull_once(timeout=min(quiet_seconds, 2.0)):
                quiet_since = time.monotonic()
        return self.messages[start:]


@dataclass
class PubSubEmulator:
    """A running emulator, the gRPC clients connected to it, and the admin steps tests need.

    Clients use an explicit insecure channel rather than ``PUBSUB_EMULATOR_HOST``, so
    starting an emulator never changes this process's environment; pass :meth:`env` to
    subprocesses (the functions) so their clients find it.
    """

    host: str
    port: int
    project: str
    process: ManagedProcess
    data_dir: Path
    startup_seconds: float
    _owns_data_dir: bool = False
    _publisher: pubsub_v1.PublisherClient | None = field(default=None, repr=False)
    _subscriber: pubsub_v1.SubscriberClient | None = field(default=None, repr=False)

    # -- connection ------------------------------------------------------------------
    @property
    def host_port(self) -> str:
        return f"{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment for a process whose Pub/Sub clients should use this emulator."""
        return {"PUBSUB_EMULATOR_HOST": self.host_port}

    def _channel(self) -> grpc.Channel:
        # The emulator is local; never route it through a proxy from the environment.
        return grpc.insecure_channel(self.host_port, options=[("grpc.enable_http_proxy", 0)])

    @property
    def publisher(self) -> pubsub_v1.PublisherClient:
        if self._publisher is None:
            self._publisher = pubsub_v1.PublisherClient(transport=PublisherGrpcTransport(channel=self._channel()))
        return self._publisher

    @property
    def subscriber(self) -> pubsub_v1.SubscriberClient:
        if self._subscriber is None:
            self._subscriber = pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=self._channel()))
        return self._subscriber

    def topic_path(self, topic_id: str) -> str:
        return topic_id if topic_id.startswith("projects/") else f"projects/{self.project}/topics/{topic_id}"

    def subscription_path(self, subscription_id: str) -> str:
        if subscription_id.startswith("projects/"):
            return subscription_id
        return f"projects/{self.project}/subscriptions/{subscription_id}"

    # -- admin -----------------------------------------------------------------------
    def ensure_topic(self, topic_id: str) -> str:
        """Create the topic unless it exists; returns its path."""
        path = self.topic_path(topic_id)
        with contextlib.suppress(api_exceptions.AlreadyExists):
            self.publisher.create_topic(request={"name": path}, timeout=RPC_TIMEOUT)
        return path

    def ensure_pull_subscription(
        self,
        subscription_id: str,
        topic_id: str,
        *,
        ack_deadline_seconds: int = 10,
        dead_letter: DeadLetter | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> str:
        """Create a pull subscription unless it exists; returns its path.

        Raises:
            ValueError: a subscription of that name exists on another topic.
            google.api_core.exceptions.NotFound: the topic (or dead-letter topic) is missing.
        """
        return self._ensure_subscription(
            subscription_id, topic_id, None, ack_deadline_seconds, dead_letter, retry_policy
        )

    def ensure_push_subscription(
        self,
        subscription_id: str,
        topic_id: str,
        endpoint: str,
        *,
        ack_deadline_seconds: int = 10,
        dead_letter: DeadLetter | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> str:
        """Create a push subscription to ``endpoint`` unless it exists; returns its path.

        An existing subscription is re-pointed at ``endpoint``, because a restarted
        function listens on a new port.

        Raises:
            ValueError: a subscription of that name exists on another topic.
            google.api_core.exceptions.NotFound: the topic (or dead-letter topic) is missing.
        """
        return self._ensure_subscription(
            subscription_id, topic_id, endpoint, ack_deadline_seconds, dead_letter, retry_policy
        )

    def _ensure_subscription(
        self,
        subscription_id: str,
        topic_id: str,
        endpoint: str | None,
        ack_deadline_seconds: int,
        dead_letter: DeadLetter | None,
        retry_policy: RetryPolicy | None,
    ) -> str:
        path = self.subscription_path(subscription_id)
        topic = self.topic_path(topic_id)
        request: dict[str, Any] = {"name": path, "topic": topic, "ack_deadline_seconds": ack_deadline_seconds}
        if endpoint is not None:
            request["push_config"] = {"push_endpoint": endpoint}
        if dead_letter is not None:
            request["dead_letter_policy"] = {
                "dead_letter_topic": self.topic_path(dead_letter.topic_id),
                "max_delivery_attempts": dead_letter.max_delivery_attempts,
            }
        if retry_policy is not None:
            request["retry_policy"] = {
                "minimum_backoff": duration_pb2.Duration(seconds=retry_policy.minimum_backoff_seconds),
                "maximum_backoff": duration_pb2.Duration(seconds=retry_policy.maximum_backoff_seconds),
            }
        try:
            self.subscriber.create_subscription(request=request, timeout=RPC_TIMEOUT)
            return path
        except api_exceptions.AlreadyExists:
            pass
        existing = self.subscriber.get_subscription(request={"subscription": path}, timeout=RPC_TIMEOUT)
        if existing.topic != topic:
            raise ValueError(f"subscription {path} exists on {existing.topic}, not {topic}")
        wanted = endpoint or ""
        if existing.push_config.push_endpoint != wanted:
            self.subscriber.modify_push_config(
                request={"subscription": path, "push_config": {"push_endpoint": wanted}}, timeout=RPC_TIMEOUT
            )
        return path

    def collector(self, subscription_id: str) -> Collector:
        """A :class:`Collector` on an existing pull subscription."""
        return Collector(self.subscriber, self.subscription_path(subscription_id))

    # -- publishing ----------------------------------------------------------------------
    def publish(self, topic_id: str, data: bytes, attributes: Mapping[str, str] | None = None) -> str:
        """Publish and wait for the server's message id."""
        future = self.publisher.publish(self.topic_path(topic_id), data, **dict(attributes or {}))
        return str(future.result(timeout=RPC_TIMEOUT))

    def publish_json(self, topic_id: str, payload: Any, attributes: Mapping[str, str] | None = None) -> str:
        """Publish ``payload`` as compact UTF-8 JSON; returns the message id."""
        return self.publish(topic_id, json.dumps(payload, separators=(",", ":")).encode(), attributes)

    # -- lifetime ------------------------------------------------------------------------
    def stop(self) -> None:
        """Close the clients, stop the JVM (its whole process group), remove our temp dir."""
        try:
            if self._publisher is not None:
                self._publisher.stop()
                self._publisher.transport.close()
            if self._subscriber is not None:
                self._subscriber.close()
        except Exception:  # closing clients must not keep the emulator running
            pass
        finally:
            self._publisher = self._subscriber = None
            self.process.stop()
            if self._owns_data_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> PubSubEmulator:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_emulator(
    *,
    project: str = DEFAULT_PROJECT,
    workdir: Path | None = None,
    port: int | None = None,
    ready_timeout: float = DEFAULT_READY_TIMEOUT,
    script: Path = EMULATOR_SCRIPT,
) -> PubSubEmulator:
    """Start the emulator on 127.0.0.1 and wait until it answers.

    Args:
        project: the project id helpers build topic and subscription paths with.
        workdir: where the data dir and ``emulator.log`` go; None uses a temp dir that
            :meth:`PubSubEmulator.stop` removes (keep one to read the log after a failure).
        port: a fixed port; None asks the OS for a free one.
        ready_timeout: seconds to wait for ``GET /`` to answer.
        script: the emulator's launcher (it ``exec``\\s java).

    Raises:
        FileNotFoundError: the emulator or java is not installed.
        ProcessStartError: it exited or did not answer in time (message has the log tail).
    """
    if not script.exists():
        raise FileNotFoundError(f"Pub/Sub emulator not found at {script} (install google-cloud-sdk's pubsub-emulator)")
    if shutil.which("java") is None:
        raise FileNotFoundError("the Pub/Sub emulator needs java on PATH")
    owns_dir = workdir is None
    base = Path(tempfile.mkdtemp(prefix="pubsub-emulator-")) if workdir is None else workdir
    data_dir = base / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    host, port = "127.0.0.1", port or free_port()
    env = {key: value for key, value in os.environ.items() if key != "PUBSUB_EMULATOR_HOST"}
    process = start_process(
        [str(script), f"--host={host}", f"--port={port}", f"--data-dir={data_dir}"],
        name=f"pubsub-emulator:{port}",
        log_path=base / "emulator.log",
        env=env,
    )
    with stopping_on_error(process):
        waited = wait_for_http(f"http://{host}:{port}/", timeout=ready_timeout, process=process)
    return PubSubEmulator(
        host=host,
        port=port,
        project=project,
        process=process,
        data_dir=data_dir,
        startup_seconds=waited,
        _owns_data_dir=owns_dir,
    )
