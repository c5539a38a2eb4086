"""Live smoke test against a real project and a real Dataloop organisation.

Runs only when pointed at them; otherwise it is skipped, saying which variables to set:

    DATALOOP_GAR_LIVE_PROJECT     GCP project to deploy into (it is torn down at the end)
    DATALOOP_GAR_LIVE_ORG         Dataloop organization id (an Admin's credentials must already
                                  be in the credentials secret, see the README)
    DATALOOP_GAR_LIVE_REPOSITORY  an existing Docker repository in that project and region
    DATALOOP_GAR_LIVE_REGION      optional, default us-central1
    DATALOOP_GAR_LIVE_KEEP=1      optional: leave the deployment up afterwards (debugging)

It needs gcloud logged in (``gcloud auth login`` and ``gcloud auth application-default
login``) with the deployer's roles, and ``skopeo``. The steps are a full cycle: deploy,
provision a throwaway integration, push an image, wait for the reference-test result,
rotate, deprovision, tear down. Every step goes through the same entry points a person
uses (deploy/deploy.py and ``python -m shared.cli``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = os.environ.get("DATALOOP_GAR_LIVE_PROJECT", "")
REQUIRED = ("DATALOOP_GAR_LIVE_PROJECT", "DATALOOP_GAR_LIVE_ORG", "DATALOOP_GAR_LIVE_REPOSITORY")

pytestmark = [
    pytest.mark.live,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(
        not PROJECT,
        reason="live smoke test: set " + ", ".join(REQUIRED) + " (and optionally DATALOOP_GAR_LIVE_REGION) to run it",
    ),
]

RESULTS_TOPIC = "dataloop-gar-results"
REQUESTS_TOPIC = "dataloop-gar-requests"
RPC_TIMEOUT = 30.0


def _gcloud(*args: str, timeout: float = 300.0) -> str:
    result = subprocess.run(["gcloud", *args], capture_output=True, text=True, timeout=timeout, check=False, env=_env())
    assert result.returncode == 0, f"gcloud {' '.join(args)} failed:\n{result.stderr[-2000:]}"
    return result.stdout.strip()


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "GCP_PROJECT": PROJECT,
        "REQUESTS_TOPIC": REQUESTS_TOPIC,
        "RESULTS_TOPIC": RESULTS_TOPIC,
    }


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    print("$", " ".join(argv), flush=True)
    return subprocess.run(argv, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=timeout, check=False)


def _cli(*args: str, timeout: float = 900.0) -> dict[str, Any]:
    """A request through the operator's CLI; the reply, which must not be failed/rejected."""
    result = _run([sys.executable, "-m", "shared.cli", *args, "--wait", f"--timeout={timeout - 60:g}"], timeout)
    assert result.returncode == 0, f"shared.cli {args[0]} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


class ResultsTap:
    """A pull subscription on the results topic, made before anything is published."""

    def __init__(self, project: str) -> None:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # google-cloud-pubsub ships no type information

        self.subscriber = pubsub_v1.SubscriberClient()
        self.path = self.subscriber.subscription_path(project, f"dataloop-gar-smoke-{uuid.uuid4().hex[:10]}")
        self.subscriber.create_subscription(
            request={
                "name": self.path,
                "topic": f"projects/{project}/topics/{RESULTS_TOPIC}",
                "expiration_policy": {"ttl": {"seconds": 86400}},
            },
            timeout=RPC_TIMEOUT,
        )

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        from google.api_core import exceptions as gexc

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                response = self.subscriber.pull(
                    request={"subscription": self.path, "max_messages": 50}, timeout=10.0, retry=None
                )
            except gexc.DeadlineExceeded:
                continue
            if response.received_messages:
                self.subscriber.acknowledge(
                    request={"subscription": self.path, "ack_ids": [m.ack_id for m in response.received_messages]},
                    timeout=RPC_TIMEOUT,
                )
            for item in response.received_messages:
                message = json.loads(item.message.data)
                if predicate(message):
                    return message
        raise AssertionError(f"no matching result on {RESULTS_TOPIC} within {timeout:g} s")

    def close(self) -> None:
        self.subscriber.delete_subscription(request={"subscription": self.path}, timeout=RPC_TIMEOUT)


