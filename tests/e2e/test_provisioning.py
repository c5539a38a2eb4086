"""A provision request through Pub/Sub to the requests function, checked against every stand-in's state.

The reply is read from the results topic; then the test looks where provisioning should
have left its marks: the IAM stand-in (account, one key), the Artifact Registry policy (a
reader grant on the one repository), Secret Manager through the real client (labels,
annotations, versions and aliases) and the Dataloop gateway (the integration and the docker
config it decodes to, which must hold exactly the key in the ``current`` version).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest

from localcloud.functions import REPO_ROOT
from localcloud.pubsub import Collector
from localcloud.stack import REPOSITORY, LocalCloud
from shared.adapters.secrets import SecretManager
from shared.model.integrations import MANAGED_LABEL, Annotation
from tests.fixtures.localcloud import Provisioned, provision_request, wait_for_reply

pytestmark = pytest.mark.e2e


def secrets_of(cloud: LocalCloud) -> SecretManager:
    return SecretManager(cloud.project, endpoint=cloud.secret_manager_url, timeout=5.0)


def test_provisioning_creates_account_grant_key_secret_and_dataloop_integration(
    local_cloud: LocalCloud, provisioned: Provisioned
) -> None:
    reply = provisioned.reply
    assert reply["kind"] == "request" and reply["status"] == "ok"
    assert reply["subject"] == {"action": "provision", "name": provisioned.name}
    assert "can pull" in reply["reason"]
    email = provisioned.service_account

    key_ids = [k.key_id for k in local_cloud.iam.state.keys_of(email)]
    assert local_cloud.iam.state.account(email) is not None
    # The integration is shared with tests/e2e/test_rotation.py, which may have rotated it
    # already: then the key provisioning made is gone, and current and previous remain.
    assert len(key_ids) <= 2

    readers = local_cloud.artifact_registry.state.readers(local_cloud.seed.repository_path)
    assert f"serviceAccount:{email}" in readers
    assert f"serviceAccount:{email}" not in local_cloud.artifact_registry.state.readers(
        local_cloud.seed.other_repository_path
    )

    secrets = secrets_of(local_cloud)
    record = secrets.get_secret(provisioned.secret_id)
    assert record.labels[MANAGED_LABEL[0]] == MANAGED_LABEL[1]
    notes = record.annotations
    assert notes[Annotation.REGISTRY_HOST] == local_cloud.registry_host
    assert notes[Annotation.REPOSITORIES] == f"{local_cloud.project}/{REPOSITORY}"
    assert notes[Annotation.SERVICE_ACCOUNT] == email
    assert notes[Annotation.ORG] == local_cloud.seed.org_id
    assert notes[Annotation.CANARY_SERVICE] == local_cloud.seed.canary_service_id
    assert record.version_aliases["current"] in secrets.list_versions(provisioned.secret_id)
    _, payload = secrets.access(provisioned.secret_id, "current")
    key_file = json.loads(payload)
    assert key_file["private_key_id"] in key_ids and key_file["client_email"] == email

    stored = [
        i
        for i in local_cloud.dataloop.stored_integrations(local_cloud.seed.org_id)
        if i["public"]["name"] == provisioned.name
    ]
    assert len(stored) == 1
    public, options = stored[0]["public"], stored[0]["options"]
    assert public["type"] == "private-registry" and public["id"] == notes[Annotation.INTEGRATION_ID]
    assert {"name": "provider", "value": "gcp"} in public["metadata"]
    docker_config = json.loads(base64.b64decode(options["spec"]["password"]))
    entry = docker_config["auths"][local_cloud.registry_host]
    assert entry["username"] == "_json_key" and entry["password"] == payload.decode()
    assert base64.b64decode(entry["auth"]).decode() == "_json_key:" + payload.decode()


def test_provisioning_the_same_integration_again_converges_without_duplicates(
    local_cloud: LocalCloud, provisioned: Provisioned, results: Collector
) -> None:
    before_keys = [k.key_id for k in local_cloud.iam.state.keys_of(provisioned.service_account)]
    request = provision_request(local_cloud, provisioned.name, "dlgar-e2e-puller", "e2e-provision-again")
    local_cloud.publish(local_cloud.topics.requests, request)
    reply = wait_for_reply(results, "e2e-provision-again")
    assert reply["status"] == "ok", reply
    assert [k.key_id for k in local_cloud.iam.state.keys_of(provisioned.service_account)] == before_keys
    names = [i["public"]["name"] for i in local_cloud.dataloop.stored_integrations(local_cloud.seed.org_id)]
    assert names.count(provisioned.name) == 1


def test_an_invalid_request_is_rejected_with_every_reason(local_cloud: LocalCloud, results: Collector) -> None:
    local_cloud.publish(
        local_cloud.topics.requests,
        {"version": 1, "action": "provision", "request_id": "e2e-bad", "name": "X", "repositories": []},
    )
    reply = wait_for_reply(results, "e2e-bad")
    assert reply["status"] == "rejected", reply
    for field in ("/name", "/org_id", "/project", "/location", "/repositories", "/service_account"):
        assert field in reply["reason"]


def test_the_cli_publishes_a_status_request_and_prints_the_reply(
    local_cloud: LocalCloud, provisioned: Provisioned
) -> None:
    """``python -m localcloud publish ... --wait``, as ``make stack`` tells a person to run it."""
    request = {"version": 1, "action": "status", "request_id": "e2e-cli-status", "name": provisioned.name}
    env = {**os.environ, "PUBSUB_EMULATOR_HOST": local_cloud.emulator.host_port}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "localcloud",
            "publish",
            local_cloud.topics.requests,
            json.dumps(request),
            "--wait",
            "30",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    printed = json.loads(done.stdout[done.stdout.index("{") :])
    assert printed["request_id"] == "e2e-cli-status" and printed["status"] == "ok"
