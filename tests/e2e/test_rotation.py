"""Key rotation through the rotate function: on request, and on Secret Manager's SECRET_ROTATE.

Both run on the session's integration. A rotation keeps the replaced key as ``previous``,
still valid (zero downtime); the next rotation retires it, and with the local cloud's grace
period of 0 s deletes it. The second test triggers that next rotation the way Google does:
Secret Manager's rotation schedule publishes SECRET_ROTATE on the secret's topic.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from localcloud.pubsub import Collector
from localcloud.stack import REPOSITORY, LocalCloud
from shared.adapters.secrets import SecretManager
from tests.e2e.test_push import verdict_for
from tests.fixtures.localcloud import RESULT_TIMEOUT, Provisioned

pytestmark = pytest.mark.e2e


def rotation_result(results: Collector, name: str) -> dict[str, Any]:
    """The rotation outcome for integration ``name`` (Secret Manager's other events are ignored)."""
    return results.wait_for(
        lambda m: (
            isinstance(m.json, dict)
            and m.json.get("kind") == "rotation"
            and m.json.get("status") != "ignored"
            and (m.json.get("subject") or {}).get("integration") == name
        ),
        timeout=RESULT_TIMEOUT,
    ).json


def key_text(cloud: LocalCloud, secret_id: str, alias: str = "current") -> str | None:
    """The key file a version alias of the integration's secret names, None without that alias."""
    secrets = SecretManager(cloud.project, endpoint=cloud.secret_manager_url, timeout=5.0)
    if alias not in secrets.get_secret(secret_id).version_aliases:
        return None
    return secrets.access(secret_id, alias)[1].decode()


def current_key_text(cloud: LocalCloud, secret_id: str) -> str:
    text = key_text(cloud, secret_id)
    assert text is not None, f"{secret_id} has no current version"
    return text


def rotate_by_request(cloud: LocalCloud, results: Collector, provisioned: Provisioned) -> dict[str, Any]:
    cloud.publish(cloud.topics.rotation, {"kind": "rotate", "integration": provisioned.secret_id, "force": True})
    return rotation_result(results, provisioned.name)


def dataloop_key_text(cloud: LocalCloud, name: str) -> str:
    """The key file the Dataloop integration ``name`` would present to the registry."""
    (stored,) = [i for i in cloud.dataloop.stored_integrations(cloud.seed.org_id) if i["public"]["name"] == name]
    config = json.loads(base64.b64decode(stored["options"]["spec"]["password"]))
    return config["auths"][cloud.registry_host]["password"]


def token_status(cloud: LocalCloud, key_file: str) -> int:
    """What the registry's token endpoint answers a kubelet presenting ``key_file``."""
    params = {"service": cloud.token_endpoint.service, "scope": f"repository:{cloud.project}/{REPOSITORY}/app:pull"}
    return requests.get(cloud.token_realm, params=params, auth=("_json_key", key_file), timeout=10).status_code


def test_a_rotation_request_gives_dataloop_a_new_key_and_keeps_the_old_one_valid(
    local_cloud: LocalCloud, provisioned: Provisioned, results: Collector
) -> None:
    old_text = current_key_text(local_cloud, provisioned.secret_id)
    old_id = json.loads(old_text)["private_key_id"]
    result = rotate_by_request(local_cloud, results, provisioned)
    assert result["status"] == "ok", result
    assert result["details"]["old_key_id"] == old_id
    new_id = result["details"]["new_key_id"]
    assert new_id != old_id
    assert [s["step"] for s in result["details"]["steps"]] == ["create", "test", "set", "finish"]

    new_text = current_key_text(local_cloud, provisioned.secret_id)
    assert json.loads(new_text)["private_key_id"] == new_id
    assert dataloop_key_text(local_cloud, provisioned.name) == new_text
    assert {old_id, new_id} <= {k.key_id for k in local_cloud.iam.state.keys_of(provisioned.service_account)}
    assert token_status(local_cloud, old_text) == 200  # `previous`, within its grace period
    assert token_status(local_cloud, new_text) == 200

    pushed = local_cloud.push("app", "after-rotation")
    verdict = verdict_for(results, pushed.digest)
    assert verdict["status"] == "passed" and verdict["details"][provisioned.name]["key_id"] == new_id


def test_secret_managers_rotation_schedule_rotates_and_retires_the_previous_key(
    local_cloud: LocalCloud, provisioned: Provisioned, results: Collector
) -> None:
    if key_text(local_cloud, provisioned.secret_id, "previous") is None:
        assert rotate_by_request(local_cloud, results, provisioned)["status"] == "ok"  # so there is a key to retire
    retiring = key_text(local_cloud, provisioned.secret_id, "previous")
    replaced = current_key_text(local_cloud, provisioned.secret_id)
    assert retiring is not None and token_status(local_cloud, retiring) == 200

    # Play Secret Manager's scheduler past the secret's next_rotation_time: it publishes
    # SECRET_ROTATE on the secret's topic (the rotation topic), as Google would.
    fired = local_cloud.secret_manager.fire_due_rotations(datetime.now(UTC) + timedelta(days=400))
    assert any(name.endswith(f"/secrets/{provisioned.secret_id}") for name in fired), fired
    result = rotation_result(results, provisioned.name)
    assert result["status"] == "ok", result
    assert result["details"]["old_key_id"] == json.loads(replaced)["private_key_id"]

    retired_id = json.loads(retiring)["private_key_id"]
    remaining = {k.key_id for k in local_cloud.iam.state.keys_of(provisioned.service_account)}
    assert retired_id not in remaining and len(remaining) == 2  # current and previous, nothing else
    assert token_status(local_cloud, retiring) == 401
    assert token_status(local_cloud, replaced) == 200  # now `previous`
    assert dataloop_key_text(local_cloud, provisioned.name) == current_key_text(local_cloud, provisioned.secret_id)
