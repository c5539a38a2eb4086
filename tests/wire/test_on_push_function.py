"""on_push served by functions-framework, called over HTTP with real CloudEvents.

Everything behind it is real or a wire-faithful stand-in: docker-registry with token auth,
the Secret Manager stand-in through google-cloud-secret-manager, and results published by
google-cloud-pubsub to the Pub/Sub emulator, read back from a subscription.
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from shared.model.push_verdict import PushVerdict
from tests.fixtures.secretmanager import managed_secret

pytestmark = pytest.mark.wire
SOURCE = Path(__file__).resolve().parents[2] / "functions" / "on_push" / "main.py"


class OnPush:
    """A running on_push function, an integration it serves, and its results topic."""

    def __init__(self, function, collector, host: str) -> None:
        self.function = function
        self.collector = collector
        self.host = host

    def post(self, payload: object, *, mode: str = "binary", attributes: dict | None = None) -> requests.Response:
        data = payload if isinstance(payload, str) else base64.b64encode(json.dumps(payload).encode()).decode()
        message_id = uuid.uuid4().hex
        message = {
            "data": data,
            "attributes": attributes or {},
            "messageId": message_id,
            "publishTime": "2026-11-26T00:00:00Z",
        }
        body: dict[str, Any] = {"message": message, "subscription": "projects/test-project/subscriptions/gcr-on-push"}
        ce = {
            "id": message_id,
            "source": "//pubsub.googleapis.com/projects/test-project/topics/gcr",
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "specversion": "1.0",
        }
        if mode == "binary":
            headers = {f"ce-{k}": v for k, v in ce.items()} | {"Content-Type": "application/json"}
            return requests.post(self.function.url, json=body, headers=headers, timeout=30)
        if mode == "structured":
            envelope = ce | {"datacontenttype": "application/json", "data": body}
            headers = {"Content-Type": "application/cloudevents+json"}
            return requests.post(self.function.url, data=json.dumps(envelope), headers=headers, timeout=30)
        return requests.post(self.function.url, json=body, timeout=30)  # raw Pub/Sub push, as the emulator sends

    def result(self, **expected: object) -> dict:
        return self.collector.wait_for_json(timeout=20, **expected).json


@pytest.fixture
def key(registry_keys):
    return registry_keys.new_key()


def start_on_push(run_function, pubsub, secretmanager, host: str) -> OnPush:
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
            "HTTP_TIMEOUT_SECONDS": "3",
            "HTTP_RETRIES": "1",
            **pubsub.emulator.env(),
        },
    )
    return OnPush(function, collector, host)


@pytest.fixture
def on_push(run_function, pubsub, secretmanager, local_registry, key):
    managed_secret(secretmanager, local_registry.host, key.json_text)
    return start_on_push(run_function, pubsub, secretmanager, local_registry.host)


def test_insert_by_digest_passes_binary_mode(on_push, local_registry, key):
    pushed = local_registry.push("app", "v1")
    response = on_push.post({"action": "INSERT", "digest": str(pushed.by_digest), "tag": str(pushed.by_tag)})
    assert response.status_code == 200
    result = on_push.result(status="passed")
    assert result["kind"] == "reference-test"
    assert result["details"]["team-a"]["digest"] == pushed.digest
    assert result["details"]["team-a"]["key_id"] == key.key_id
    log = on_push.function.wait_for_log(lambda line: line.get("message", "").startswith("reference-test passed"))
    assert log["severity"] == "INFO" and log["logging.googleapis.com/labels"]["function"] == "reference-test"


@pytest.mark.parametrize("mode", ["structured", "raw"])
def test_tag_only_notification_is_resolved_in_other_envelopes(on_push, local_registry, mode):
    pushed = local_registry.push("app", "tagonly")
    assert on_push.post({"action": "INSERT", "tag": str(pushed.by_tag)}, mode=mode).status_code == 200
    assert on_push.result(status="passed")["details"]["team-a"]["digest"] == pushed.digest


def test_wrong_key_fails_at_error_severity_and_is_acknowledged(on_push, local_registry, registry_keys, key):
    pushed = local_registry.push("app", "v2")
    registry_keys.revoke(key)
    assert on_push.post({"action": "INSERT", "digest": str(pushed.by_digest)}).status_code == 200
    result = on_push.result(status="failed")
    assert result["code"] == "credentials-refused" and key.client_email in result["reason"]
    log = on_push.function.wait_for_log(lambda line: line.get("message", "").startswith("reference-test failed"))
    assert log["severity"] == "ERROR"


def test_deleted_image_fails_as_missing(on_push, local_registry):
    pushed = local_registry.push("app", "gone")
    local_registry.delete(pushed)
    assert on_push.post({"action": "INSERT", "digest": str(pushed.by_digest)}).status_code == 200
    result = on_push.result(status="failed")
    assert result["code"] == "image-missing"


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ("%%% not base64", "rejected", "not valid base64"),
        (base64.b64encode(b"not json").decode(), "rejected", "not valid JSON"),
        ({"action": "PUSH", "tag": "x"}, "rejected", "INSERT or DELETE"),
        ({"action": "INSERT"}, "rejected", "neither 'digest' nor 'tag'"),
        ({"action": "DELETE", "tag": "{host}/test-project/test-repo/app:old"}, "ignored", "deleted"),
        (
            {"action": "INSERT", "tag": "{host}/test-project/test-repo/app:sha256-" + "ab" * 32 + ".sig"},
            "skipped",
            "signature",
        ),
        (
            {"action": "INSERT", "tag": "{host}/test-project/test-repo/app:sha256-" + "ab" * 32},
            "skipped",
            "referrers tag",
        ),
        (
            {"action": "INSERT", "digest": "{host}/test-project/elsewhere/app@sha256:" + "cd" * 32},
            "uncovered",
            "elsewhere",
        ),
    ],
)
def test_notifications_that_test_nothing_are_acknowledged(on_push, payload, status, fragment):
    if isinstance(payload, dict):
        payload = {k: v.replace("{host}", on_push.host) for k, v in payload.items()}
    assert on_push.post(payload).status_code == 200
    result = on_push.result(status=status)
    assert fragment in result["reason"]


def test_registry_down_asks_for_redelivery_then_passes_when_up(
    run_function, pubsub, secretmanager, local_registry, key
):
    spare = local_registry.spare_registry()
    spare.start()
    try:
        pushed = local_registry.push("app", "v1", registry=spare)
        managed_secret(secretmanager, spare.host, key.json_text)
        on_push = start_on_push(run_function, pubsub, secretmanager, spare.host)
        notification = {"action": "INSERT", "digest": str(pushed.by_digest)}

        spare.stop()
        assert on_push.post(notification).status_code == 500  # Pub/Sub will redeliver
        on_push.function.wait_for_log(lambda line: "asking for redelivery" in line.get("message", ""))

        spare.start()
        assert on_push.post(notification).status_code == 200
        assert on_push.result(status="passed")["details"]["team-a"]["digest"] == pushed.digest
        statuses = [m.json["status"] for m in on_push.collector.messages]
        assert statuses == ["passed"]  # the transient failure published nothing
    finally:
        spare.close()


def test_function_logs_carry_no_key_material(on_push, local_registry, registry_keys, key):
    pushed = local_registry.push("app", "v3")
    on_push.post({"action": "INSERT", "digest": str(pushed.by_digest)})
    on_push.result(status="passed")
    other = local_registry.push("other", "v3")  # a new scope: a token cached for "app" cannot hide the revocation
    registry_keys.revoke(key)
    on_push.post({"action": "INSERT", "tag": str(other.by_tag)})
    on_push.result(status="failed")
    text = on_push.function.log_text() + json.dumps([m.json for m in on_push.collector.messages])
    private = json.loads(key.json_text)["private_key"]
    for leaked in (private.splitlines()[1], key.json_text[:60], base64.b64encode(key.json_text.encode()).decode()[:60]):
        assert leaked not in text
    assert "PRIVATE KEY-----" not in text


def secret_manager_calls(secretmanager, since: int) -> list[str]:
    return [f"{c['method']} {c['path'].rsplit('/', 1)[-1]}" for c in secretmanager.wire.call_log()[since:]]


def test_the_push_verdict_is_written_only_when_it_changes(on_push, local_registry, secretmanager):
    """An unchanged verdict costs the manifest HEAD alone; a changed one adds exactly one update."""
    first = local_registry.push("app", "v1")
    on_push.post({"action": "INSERT", "digest": str(first.by_digest)})
    on_push.result(status="passed")  # a new instance: the listing and the key; nothing recorded

    def push(pushed, status: str) -> list[str]:
        before, tokens = len(secretmanager.wire.call_log()), len(local_registry.token_calls())
        on_push.post({"action": "INSERT", "digest": str(pushed.by_digest)})
        reply = on_push.collector.wait_for(
            lambda m: isinstance(m.json, dict) and m.json.get("subject", {}).get("image") == str(pushed.by_digest),
            timeout=20,
        )
        assert reply.json["status"] == status
        assert len(local_registry.token_calls()) == tokens  # the token is cached: the HEAD is the one call
        return secret_manager_calls(secretmanager, before)

    assert push(local_registry.push("app", "v2"), "passed") == []  # still passing: no write
    gone = local_registry.push("app", "gone")
    local_registry.delete(gone)
    assert push(gone, "failed") == ["PATCH dataloop-gar-team-a"]  # passed -> failed: the one write
    recorded = PushVerdict.from_annotations(
        secretmanager.client.get_secret(name=secretmanager.secret_path("dataloop-gar-team-a")).annotations
    )
    assert recorded is not None and not recorded.passed and recorded.code == "image-missing"
    assert recorded.image == str(gone.by_digest)
    since = recorded.since

    again = local_registry.push("app", "gone-too")
    local_registry.delete(again)
    assert push(again, "failed") == []  # failing the same way: no write, and "since" stays
    assert push(local_registry.push("app", "v3"), "passed") == ["PATCH dataloop-gar-team-a"]  # failed -> passed
    recorded = PushVerdict.from_annotations(
        secretmanager.client.get_secret(name=secretmanager.secret_path("dataloop-gar-team-a")).annotations
    )
    assert recorded is not None and recorded.passed and recorded.since > since
