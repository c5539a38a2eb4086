"""A burst of push events handled concurrently by one function instance.

``on_push`` runs under functions-framework (one gunicorn worker, eight threads) against the
real registry and the Secret Manager stand-in; 200 CloudEvents of every kind the function
meets (passing pushes by digest and by tag over several images, a deleted image, an
uncovered repository, a signature tag, a DELETE, a malformed message) are fired from eight
client threads at once. Every one must be answered 200 and produce exactly one result whose
verdict is the right one *for that message* -- a cache shared wrongly between threads would
show up as a digest, status or key that belongs to another event. The figures also show the
caches doing their job under contention: one listing of the managed integrations, one token
per repository scope.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.registry import TEST_PROJECT, TEST_REPOSITORY
from tests.fixtures.secretmanager import managed_secret
from tests.reliability.figures import record

pytestmark = pytest.mark.wire
SOURCE = Path(__file__).resolve().parents[2] / "functions" / "on_push" / "main.py"
REQUESTS = 200
THREADS = 8


def cloud_event(payload: Any, message_id: str) -> tuple[bytes, dict[str, str]]:
    """A binary-mode CloudEvent carrying a Pub/Sub message, as Eventarc delivers it."""
    data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
    body = {
        "message": {
            "data": base64.b64encode(data).decode(),
            "messageId": message_id,
            "publishTime": "2026-11-26T00:00:00Z",
        },
        "subscription": f"projects/{TEST_PROJECT}/subscriptions/gcr-on-push",
    }
    headers = {
        "ce-id": message_id,
        "ce-source": f"//pubsub.googleapis.com/projects/{TEST_PROJECT}/topics/gcr",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-specversion": "1.0",
        "Content-Type": "application/json",
    }
    return json.dumps(body).encode(), headers


def test_two_hundred_pushes_on_eight_threads_each_get_their_own_right_verdict(
    run_function: Any, pubsub: Any, secretmanager: Any, local_registry: Any, registry_keys: Any
) -> None:
    key = registry_keys.new_key()
    managed_secret(secretmanager, local_registry.host, key.json_text)
    images = [local_registry.push(f"burst-{n}", f"v{n}") for n in range(5)]
    deleted = local_registry.push("burst-gone", "v1")
    local_registry.delete(deleted)
    host = local_registry.host
    kinds: list[tuple[str, Any, dict[str, Any]]] = []  # name, payload, what the result must say
    for pushed in images:
        kinds.append(
            (
                "by digest",
                {"action": "INSERT", "digest": str(pushed.by_digest)},
                {"status": "passed", "digest": pushed.digest},
            )
        )
        kinds.append(
            ("by tag", {"action": "INSERT", "tag": str(pushed.by_tag)}, {"status": "passed", "digest": pushed.digest})
        )
    kinds += [
        (
            "deleted",
            {"action": "INSERT", "digest": str(deleted.by_digest)},
            {"status": "failed", "code": "image-missing"},
        ),
        ("uncovered", {"action": "INSERT", "tag": f"{host}/{TEST_PROJECT}/elsewhere/app:v1"}, {"status": "uncovered"}),
        (
            "signature",
            {"action": "INSERT", "tag": f"{host}/{TEST_PROJECT}/{TEST_REPOSITORY}/burst-0:sha256-{'ab' * 32}.sig"},
            {"status": "skipped"},
        ),
        ("delete", {"action": "DELETE", "tag": str(images[0].by_tag)}, {"status": "ignored"}),
        ("malformed", "{not json", {"status": "rejected"}),
    ]

    results = pubsub.topic("results")
    collector = pubsub.collector(results)
    function = run_function(
        "on_push",
        SOURCE,
        env={
            "GCP_PROJECT": secretmanager.project,
            "SECRET_MANAGER_ENDPOINT": secretmanager.url,
            "REGISTRY_INSECURE_HOSTS": host,
            "RESULTS_TOPIC": results,
            "HTTP_TIMEOUT_SECONDS": "5",
            "HTTP_RETRIES": "1",
            "THREADS": str(THREADS),  # functions-framework's gunicorn: one worker, this many threads
            **pubsub.emulator.env(),
        },
    )
    local_registry.token_server.reset()
    secretmanager.wire.reset()

    plan = {f"burst-{uuid.uuid4().hex[:10]}": kinds[i % len(kinds)] for i in range(REQUESTS)}

    def fire(message_id: str) -> int:
        body, headers = cloud_event(plan[message_id][1], message_id)
        return requests.post(function.url, data=body, headers=headers, timeout=60).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        statuses = list(pool.map(fire, plan))
    burst_seconds = time.monotonic() - started

    verdicts: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 60
    while len(verdicts) < REQUESTS and time.monotonic() < deadline:
        for message in collector.pull_once(timeout=2.0):
            if isinstance(message.json, dict) and message.json.get("event_id") in plan:
                assert message.json["event_id"] not in verdicts, "one result per event, not two"
                verdicts[message.json["event_id"]] = message.json

    wrong = []
    for message_id, (name, _, expected) in plan.items():
        verdict = verdicts.get(message_id)
        if verdict is None:
            wrong.append(f"{name}: no result")
            continue
        got = {"status": verdict["status"]}
        if "digest" in expected:
            got["digest"] = (verdict["details"].get("team-a") or {}).get("digest")
            if verdict["details"].get("team-a", {}).get("key_id") != key.key_id:
                wrong.append(f"{name}: tested with key {verdict['details']['team-a'].get('key_id')}")
        if "code" in expected:
            got["code"] = verdict["code"]
        if got != expected:
            wrong.append(f"{name}: {got} != {expected}")

    token_calls = len(local_registry.token_calls())
    sm_calls = secretmanager.wire.call_log()
    listings = [c for c in sm_calls if c["path"].endswith("/secrets")]
    reads = [c for c in sm_calls if c["path"].endswith(":access")]
    unexpected = [line for line in function.json_lines() if "unexpected error" in line.get("message", "")]
    should_pass = [m for m, (_, _, expected) in plan.items() if expected["status"] == "passed"]
    lost = [m for m in should_pass if (verdicts.get(m) or {}).get("status") != "passed"]
    record(
        "concurrency: 200 pushes on 8 threads, one instance",
        inputs=REQUESTS,
        pulls=len(should_pass),
        pulls_lost=len(lost),
    )
    print(
        f"\n{REQUESTS} events in {burst_seconds:.1f}s on {THREADS} threads: {token_calls} token requests, "
        f"{len(listings)} integration listing(s), {len(reads)} key read(s)"
    )
    assert statuses == [200] * REQUESTS, {s for s in statuses if s != 200}
    assert wrong == [], wrong[:5]
    assert unexpected == [], unexpected[:2]
    # The caches hold under contention: the integrations are listed once (TTL 60 s), the key
    # read at most once per thread racing on a cold cache, and one pull token per repository
    # scope is fetched (single-flight), not one per event.
    assert len(listings) == 1, listings
    assert 1 <= len(reads) <= THREADS, reads
    scopes = len(images) + 1  # burst-0..4 and burst-gone
    assert token_calls <= scopes + 1, f"{token_calls} token requests for {scopes} repository scopes"
