"""The local cloud's process plumbing against the real Pub/Sub emulator and functions-framework.

These tests pin down the emulator behaviours the end-to-end tests rely on (push body,
CloudEvent conversion, redelivery, dead-lettering) and prove that stopping a process
stops its whole tree, including when the code that started it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import requests
from google.api_core import exceptions as api_exceptions

from localcloud.functions import start_function
from localcloud.processes import (
    ManagedProcess,
    ProcessStartError,
    free_port,
    pid_running,
    start_process,
    stopping_on_error,
    wait_for_port,
)
from localcloud.pubsub import DeadLetter, PubSubEmulator, RetryPolicy, start_emulator
from tests.fixtures.pubsub import PubSubSandbox, RunFunction

pytestmark = pytest.mark.wire

ECHO_SOURCE = Path(__file__).parent / "echo_function"


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_records(path: Path, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(path)
        if len(records) >= count:
            return records
        if time.monotonic() >= deadline:
            raise AssertionError(f"expected {count} deliveries within {timeout}s, got {len(records)}: {records}")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def assert_all_gone(pids: list[int]) -> None:
    assert pids, "expected to have seen some processes"
    assert [pid for pid in pids if pid_running(pid)] == []


# -- the emulator ------------------------------------------------------------------------


def test_emulator_is_up_and_answers_http(pubsub_emulator: PubSubEmulator) -> None:
    assert pubsub_emulator.process.running()
    assert pubsub_emulator.startup_seconds < 30
    with urllib.request.urlopen(f"http://{pubsub_emulator.host_port}/", timeout=5) as response:
        assert response.status == 200
        assert response.read().strip() == b"Ok"
    assert pubsub_emulator.env() == {"PUBSUB_EMULATOR_HOST": pubsub_emulator.host_port}
    assert "PUBSUB_EMULATOR_HOST" not in os.environ or os.environ["PUBSUB_EMULATOR_HOST"] != pubsub_emulator.host_port


def test_topic_and_subscription_creation_is_idempotent(pubsub: PubSubSandbox) -> None:
    emulator = pubsub.emulator
    topic = pubsub.topic()
    assert emulator.ensure_topic(topic) == topic
    listed = [
        t.name for t in emulator.publisher.list_topics(request={"project": f"projects/{emulator.project}"}, timeout=10)
    ]
    assert listed.count(topic) == 1

    subscription = pubsub.pull_subscription(topic)
    assert emulator.ensure_pull_subscription(subscription, topic) == subscription
    assert emulator.subscriber.get_subscription(request={"subscription": subscription}, timeout=10).topic == topic

    other_topic = pubsub.topic("other")
    with pytest.raises(ValueError, match="exists on"):
        emulator.ensure_pull_subscription(subscription, other_topic)


def test_emulator_errors_match_pubsub(pubsub: PubSubSandbox) -> None:
    emulator = pubsub.emulator
    with pytest.raises(api_exceptions.NotFound):
        emulator.ensure_pull_subscription(pubsub.unique_id("orphan"), pubsub.unique_id("missing"))
    with pytest.raises(api_exceptions.InvalidArgument):
        emulator.ensure_topic("ab")  # ids need at least 3 characters
    with pytest.raises(api_exceptions.NotFound):
        emulator.ensure_pull_subscription(
            pubsub.unique_id("dl"), pubsub.topic(), dead_letter=DeadLetter(pubsub.unique_id("nowhere"))
        )


def test_push_subscription_is_repointed_when_the_function_moves(pubsub: PubSubSandbox) -> None:
    topic = pubsub.topic()
    subscription = pubsub.push_subscription(topic, "http://127.0.0.1:1")
    new_endpoint = f"http://127.0.0.1:2/{topic}"
    pubsub.emulator.ensure_push_subscription(subscription, topic, new_endpoint)
    config = pubsub.emulator.subscriber.get_subscription(request={"subscription": subscription}, timeout=10).push_config
    assert config.push_endpoint == new_endpoint


def test_collector_reads_published_json_with_attributes(pubsub: PubSubSandbox) -> None:
    topic = pubsub.topic("results")
    collector = pubsub.collector(topic)
    pubsub.emulator.publish_json(topic, {"request_id": "other", "ok": False})
    message_id = pubsub.emulator.publish_json(topic, {"request_id": "r-1", "ok": True}, {"kind": "result"})

    message = collector.wait_for_json(request_id="r-1", timeout=10)

    assert message.json == {"request_id": "r-1", "ok": True}
    assert message.attributes == {"kind": "result"}
    assert message.message_id == message_id
    assert message.publish_time
    assert [m.json["request_id"] for m in collector.messages] == ["other", "r-1"]
    # What was read was acknowledged: asking again finds it in history, not on the wire.
    assert collector.wait_for_json(request_id="other", timeout=0.1).json["ok"] is False


def test_collector_times_out_listing_what_it_saw(pubsub: PubSubSandbox) -> None:
    topic = pubsub.topic()
    collector = pubsub.collector(topic)
    pubsub.emulator.publish(topic, b"not json", {"a": "b"})
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="not json"):
        collector.wait_for(lambda message: message.json is not None, timeout=1.5)
    assert time.monotonic() - started < 5
    assert collector.messages[0].json is None
    assert collector.messages[0].data == b"not json"


# -- push delivery to functions-framework ---------------------------------------------------


def test_push_reaches_a_cloud_event_function_as_eventarc_would_deliver_it(
    pubsub: PubSubSandbox, run_function: RunFunction, tmp_path: Path
) -> None:
    records = tmp_path / "echo.jsonl"
    echo = run_function("echo", ECHO_SOURCE, env={"ECHO_RECORD_FILE": str(records), **pubsub.emulator.env()})
    topic = pubsub.topic("gcr")
    pubsub.push_subscription(topic, echo)

    message_id = pubsub.emulator.publish_json(topic, {"action": "INSERT", "tag": "h/p/r/i:1"}, {"origin": "test"})
    empty_id = pubsub.emulator.publish(topic, b"", {"only": "attributes"})

    by_id = {r["decoded"]["message_id"]: r for r in wait_for_records(records, 2)}
    record = by_id[message_id]
    assert record["ce"]["type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert record["ce"]["source"] == f"//pubsub.googleapis.com/{topic}"
    assert record["ce"]["id"] == message_id
    assert json.loads(record["decoded"]["data"]) == {"action": "INSERT", "tag": "h/p/r/i:1"}
    assert record["decoded"]["attributes"] == {"origin": "test"}
    assert record["decoded"]["publish_time"].endswith("Z")
    # functions-framework drops the push body's "subscription" when it builds the CloudEvent.
    assert record["decoded"]["subscription"] is None
    assert set(record["raw"]["message"]) == {"@type", "data", "attributes", "messageId", "publishTime"}
    # An attribute-only message arrives too (the emulator sends "data": "").
    assert by_id[empty_id]["decoded"]["data"] == ""
    assert by_id[empty_id]["decoded"]["attributes"] == {"only": "attributes"}

    logged = echo.wait_for_log(lambda line: line.get("message_id") == message_id, timeout=5)
    assert logged["severity"] == "INFO"


def test_failed_push_is_redelivered_then_dead_lettered(
    pubsub: PubSubSandbox, run_function: RunFunction, tmp_path: Path
) -> None:
    records = tmp_path / "echo.jsonl"
    echo = run_function("echo", ECHO_SOURCE, env={"ECHO_RECORD_FILE": str(records)})
    topic = pubsub.topic()
    dead_topic = pubsub.topic("dead")
    dead_letters = pubsub.collector(dead_topic)
    pubsub.push_subscription(topic, echo, dead_letter=DeadLetter(dead_topic, max_delivery_attempts=5))

    started = time.monotonic()
    message_id = pubsub.emulator.publish_json(topic, {"n": 1}, {"echo_fail": "true"})
    dead = dead_letters.wait_for(timeout=20)
    elapsed = time.monotonic() - started

    attempts = [r for r in read_records(records) if r["decoded"]["message_id"] == message_id]
    assert len(attempts) == 5  # one per delivery, each answered 500
    assert 3.0 < elapsed < 15.0  # ~1 s between redeliveries without a retry policy
    assert dead.json == {"n": 1}
    assert dead.attributes["echo_fail"] == "true"
    assert dead.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert dead.attributes["CloudPubSubDeadLetterSourceSubscription"].startswith("push-")
    assert "echo_fail=true" in echo.log_text()  # the traceback gunicorn wrote to stderr


def test_function_rejects_a_body_that_is_neither_cloud_event_nor_push(
    run_function: RunFunction, tmp_path: Path
) -> None:
    echo = run_function("echo", ECHO_SOURCE, env={"ECHO_RECORD_FILE": str(tmp_path / "r.jsonl")}, inherit_env=False)
    response = requests.post(echo.url, json={"message": {"attributes": {}}}, timeout=5)
    assert response.status_code == 400  # no messageId/data: functions-framework cannot convert it
    assert read_records(tmp_path / "r.jsonl") == []


# -- process supervision ----------------------------------------------------------------


def test_stopping_a_function_stops_gunicorn_and_its_worker(run_function: RunFunction, tmp_path: Path) -> None:
    echo = run_function("echo", ECHO_SOURCE, env={"ECHO_RECORD_FILE": str(tmp_path / "r.jsonl")})
    members = echo.process.group_members()
    assert len(members) >= 2  # gunicorn arbiter + worker
    assert echo.startup_seconds < 30
    echo.stop()
    assert_all_gone(members)
    assert not port_open(echo.port)
    echo.stop()  # idempotent


def test_emulator_tree_is_gone_after_the_code_that_started_it_raises(tmp_path: Path) -> None:
    seen: list[int] = []
    port = 0
    with pytest.raises(RuntimeError, match="test body failed"), start_emulator(workdir=tmp_path) as emulator:
        port = emulator.port
        seen = emulator.process.group_members()
        emulator.ensure_topic("still-works")
        raise RuntimeError("test body failed")
    assert_all_gone(seen)
    assert not port_open(port)
    assert "Server started" in (tmp_path / "emulator.log").read_text()


def test_exit_stack_stops_every_tree_when_the_body_raises(tmp_path: Path) -> None:
    script = "sleep 300 & sleep 300 & wait"
    seen: list[int] = []
    with pytest.raises(KeyboardInterrupt), contextlib.ExitStack() as stack:
        for n in range(2):
            process = stack.enter_context(
                start_process(["sh", "-c", script], name=f"tree{n}", log_path=tmp_path / f"{n}.log")
            )
            deadline = time.monotonic() + 5
            while len(process.group_members()) < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            seen += process.group_members()
        assert len(seen) == 6
        raise KeyboardInterrupt  # what Ctrl-C raises in the demo
    assert_all_gone(seen)


def test_a_group_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    process = start_process(
        ["sh", "-c", "trap '' TERM; echo ready; sleep 300 & wait"], name="stubborn", log_path=tmp_path / "log"
    )
    deadline = time.monotonic() + 5
    while "ready" not in process.log_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    members = process.group_members()
    started = time.monotonic()
    status = process.stop(grace_seconds=0.5)
    assert status == -9  # SIGKILL
    assert 0.4 < time.monotonic() - started < 5
    assert_all_gone(members)


def test_failed_start_reports_the_log_and_leaves_nothing_running(tmp_path: Path) -> None:
    broken = tmp_path / "main.py"
    broken.write_text("import functions_framework\nraise ImportError('no such thing: deliberately broken')\n")
    with pytest.raises(ProcessStartError, match="deliberately broken"):
        start_function("nope", broken, log_path=tmp_path / "broken.log")

    sleeper = start_process(["sleep", "300"], name="sleeper", log_path=tmp_path / "sleeper.log")
    with pytest.raises(ProcessStartError, match="gave up after"), stopping_on_error(sleeper):
        wait_for_port("127.0.0.1", free_port(), timeout=0.3, process=sleeper)
    assert_all_gone([sleeper.pid])


def test_log_reading_skips_non_json_and_partial_lines(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "print('[INFO] banner')\n"
        'print(\'{"severity": "INFO", "n": 1}\')\n'
        "print('{not json}')\n"
        "print('[1, 2]')\n"
        "sys.stdout.write('{\"partial\": ')\n"
        "sys.stdout.flush()\n"
        "time.sleep(300)\n"
    )
    with start_process(
        [sys.executable, "-c", code],
        name="logger",
        log_path=tmp_path / "log",
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as process:
        deadline = time.monotonic() + 5
        while "partial" not in process.log_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.json_lines() == [{"severity": "INFO", "n": 1}]
        assert process.log_lines()[0] == "[INFO] banner"


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_processes_are_not_in_our_process_group(tmp_path: Path) -> None:
    with start_process(["sleep", "300"], name="sleeper", log_path=tmp_path / "log") as process:
        assert os.getpgid(process.pid) == process.pid != os.getpgid(0)
    assert isinstance(process, ManagedProcess)
    assert not process.running()


@pytest.mark.parametrize(
    "ending",
    [
        pytest.param("os.kill(os.getpid(), signal.SIGKILL)", id="parent-killed"),  # kernel's parent-death signal
        pytest.param("sys.exit(0)", id="parent-exits-without-stopping"),  # the atexit hook
    ],
)
def test_children_do_not_outlive_a_parent_that_forgot_them(tmp_path: Path, ending: str) -> None:
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from localcloud.processes import start_process\n"
        f"p = start_process(['sleep', '300'], name='orphan', log_path=Path({str(tmp_path / 'log')!r}))\n"
        "print(p.pid, flush=True)\n"
        f"{ending}\n"
    )
    parent = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    child = int(parent.stdout.split()[0])
    deadline = time.monotonic() + 5
    while pid_running(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not pid_running(child)


def test_subscription_policies_reach_the_emulator(pubsub: PubSubSandbox) -> None:
    topic, dead_topic = pubsub.topic(), pubsub.topic("dead")
    subscription = pubsub.pull_subscription(
        topic, dead_letter=DeadLetter(dead_topic, max_delivery_attempts=7), retry_policy=RetryPolicy(2, 30)
    )
    stored = pubsub.emulator.subscriber.get_subscription(request={"subscription": subscription}, timeout=10)
    assert stored.dead_letter_policy.dead_letter_topic == dead_topic
    assert stored.dead_letter_policy.max_delivery_attempts == 7
    assert stored.retry_policy.minimum_backoff.total_seconds() == 2
    assert stored.retry_policy.maximum_backoff.total_seconds() == 30
    assert stored.ack_deadline_seconds == 10
    assert stored.push_config.push_endpoint == ""
