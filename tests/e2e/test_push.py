"""A push to the local registry, all the way to a verdict on the results topic.

Each test pushes (or deletes, or publishes) exactly what a user or Artifact Registry
would; the registry notifies the bridge, the bridge publishes on ``gcr``, the emulator
pushes to ``on_push`` under functions-framework, and the verdict is read back from the
results topic. Nothing calls the function directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from localcloud.pubsub import CollectedMessage, Collector
from localcloud.stack import OTHER_REPOSITORY, LocalCloud, PushedImage
from shared.adapters.secrets import SecretManager
from shared.model.keys import ServiceAccountKey
from tests.fixtures.localcloud import Provisioned

pytestmark = pytest.mark.e2e

VERDICT_TIMEOUT = 30.0
REPO_ROOT = Path(__file__).resolve().parents[2]


def verdict_for(results: Collector, digest: str, *, action: str = "INSERT") -> dict[str, Any]:
    """The reference-test result about the image with ``digest`` (and notification ``action``)."""

    def matches(message: CollectedMessage) -> bool:
        body = message.json
        if not isinstance(body, dict) or body.get("kind") != "reference-test":
            return False
        subject = body.get("subject") or {}
        return subject.get("action") == action and digest in str(subject.get("image", ""))

    return results.wait_for(matches, timeout=VERDICT_TIMEOUT).json


def current_key_id(cloud: LocalCloud, secret_id: str) -> str:
    secrets = SecretManager(cloud.project, endpoint=cloud.secret_manager_url, timeout=5.0)
    _, payload = secrets.access(secret_id, "current")
    return ServiceAccountKey.from_json(payload).key_id


def test_a_push_is_tested_with_the_current_key_and_passes(
    local_cloud: LocalCloud, provisioned: Provisioned, results: Collector
) -> None:
    pushed = local_cloud.push("app", "e2e-1")
    verdict = verdict_for(results, pushed.digest)
    assert verdict["status"] == "passed", verdict
    detail = verdict["details"][provisioned.name]
    assert detail["passed"] is True and detail["tier"] == "registry"
    assert detail["digest"] == pushed.digest
    assert detail["key_id"] == current_key_id(local_cloud, provisioned.secret_id)
    assert verdict["subject"]["integrations"] == [provisioned.name]
    # The integration has a canary service, so Dataloop itself also pulled the image, with its integration.
    assert detail["platform"]["passed"] is True, detail
    pulls = [p for p in local_cloud.dataloop.pulls if p.image.endswith(pushed.digest)]
    integration_id = provisioned.reply["details"]["dataloop_integration_id"]
    assert pulls and all(p.ok and p.integration_id == integration_id for p in pulls), pulls
    # The bridge published exactly what Artifact Registry would, with digest and tag.
    forwarded = [f.message for f in local_cloud.bridge.published if f.message.digest == pushed.by_digest]
    assert [(m.action, m.tag) for m in forwarded] == [("INSERT", pushed.by_tag)]


def test_a_signature_tag_is_skipped(local_cloud: LocalCloud, provisioned: Provisioned, results: Collector) -> None:
    pushed = local_cloud.push("app", f"sha256-{'ab' * 32}.sig")
    verdict = verdict_for(results, pushed.digest)
    assert verdict["status"] == "skipped", verdict
    assert "SKIP_TAG_PATTERNS" in verdict["reason"]
    assert verdict["details"] == {}


def test_a_push_to_a_repository_no_integration_covers_is_uncovered(
    local_cloud: LocalCloud, provisioned: Provisioned, results: Collector
) -> None:
    pushed = local_cloud.push("tool", "v1", repository=OTHER_REPOSITORY)
    verdict = verdict_for(results, pushed.digest)
    assert verdict["status"] == "uncovered", verdict
    assert f"{local_cloud.registry_host}/{local_cloud.project}/{OTHER_REPOSITORY}" in verdict["reason"]


def test_a_deleted_image_is_ignored(local_cloud: LocalCloud, provisioned: Provisioned, results: Collector) -> None:
    pushed = local_cloud.push("app", "short-lived")
    assert verdict_for(results, pushed.digest)["status"] == "passed"
    local_cloud.delete(pushed)
    verdict = verdict_for(results, pushed.digest, action="DELETE")
    assert verdict["status"] == "ignored", verdict
    # Distribution reports the manifest delete by digest and, separately, the tag it removed.
    tag_delete = results.wait_for(
        lambda m: isinstance(m.json, dict) and (m.json.get("subject") or {}).get("image") == pushed.by_tag,
        timeout=VERDICT_TIMEOUT,
    ).json
    assert tag_delete["status"] == "ignored" and tag_delete["subject"]["action"] == "DELETE"


def test_a_malformed_message_is_rejected_once_and_acknowledged(
    local_cloud: LocalCloud, provisioned: Provisioned, results: Collector
) -> None:
    message_id = local_cloud.publish(local_cloud.topics.gcr, b'{"action": "UPSERT", "tag": 42}')
    rejected = results.wait_for(lambda m: isinstance(m.json, dict) and m.json.get("event_id") == message_id).json
    assert rejected["status"] == "rejected" and rejected["kind"] == "reference-test"
    assert "INSERT or DELETE" in rejected["reason"]
    # Unacknowledged, the emulator would push it again after the retry policy's 1 s backoff.
    time.sleep(3.0)
    assert local_cloud.function_deliveries("on_push", message_id) == 1
    assert [m.json for m in results.drain(quiet_seconds=0.5) if m.json.get("event_id") == message_id] == []


def test_pushes_of_the_same_image_twice_are_each_tested(
    local_cloud: LocalCloud, provisioned: Provisioned, results: Collector
) -> None:
    """A second tag on the same manifest is a new notification (at-least-once, idempotent)."""
    content = b"same bytes, two tags\n"
    first: PushedImage = local_cloud.push("twice", "a", content=content)
    second = local_cloud.push("twice", "b", content=content)
    assert first.digest == second.digest

    def verdict_of(tag: str) -> Callable[[CollectedMessage], bool]:
        return lambda m: (
            isinstance(m.json, dict)
            and (m.json.get("subject") or {})
            .get("image", "")
            .startswith(f"{first.image.host}/{first.image.name}:{tag}@")
        )

    verdicts = [results.wait_for(verdict_of(tag), timeout=VERDICT_TIMEOUT).json for tag in ("a", "b")]
    assert [v["status"] for v in verdicts] == ["passed", "passed"]


def test_status_reports_a_failing_push_until_one_passes_and_exits_by_it(
    local_cloud: LocalCloud, provisioned: Provisioned, results: Collector
) -> None:
    """``python -m shared.cli status --wait``, as cron would run it: the table, and an exit code that says it."""
    good = local_cloud.push("app", "e2e-status")
    assert verdict_for(results, good.digest)["status"] == "passed"
    missing = "sha256:" + "0" * 64
    name = f"{good.image.host}/{good.image.name}"
    local_cloud.publish(local_cloud.topics.gcr, {"action": "INSERT", "digest": f"{name}@{missing}"})
    assert verdict_for(results, missing)["code"] == "image-missing"

    argv = [sys.executable, "-m", "shared.cli", "status", "--wait", "--name", provisioned.name, "--timeout", "30",
            "--pubsub-project", local_cloud.project, "--topic", local_cloud.topics.requests,
            "--results-topic", local_cloud.topics.results]  # fmt: skip

    def status() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=REPO_ROOT,
            env={**os.environ, "PUBSUB_EMULATOR_HOST": local_cloud.emulator.host_port},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    failing = status()
    assert failing.returncode == 5, failing.stdout + failing.stderr
    (row,) = [line for line in failing.stdout.splitlines() if line.startswith(provisioned.name)]
    assert "FAILED image-missing since" in row
    assert f"{provisioned.name}: last push failed (image-missing)" in failing.stderr

    again = local_cloud.push("app", "e2e-status-again")
    assert verdict_for(results, again.digest)["status"] == "passed"
    passing = status()
    (row,) = [line for line in passing.stdout.splitlines() if line.startswith(provisioned.name)]
    assert "passed since" in row, passing.stdout + passing.stderr
    assert "last push failed" not in passing.stderr
    (compliance,) = [line for line in passing.stdout.splitlines() if line.startswith("CIS GCP Foundations")]
    assert ": compliant; 1 account(s) checked" in compliance and "0 not created by this system" in compliance
    assert passing.returncode == 0, passing.stdout + passing.stderr
