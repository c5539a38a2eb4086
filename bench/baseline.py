"""What the two comparison functions share: read a push notification, HEAD its manifest.

They are deliberately plain, so that the gap between them and ``on_push`` is the cost of
what ``on_push`` adds (or saves): the *naive* function pays a secret read and a token for
every event; the *bare* one only HEADs the manifest with a token it already holds, which
is the least any reference test can do per push, i.e. the limit.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import requests

MANIFEST_ACCEPT = (
    "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
)
TIMEOUT = 10.0

#: One pooled session per instance, as any sensible function keeps.
session = requests.Session()
session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=16, pool_maxsize=16))


def image_of(event: Any) -> tuple[str, str, str]:
    """(host, name, digest) of the pushed image in a Pub/Sub CloudEvent from Artifact Registry."""
    message = event.data["message"]
    notification = json.loads(base64.b64decode(message["data"]))
    reference = notification["digest"]
    host, _, rest = reference.partition("/")
    name, _, digest = rest.partition("@")
    return host, name, digest


def key_text() -> str:
    """The integration's current key file, read through the real Secret Manager client."""
    return secret_client().access_secret_version(name=_secret_version()).payload.data.decode()


_client: Any = None


def secret_client() -> Any:
    global _client
    if _client is None:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import secretmanager

        _client = secretmanager.SecretManagerServiceClient(
            transport="rest",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": os.environ["SECRET_MANAGER_ENDPOINT"]},
        )
    return _client


def _secret_version() -> str:
    return f"projects/{os.environ['GCP_PROJECT']}/secrets/{os.environ['BENCH_SECRET_ID']}/versions/current"


def token(name: str, key: str) -> str:
    """A pull token for repository ``name`` from the registry's token endpoint."""
    response = session.get(
        os.environ["BENCH_TOKEN_REALM"],
        params={"service": os.environ["BENCH_TOKEN_SERVICE"], "scope": f"repository:{name}:pull"},
        auth=("_json_key", key),
        timeout=TIMEOUT,
    )
    response.raise_for_status()
    return str(response.json()["token"])


def head(host: str, name: str, digest: str, bearer: str) -> None:
    """HEAD the manifest by digest; raise (HTTP 500, redelivery) unless the registry has exactly it."""
    response = session.head(
        f"http://{host}/v2/{name}/manifests/{digest}",
        headers={"Accept": MANIFEST_ACCEPT, "Authorization": f"Bearer {bearer}"},
        timeout=TIMEOUT,
    )
    if response.status_code != 200 or response.headers.get("Docker-Content-Digest") != digest:
        raise RuntimeError(f"HEAD {host}/{name}@{digest}: HTTP {response.status_code}")