def _push(layout_dir: Path, host: str, image: str, tag: str, content: bytes) -> str:
    """Push a one-layer image with skopeo as the logged-in gcloud user; its digest."""
    from localcloud.registry import build_oci_layout

    layout = build_oci_layout(layout_dir / tag, tag=tag, content=content)
    token = _gcloud("auth", "print-access-token")
    with tempfile.TemporaryDirectory(prefix="smoke-push-") as tmp:
        auth = Path(tmp) / "auth.json"
        auth.write_text(
            json.dumps({"auths": {host: {"auth": base64.b64encode(f"oauth2accesstoken:{token}".encode()).decode()}}})
        )
        auth.chmod(0o600)
        digest_file = Path(tmp) / "digest"
        result = subprocess.run(
            [
                "skopeo",
                "--insecure-policy",
                "copy",
                "--quiet",
                "--dest-authfile",
                str(auth),
                "--digestfile",
                str(digest_file),
                f"oci:{layout.path}:{tag}",
                f"docker://{host}/{image}:{tag}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"skopeo copy failed:\n{result.stderr[-2000:]}"
        return digest_file.read_text().strip()


@pytest.fixture(scope="module")
def live() -> Iterator[dict[str, str]]:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    assert not missing, f"DATALOOP_GAR_LIVE_PROJECT is set, so these must be too: {', '.join(missing)}"
    assert shutil.which("gcloud") and shutil.which("skopeo"), "the live test needs gcloud and skopeo"
    region = os.environ.get("DATALOOP_GAR_LIVE_REGION", "us-central1")
    run_id = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="dataloop-gar-live-") as tmp:
        config = Path(tmp) / "live.toml"
        config.write_text(
            f'project = "{PROJECT}"\nregion = "{region}"\n\n'
            f'[dataloop]\norg_id = "{os.environ["DATALOOP_GAR_LIVE_ORG"]}"\n\n'
            f'[access]\nrepositories = ["{region}/{os.environ["DATALOOP_GAR_LIVE_REPOSITORY"]}"]\n\n'
            '[env]\nLOG_LEVEL = "DEBUG"\n'
        )
        yield {
            "region": region,
            "repository": os.environ["DATALOOP_GAR_LIVE_REPOSITORY"],
            "org": os.environ["DATALOOP_GAR_LIVE_ORG"],
            "config": str(config),
            "tmp": tmp,
            "id": run_id,
        }
        if os.environ.get("DATALOOP_GAR_LIVE_KEEP") != "1":
            result = _run([sys.executable, "deploy/deploy.py", "teardown", "--config", str(config)], 1800)
            assert result.returncode == 0, f"teardown failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def test_deploy_provision_push_rotate_deprovision_teardown(live: dict[str, str]) -> None:
    region, repository, run_id = live["region"], live["repository"], live["id"]
    host = f"{region}-docker.pkg.dev"
    image = f"{PROJECT}/{repository}/dataloop-gar-smoke"
    name = f"smoke-{run_id}"

    deployed = _run([sys.executable, "deploy/deploy.py", "--config", live["config"]], 3600)
    assert deployed.returncode == 0, f"deploy failed:\n{deployed.stdout[-4000:]}\n{deployed.stderr[-4000:]}"
    secret_versions = _gcloud(
        "secrets",
        "versions",
        "list",
        "dataloop-api-credentials",
        f"--project={PROJECT}",
        "--filter=state=ENABLED",
        "--limit=1",
        "--format=value(name)",
    )
    assert secret_versions, "put the Dataloop credentials in secret dataloop-api-credentials first (see the README)"

    tap = ResultsTap(PROJECT)
    layouts = Path(live["tmp"]) / "layouts"
    try:
        first = _push(layouts, host, image, f"{run_id}-a", f"dataloop-gar smoke {run_id} a\n".encode())
        provisioned = _cli(
            "provision",
            "--name",
            name,
            "--org",
            live["org"],
            "--project",
            PROJECT,
            "--location",
            region,
            "--repository",
            repository,
            "--create-sa",
            f"dlgar-smoke-{run_id}",
            "--test-image",
            f"{host}/{image}@{first}",
        )
        assert provisioned["status"] == "ok", provisioned

        second = _push(layouts, host, image, f"{run_id}-b", f"dataloop-gar smoke {run_id} b\n".encode())
        verdict = tap.wait_for(
            lambda m: m.get("kind") == "reference-test" and second in json.dumps(m.get("subject", {})), timeout=600
        )
        assert verdict["status"] == "passed", verdict
        assert name in verdict["subject"]["integrations"]

        rotated = _cli("rotate", "--name", name, "--force")
        assert rotated["status"] == "ok", rotated

        after_rotation = _cli("test", "--image", f"{host}/{image}@{second}", "--name", name)
        assert after_rotation["status"] == "ok", after_rotation
    finally:
        # Clean up even after a failure, without hiding it: the checks come afterwards.
        tap.close()
        deprovisioned = _run([sys.executable, "-m", "shared.cli", "deprovision", "--name", name, "--wait"], 900)
        _run(["gcloud", "artifacts", "docker", "images", "delete", f"{host}/{image}", "--delete-tags", "--quiet"], 300)
    assert deprovisioned.returncode == 0, f"deprovision failed:\n{deprovisioned.stdout}\n{deprovisioned.stderr}"
    assert json.loads(deprovisioned.stdout)["status"] == "ok"
