"""The registry-notification bridge, fed by the running local cloud's registry and by hand.

The push tests show the happy path end to end; these pin down what the bridge must *not*
forward (pulls, blobs, a blob delete that looks like a manifest delete) and how it answers
an envelope that is not distribution's, since the registry retries anything but a 2xx.
"""

from __future__ import annotations

import json

import pytest
import requests

from localcloud.bridge import ENVELOPE_MEDIA_TYPE
from localcloud.stack import LocalCloud

pytestmark = pytest.mark.e2e


def post(cloud: LocalCloud, body: object) -> requests.Response:
    url = cloud.endpoints()["registry notifications bridge"]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(url, data=data, headers={"Content-Type": ENVELOPE_MEDIA_TYPE}, timeout=10)


def event(action: str, **target: str) -> dict[str, object]:
    return {"id": "e1", "action": action, "target": target, "request": {"host": "elsewhere:5000"}}


def test_pulls_blobs_and_unknown_digest_deletes_are_not_forwarded(local_cloud: LocalCloud) -> None:
    before = len(local_cloud.bridge.published)
    digest = "sha256:" + "0" * 64
    response = post(
        local_cloud,
        {
            "events": [
                event(
                    "pull", mediaType="application/vnd.oci.image.manifest.v1+json", digest=digest, repository="a/b/c"
                ),
                event("push", mediaType="application/octet-stream", digest=digest, repository="a/b/c"),
                event(
                    "push", mediaType="application/vnd.oci.image.layer.v1.tar+gzip", digest=digest, repository="a/b/c"
                ),
                event("delete", digest=digest, repository="a/b/c"),  # a blob delete looks just like this
                event("mount", digest=digest, repository="a/b/c"),
            ]
        },
    )
    assert response.status_code == 200 and response.json() == {"published": []}
    assert len(local_cloud.bridge.published) == before


def test_a_manifest_push_is_named_by_the_registrys_own_host(local_cloud: LocalCloud) -> None:
    digest = "sha256:" + "1" * 64
    body = {
        "events": [
            event(
                "push",
                mediaType="application/vnd.docker.distribution.manifest.v2+json",
                digest=digest,
                repository="p/r/i",
                tag="t",
            )
        ]
    }
    response = post(local_cloud, body)
    assert response.status_code == 200 and len(response.json()["published"]) == 1
    message = local_cloud.bridge.published[-1].message
    host = local_cloud.registry_host  # not the request's Host header
    assert message.payload() == {"action": "INSERT", "digest": f"{host}/p/r/i@{digest}", "tag": f"{host}/p/r/i:t"}
    # Now known as a manifest, its delete by digest is forwarded too.
    assert post(local_cloud, {"events": [event("delete", digest=digest, repository="p/r/i")]}).status_code == 200
    assert local_cloud.bridge.published[-1].message.payload() == {
        "action": "DELETE",
        "digest": f"{host}/p/r/i@{digest}",
    }


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "Expecting value"),
        ([], '{"events": [...]}'),
        ({"events": [{"action": "push", "target": "x"}]}, "events[0].target"),
        (
            {"events": [event("push", mediaType="application/vnd.oci.image.manifest.v1+json", digest="sha256:x")]},
            "repository",
        ),
        ({"events": [event("delete", repository="p/r/i")]}, "neither digest nor tag"),
    ],
)
def test_an_envelope_that_is_not_distributions_is_refused_with_the_reason(
    local_cloud: LocalCloud, body: object, reason: str
) -> None:
    response = post(local_cloud, body)
    assert response.status_code == 400
    assert reason in response.json()["error"]


def test_only_post_is_accepted(local_cloud: LocalCloud) -> None:
    response = requests.get(local_cloud.endpoints()["registry notifications bridge"], timeout=10)
    assert response.status_code == 405
