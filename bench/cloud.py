"""The benchmark's world: the local cloud without its functions, plus counters on every remote peer.

:class:`~localcloud.stack.LocalCloud` provides what production talks to (Secret Manager,
IAM, Artifact Registry and Dataloop stand-ins, the Pub/Sub emulator, ``docker-registry``
behind a GAR-like token endpoint). The bench starts its own function processes against
it (each measurement needs fresh, cold ones) with the *production* defaults the local
cloud relaxes for its demo: the integration list cached for 60 s, 10 s timeouts.

The bench serves its images from a registry of its own: the local cloud's registry
notifies a bridge of every pull (that is how a push reaches ``gcr`` there), which would
add work to every manifest ``HEAD`` that Artifact Registry does not do.

Counting remote calls needs a log at every peer. Secret Manager, the token endpoint and
Artifact Registry are already ``Instrumented``; here the Dataloop gateway gets an
instrumented front too, and the registry a counting pass-through (:mod:`bench.proxy`).
Two integrations are provisioned through the real ``requests`` function: one names the
registry by its direct address (throughput), one by the counting front (call counts).
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import launch
from bench.notifications import Delivery, delivery
from bench.proxy import serve_front
from localcloud.registry import LocalRegistry, build_oci_layout, push_image
from localcloud.stack import LOCATION, REGISTRY_ISSUER, REGISTRY_SERVICE, REPOSITORY, LocalCloud, PushedImage
from localcloud.wsgi import Instrumented, ServerThread
from shared.model.images import RegistryImage
from shared.model.integrations import SECRET_PREFIX

#: Integrations the bench provisions: by direct registry address, and through the counting front.
DIRECT = "bench-direct"
COUNTED = "bench-counted"


@dataclass(frozen=True)
class Provisioned:
    name: str
    host: str
    service_account: str

    @property
    def secret_id(self) -> str:
        return SECRET_PREFIX + self.name


@dataclass(frozen=True)
class CallCount:
    """Calls each peer received during one measured step, by peer then by kind."""

    by_peer: Mapping[str, tuple[str, ...]]

    def of(self, peer: str) -> tuple[str, ...]:
        return self.by_peer.get(peer, ())

    @property
    def total(self) -> int:
        return sum(len(calls) for calls in self.by_peer.values())

    def describe(self) -> str:
        """``secretmanager: list, access; registry-token: token; …`` for the table."""
        parts = [f"{peer}: {', '.join(calls)}" for peer, calls in self.by_peer.items() if calls]
        return "; ".join(parts) or "none"


class BenchCloud:
    """Start with :meth:`start` (or ``with``); everything stops in reverse order."""

    def __init__(self, workdir: Path, *, progress: Callable[[str], None] | None = None) -> None:
        self.workdir = workdir
        self._stack = contextlib.ExitStack()
        self.cloud = LocalCloud(
            workdir=workdir / "localcloud",
            keep_workdir=True,
            functions=(),
            iam_propagation_delay_seconds=0.0,
            progress=progress,
        )
        self.registry: LocalRegistry
        self.front_wire: Instrumented
        self.front: ServerThread
        self.dataloop_wire: Instrumented
        self.dataloop_front: ServerThread
        self.integrations: dict[str, Provisioned] = {}
        self._pushed = 0

    def __enter__(self) -> BenchCloud:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> BenchCloud:
        try:
            self._stack.enter_context(self.cloud)
            self.registry = LocalRegistry(
                token_realm=self.cloud.token_realm,
                service=REGISTRY_SERVICE,
                issuer=REGISTRY_ISSUER,
                root_cert_pem=self.cloud.token_endpoint.signing_key.certificate_pem,
                workdir=self.workdir / "registry",
            )
            self._stack.callback(self.registry.close)
            self.registry.start()
            self.cloud.dataloop.insecure_registries.add(self.registry.host)
            self.front_wire, self.front = serve_front(self.registry.host)
            self._stack.callback(self.front.stop)
            self.dataloop_wire = Instrumented(self.cloud.dataloop, "dataloop")
            self.dataloop_front = ServerThread(self.dataloop_wire).start()
            self._stack.callback(self.dataloop_front.stop)
            self.cloud.dataloop.insecure_registries.add(self.front_host)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stack.close()

    # -- addresses and environment -----------------------------------------------------------
    @property
    def project(self) -> str:
        return self.cloud.project

    @property
    def direct_host(self) -> str:
        return self.registry.host

    @property
    def front_host(self) -> str:
        return f"127.0.0.1:{self.front.port}"

    def function_env(self, **overrides: str) -> dict[str, str]:
        """The local cloud's function environment with production caching and timeouts."""
        env = self.cloud.function_env()
        env.update(
            {
                "DATALOOP_BASE_URL": f"{self.dataloop_front.url}/api/v1",
                "REGISTRY_INSECURE_HOSTS": f"{self.direct_host},{self.front_host}",
                "INTEGRATION_CACHE_TTL_SECONDS": "60",
                "HTTP_TIMEOUT_SECONDS": "10",
                "HTTP_RETRIES": "3",
                "LOG_LEVEL": "INFO",
            }
        )
        env.update(overrides)
        return env

    # -- images and integrations ---------------------------------------------------------------
    def push(self, image: str, tag: str) -> PushedImage:
        """Push a small distinct image into the covered repository (named by the registry's direct host)."""
        self._pushed += 1
        layout = build_oci_layout(
            self.workdir / "images" / f"{image}-{tag}-{self._pushed}",
            tag=tag,
            content=f"bench {image}:{tag} {uuid.uuid4()}\n".encode(),
        )
        admin, password = self.cloud.registry_admin
        name = f"{self.project}/{REPOSITORY}/{image}"
        digest = push_image(
            layout, registry_host=self.direct_host, name=name, tag=tag, username=admin, password=password
        )
        return PushedImage(RegistryImage(self.direct_host, self.project, REPOSITORY, image, tag, digest))

    def provision_request(self, name: str, host: str, test_image: PushedImage) -> Delivery:
        """A version-1 ``provision`` request for ``REPOSITORY`` on ``host``, tested with ``test_image``."""
        reference = f"{host}/{test_image.image.name}@{test_image.digest}"
        request = {
            "version": 1,
            "action": "provision",
            "request_id": f"bench-provision-{name}-{uuid.uuid4().hex[:8]}",
            "name": name,
            "org_id": self.cloud.seed.org_id,
            "project": self.project,
            "location": LOCATION,
            "repositories": [REPOSITORY],
            "registry_host": host,
            "service_account": {"create": f"dlgar-{name}"[:30]},
            "test_image": reference,
        }
        return delivery(request, project=self.project, topic=self.cloud.topics.requests)

    def provision(self, requests_function: launch.RunningFunction, test_image: PushedImage) -> None:
        """Provision :data:`DIRECT` and :data:`COUNTED` through a running ``requests`` function.

        Raises:
            RuntimeError: the function did not answer 200, or its reply was not ``ok``.
        """
        collector = self.cloud.results_collector("bench-provision")
        try:
            for name, host in ((DIRECT, self.direct_host), (COUNTED, self.front_host)):
                request = self.provision_request(name, host, test_image)
                answer = requests_function.send(request)
                request_id = _request_id(request)
                reply = collector.wait_for_json(timeout=60, request_id=request_id).json
                if answer.status != 200 or reply.get("status") != "ok":
                    raise RuntimeError(f"provisioning {name} failed: HTTP {answer.status}, reply {reply}")
                email = f"dlgar-{name}"[:30] + f"@{self.project}.iam.gserviceaccount.com"
                self.integrations[name] = Provisioned(name, host, email)
        finally:
            self.cloud.delete_subscription(collector)

    # -- counting -----------------------------------------------------------------------------
    def _logs(self) -> dict[str, list[str]]:
        def http(wire: Instrumented) -> list[str]:
            return [f"{c['method']} {c['path']}" + (f"?{c['query']}" if c["query"] else "") for c in wire.call_log()]

        return {
            "secretmanager": http(self.cloud.secret_manager_wire),
            "registry-token": http(self.cloud.token_wire),
            "registry": http(self.front_wire),
            "dataloop": http(self.dataloop_wire),
            "iam": list(self.cloud.iam.calls()),
            "artifactregistry": http(self.cloud.artifact_registry.app),
        }

    @contextlib.contextmanager
    def counting(self) -> Iterator[dict[str, CallCount]]:
        """Count what every peer receives inside the block; the yielded dict gets ``"calls"`` on exit."""
        before = {peer: len(calls) for peer, calls in self._logs().items()}
        found: dict[str, CallCount] = {}
        yield found
        after = self._logs()
        found["calls"] = CallCount(
            {peer: tuple(classify(peer, call) for call in calls[before[peer] :]) for peer, calls in after.items()}
        )


def classify(peer: str, call: str) -> str:
    """A short name for a logged call: ``list``, ``access``, ``token``, ``HEAD`` …"""
    method, _, target = call.partition(" ")
    path = target.split("?", 1)[0]
    if peer == "secretmanager":
        if path.endswith(":access"):
            return "access"
        if path.endswith("/secrets") and method == "GET":
            return "list"
        if "/versions" in path:
            return f"{method} version"
        return f"{method} secret"
    if peer == "registry-token":
        return "token"
    if peer == "registry":
        return f"{method} {'manifest' if '/manifests/' in path else path}"
    if peer == "iam":
        return call.rsplit("/", 1)[-1]
    return f"{method} {path}"


def _request_id(request: Delivery) -> str:
    body: dict[str, Any] = json.loads(request.body)
    return str(json.loads(base64.b64decode(body["message"]["data"]))["request_id"])
