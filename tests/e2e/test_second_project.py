"""A repository in another project: its pushes reach on_push through that project's own ``gcr`` topic.

Artifact Registry publishes on the ``gcr`` topic of the repository's project
(docs/external-apis.md §1.1). The local cloud wires a second project as deploy does: its
``gcr`` topic, and a subscription of the local cloud's project on it pushing to
``on_push``. The test provisions an integration there through ``requests``, pushes an
image to that project's repository, and reads the verdict back; a repository in a project
nothing wires is refused at provisioning, before any call.
"""

from __future__ import annotations

import uuid

import pytest

from localcloud.pubsub import Collector
from localcloud.stack import LOCATION, SECOND_PROJECT, SECOND_REPOSITORY, LocalCloud
from tests.e2e.test_push import verdict_for
from tests.fixtures.localcloud import wait_for_reply

pytestmark = pytest.mark.e2e

NAME = "team-second-project"
ACCOUNT_ID = "dlgar-second-puller"


def provision_in(cloud: LocalCloud, project: str, request_id: str, canary: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {
        "version": 1,
        "action": "provision",
        "request_id": request_id,
        "name": NAME,
        "org_id": cloud.seed.org_id,
        "project": project,
        "location": LOCATION,
        "repositories": [SECOND_REPOSITORY],
        "registry_host": cloud.registry_host,
        "service_account": {"create": ACCOUNT_ID},
    }
    if canary:
        # Provisioning proves the new key pulls this image, waiting out IAM's propagation delay.
        body["canary"] = {"image": canary}
    return body


def test_a_push_in_the_second_project_reaches_on_push_through_its_own_gcr_topic(
    local_cloud: LocalCloud, results: Collector
) -> None:
    existing = local_cloud.push("base", "v1", repository=SECOND_REPOSITORY, project=SECOND_PROJECT)
    request_id = f"e2e-second-{uuid.uuid4().hex[:8]}"
    local_cloud.publish(
        local_cloud.topics.requests, provision_in(local_cloud, SECOND_PROJECT, request_id, canary=existing.by_tag)
    )
    reply = wait_for_reply(results, request_id)
    assert reply["status"] == "ok", reply
    try:
        pushed = local_cloud.push("app", "second-1", repository=SECOND_REPOSITORY, project=SECOND_PROJECT)

        verdict = verdict_for(results, pushed.digest)
        assert verdict["status"] == "passed", verdict
        assert verdict["subject"]["integrations"] == [NAME]
        assert verdict["details"][NAME]["passed"] is True
        # Published where Artifact Registry would: on the second project's gcr, not on ours.
        (forwarded,) = [f for f in local_cloud.bridge.published if f.message.digest == pushed.by_digest]
        assert forwarded.project == SECOND_PROJECT
        assert local_cloud.gcr_topic(forwarded.project) == f"projects/{SECOND_PROJECT}/topics/gcr"
    finally:
        request_id = f"e2e-second-deprovision-{uuid.uuid4().hex[:8]}"
        local_cloud.publish(
            local_cloud.topics.requests,
            {"version": 1, "action": "deprovision", "request_id": request_id, "name": NAME},
        )
        assert wait_for_reply(results, request_id)["status"] == "ok"


def test_a_repository_in_a_project_nothing_wires_is_rejected_before_any_call(
    local_cloud: LocalCloud, results: Collector
) -> None:
    request_id = f"e2e-unwired-{uuid.uuid4().hex[:8]}"
    local_cloud.publish(local_cloud.topics.requests, provision_in(local_cloud, "unwired-project", request_id))
    reply = wait_for_reply(results, request_id)
    assert (reply["status"], reply["code"]) == ("rejected", "project-not-wired"), reply
    assert reply["details"]["field"] == "/repositories/0"
    assert "unwired-project" in reply["reason"]
