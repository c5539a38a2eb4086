"""The local cloud: every function, the Pub/Sub emulator, a real registry and the API stand-ins, on one machine.

:class:`LocalCloud` composes the building blocks in ``localcloud/`` into what Google and
Dataloop provide in production, so the functions run *unchanged*, configured only by the
endpoints in their environment (docs/external-apis.md §7):

* Secret Manager (REST), IAM (gRPC) and Artifact Registry (REST) stand-ins, and the
  Dataloop gateway stand-in, served in this process on free ``127.0.0.1`` ports;
* a Cloud Logging stand-in (``entries.list``) that reads the functions' log files as Cloud Run
  reads their stdout, so the operator's ``history`` command has something true to show;
* Google's Pub/Sub emulator with the system's topics, and push subscriptions that deliver
  to each function the way Eventarc does (CloudEvent ``source`` from the topic path, a
  retry policy so failures back off, a bounded dead-letter policy); plus a second
  project's own ``gcr`` topic, subscribed to ``on_push`` from this project as deploy wires a
  repository project other than its own (docs/external-apis.md §6.6);
* Debian's ``docker-registry`` with token auth behind a GAR-like token endpoint that asks
  the IAM and Artifact Registry stand-ins who may pull, and whose push notifications the
  :mod:`localcloud.bridge` publishes on the image's project's ``gcr`` as Artifact Registry would;
* ``on_push``, ``requests`` and ``rotate`` under functions-framework, one process each.

Start order follows the dependencies (stand-ins, emulator and topics, bridge, registry,
seed image, functions, subscriptions, seed state), and every started piece is pushed on
one :class:`contextlib.ExitStack`, so :meth:`LocalCloud.stop` -- or a failure half-way
through :meth:`LocalCloud.start`, or Ctrl-C -- stops everything in reverse order and
leaves no process and no listening port behind.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import secrets
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from google.api_core import exceptions as api_exceptions

from localcloud.artifactregistry import ArtifactRegistryStandIn, ArtifactRegistryState
from localcloud.bridge import RegistryNotificationBridge
from localcloud.cloudlogging import CloudLoggingStandIn, LoggingState
from localcloud.dataloop import DataloopGateway
from localcloud.functions import REPO_ROOT, FunctionProcess, start_function
from localcloud.gcp_authority import GcpAuthority
from localcloud.iam import IamStandIn
from localcloud.processes import ManagedProcess, free_port, pid_running
from localcloud.pubsub import (
    RPC_TIMEOUT,
    Collector,
    DeadLetter,
    PubSubEmulator,
    RetryPolicy,
    start_emulator,
    topic_push_endpoint,
)
from localcloud.registry import LocalRegistry, build_oci_layout, delete_manifest, push_image
from localcloud.registry_auth import TOKEN_PATH, RegistryTokenEndpoint, TokenSigningKey
from localcloud.secretmanager.service import SecretManagerStandIn
from localcloud.wsgi import Instrumented, ServerThread
from shared.model.images import RegistryImage
from shared.model.policy import AccessPolicy

PROJECT = "local-project"
#: Secret Manager names secrets by project *number* in its notifications.
PROJECT_NUMBER = "123456789012"
LOCATION = "us-central1"
#: The GAR-like repository the demo integration covers, and one that nothing covers.
REPOSITORY = "images"
OTHER_REPOSITORY = "scratch"
#: A second project holding a repository, with its own ``gcr`` topic wired to on_push the way
#: deploy wires a repository project other than its own (a push subscription beside the function).
SECOND_PROJECT = "other-project"
SECOND_REPOSITORY = "images"
REGISTRY_SERVICE = "localcloud-registry"
REGISTRY_ISSUER = "localcloud-token-issuer"
DATALOOP_CREDENTIALS_SECRET = "dataloop-api-credentials"
DATALOOP_ADMIN_EMAIL = "platform-admin@example.com"
CANARY_SERVICE_NAME = "gar-canary"
RUNNER_IMAGE = "runner"
RUNNER_TAG = "v1"


@dataclass(frozen=True)
class Topics:
    """Topic ids of the system; the functions get the same names through their environment."""

    gcr: str = "gcr"  # fixed by Artifact Registry
    requests: str = "dataloop-gar-requests"
    rotation: str = "dataloop-gar-rotation"
    results: str = "dataloop-gar-results"
    dead_letter: str = "dataloop-gar-dead-letter"

    def all(self) -> tuple[str, ...]:
        return (self.gcr, self.requests, self.rotation, self.results, self.dead_letter)


@dataclass(frozen=True)
class FunctionSpec:
    """A function of this repository and the topic that triggers it.

    ``ack_deadline_seconds`` bounds how long one push may take before Pub/Sub sends the
    message again; rotation waits through IAM propagation, so it gets more than a push test.
    """

    name: str  # the directory under functions/
    target: str  # the decorated function in its main.py (functions-framework's --target)
    topic: str  # attribute name on :class:`Topics`
    ack_deadline_seconds: int

    @property
    def source(self) -> Path:
        return REPO_ROOT / "functions" / self.name / "main.py"


FUNCTIONS = (
    FunctionSpec("on_push", "on_push", "gcr", 30),
    FunctionSpec("requests", "on_request", "requests", 120),
    FunctionSpec("rotate", "rotate", "rotation", 120),
)
#: Failures back off from 1 s to 10 s and stop after 5 deliveries, so a bug cannot spin forever.
RETRY_POLICY = RetryPolicy(minimum_backoff_seconds=1, maximum_backoff_seconds=10)
MAX_DELIVERY_ATTEMPTS = 5


@dataclass(frozen=True)
class PushedImage:
    """An image in the local registry, named as GAR would name it."""

    image: RegistryImage  # with tag and digest

    @property
    def digest(self) -> str:
        return self.image.digest or ""

    @property
    def by_tag(self) -> str:
        return f"{self.image.host}/{self.image.name}:{self.image.tag}"

    @property
    def by_digest(self) -> str:
        return f"{self.image.host}/{self.image.name}@{self.image.digest}"


@dataclass(frozen=True)
class Seed:
    """What the local cloud provisions before anyone uses it: the 'existing customer' state."""

    org_id: str
    admin_email: str
    admin_api_key: str = field(repr=False)
    canary_service_id: str
    runner_image: PushedImage
    repository_path: str  # projects/P/locations/L/repositories/R, covered by the demo integration
    other_repository_path: str
    second_project_repository_path: str  # in SECOND_PROJECT, whose own gcr topic reaches on_push


class LocalCloud:
    """Everything the functions talk to, and the functions themselves, on 127.0.0.1.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with LocalCloud() as cloud:
            cloud.publish(cloud.topics.requests, {...})
            cloud.results_collector().wait_for_json(request_id="r1")

    Args:
        workdir: logs, registry storage and emulator data; None makes a temp dir that
            :meth:`stop` removes unless ``keep_workdir`` is set.
        iam_propagation_delay_seconds: how long a new service-account key is refused at the
            registry, like IAM's eventual consistency (a few seconds shows the rotation's
            test step waiting without slowing the demo).
        key_grace_period_seconds: the functions' ``KEY_GRACE_PERIOD_SECONDS``; 0 deletes
            the replaced key at once, so the demo can show it refused.
        function_env: extra or overriding variables for every function.
        functions: which of :data:`FUNCTIONS` to run (all by default); a tool that needs
            only ``on_push`` starts faster without the others.
        progress: called with a line of text as each piece comes up (the demo prints it).
    """

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        keep_workdir: bool = False,
        project: str = PROJECT,
        iam_propagation_delay_seconds: float = 2.0,
        key_grace_period_seconds: float = 0.0,
        function_env: Mapping[str, str] | None = None,
        functions: tuple[str, ...] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.project = project
        self.topics = Topics()
        self.iam_propagation_delay_seconds = iam_propagation_delay_seconds
        self.key_grace_period_seconds = key_grace_period_seconds
        #: Known before the functions start, so that their access policy can name it.
        self.org_id = uuid.uuid4().hex[:24]
        #: Known before the functions start: their access policy names it as the one canary.
        self.canary_service_id = uuid.uuid4().hex[:24]
        self._extra_env = dict(function_env or {})
        wanted = functions if functions is not None else tuple(spec.name for spec in FUNCTIONS)
        unknown = set(wanted) - {spec.name for spec in FUNCTIONS}
        if unknown:
            raise ValueError(f"unknown functions {sorted(unknown)}; known: {[s.name for s in FUNCTIONS]}")
        self._specs = tuple(spec for spec in FUNCTIONS if spec.name in wanted)
        self._progress = progress or (lambda line: None)
        self._owns_workdir = workdir is None
        self.keep_workdir = keep_workdir
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="localcloud-"))
        self._stack = contextlib.ExitStack()
        self._started = False
        self._counter = itertools.count()
        self.functions: dict[str, FunctionProcess] = {}
        self.registry_admin = ("localcloud-admin", secrets.token_urlsafe(24))
        # Set by start(); typed here so the rest of the class can rely on them.
        self.secret_manager: SecretManagerStandIn
        self.secret_manager_wire: Instrumented
        self.iam: IamStandIn
        self.artifact_registry: ArtifactRegistryStandIn
        self.cloud_logging: CloudLoggingStandIn
        self.dataloop: DataloopGateway
        self.token_endpoint: RegistryTokenEndpoint
        self.token_wire: Instrumented
        self.emulator: PubSubEmulator
        self.bridge: RegistryNotificationBridge
        self.registry: LocalRegistry
        self.seed: Seed
        self._signing_key: TokenSigningKey
        self._runner: PushedImage
        self._servers: dict[str, ServerThread] = {}
        # What has been started so far, so a half-started cloud can still be checked after stop().
        self._ports: dict[str, int] = {}
        self._processes: list[ManagedProcess] = []

    # -- lifetime --------------------------------------------------------------------------
    def __enter__(self) -> LocalCloud:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> LocalCloud:
        """Start every piece and seed the state; on any failure, stop what started and re-raise."""
        if self._started:
            return self
        self._started = True
        self._stack.callback(self._remove_workdir)
        try:
            self._start_standins()
            self._start_pubsub()
            self._start_registry()
            self._seed_registry()
            self._start_functions()
            self._subscribe_functions()
            self._seed_state()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything, in reverse start order; idempotent."""
        self._stack.close()

    def _remove_workdir(self) -> None:
        if self._owns_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @contextlib.contextmanager
    def _step(self, what: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        seconds = time.monotonic() - started
        self._progress(f"{what} ({seconds:.1f} s)")

    def _serve(self, name: str, app: Any) -> ServerThread:
        server = ServerThread(app).start()
        self._stack.callback(server.stop)
        self._servers[name] = server
        self._ports[name] = server.port
        return server

    # -- start-up, in dependency order -----------------------------------------------------
    def _start_standins(self) -> None:
        with self._step("Google API and Dataloop stand-ins"):
            self.secret_manager = SecretManagerStandIn(project_numbers={self.project: PROJECT_NUMBER})
            self.secret_manager_wire = Instrumented(self.secret_manager, "secretmanager")
            self._serve("secretmanager", self.secret_manager_wire)

            self.iam = IamStandIn().start()
            self._stack.callback(self.iam.stop)
            self._ports["iam"] = self.iam.port
            self.iam.state.set_propagation_delay(self.iam_propagation_delay_seconds)

            registry_state = ArtifactRegistryState(member_exists=self.iam.state.service_account_exists)
            self.artifact_registry = ArtifactRegistryStandIn(registry_state).start()
            self._stack.callback(self.artifact_registry.stop)
            self._ports["artifactregistry"] = self.artifact_registry.server.port

            self.cloud_logging = CloudLoggingStandIn(LoggingState(self.project, LOCATION)).start()
            self._stack.callback(self.cloud_logging.stop)
            self._ports["logging"] = self.cloud_logging.server.port

            self.dataloop = DataloopGateway()
            self._stack.callback(self.dataloop.close)
            self._serve("dataloop", self.dataloop)

            signing_key = TokenSigningKey.generate()
            self.token_endpoint = RegistryTokenEndpoint(
                GcpAuthority(self.iam.state, registry_state),
                signing_key,
                service=REGISTRY_SERVICE,
                issuer=REGISTRY_ISSUER,
                admin_username=self.registry_admin[0],
                admin_password=self.registry_admin[1],
            )
            self.token_wire = Instrumented(self.token_endpoint, "registry-token")
            self.token_endpoint.realm = self._serve("registry-token", self.token_wire).url + TOKEN_PATH
            self._signing_key = signing_key

    def _start_pubsub(self) -> None:
        with self._step("Pub/Sub emulator and topics"):
            self.emulator = start_emulator(project=self.project, workdir=self.workdir / "pubsub")
            self._stack.callback(self.emulator.stop)
            self._ports["pubsub"] = self.emulator.port
            self._processes.append(self.emulator.process)
            for topic in self.topics.all():
                self.emulator.ensure_topic(topic)
            # The emulator takes any project's topics: the second project's gcr lives beside ours.
            for project in self.gcr_projects:
                self.emulator.ensure_topic(self.gcr_topic(project))
            # Dead letters are kept where a person can look at them.
            self.emulator.ensure_pull_subscription("dead-letters", self.topics.dead_letter)

    def _start_registry(self) -> None:
        with self._step("docker-registry, its token endpoint and the notification bridge"):
            # The bridge names images by the registry's host, and the registry's config names
            # the bridge's URL: so the registry's port is chosen first.
            port = free_port()
            self.bridge = RegistryNotificationBridge(
                lambda project, payload: self.emulator.publish_json(self.gcr_topic(project), payload),
                registry_host=f"127.0.0.1:{port}",
            )
            bridge_url = self._serve("registry-bridge", self.bridge).url
            self.registry = LocalRegistry(
                token_realm=self.token_endpoint.realm,
                service=REGISTRY_SERVICE,
                issuer=REGISTRY_ISSUER,
                root_cert_pem=self._signing_key.certificate_pem,
                notifications_url=f"{bridge_url}/events",
                workdir=self.workdir / "registry",
                port=port,
            )
            self._stack.callback(self.registry.stop)
            self._ports["registry"] = port
            self.registry.start()
            self.dataloop.insecure_registries.add(self.registry.host)

    def _seed_registry(self) -> None:
        """Push the canary service's runner image before anything subscribes to ``gcr``.

        It is the customer's existing image, not a push the demo makes, so its
        notification goes to a topic nobody listens on yet.
        """
        with self._step("seed image in the registry"):
            pushed = self.push(RUNNER_IMAGE, RUNNER_TAG, content=b"the canary service's runner\n")
            self._wait_for_bridge(pushed.by_digest)
            self._runner = pushed

    def _wait_for_bridge(self, digest_reference: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(f.message.digest == digest_reference for f in self.bridge.published):
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"the registry did not notify the bridge of {digest_reference} within {timeout:.0f}s; "
                    f"registry log:\n{self.registry.log_tail()}"
                )
            time.sleep(0.05)

    def _start_functions(self) -> None:
        env = self.function_env()
        for spec in self._specs:
            with self._step(f"function {spec.name} under functions-framework"):
                function = start_function(
                    spec.target,
                    spec.source,
                    env=env,
                    inherit_env=False,  # configured by exactly the variables below, as when deployed
                    log_path=self.workdir / "logs" / f"{spec.name}.log",
                )
                self._stack.callback(function.stop)
                self.cloud_logging.state.follow(function.log_path, spec.name.replace("_", "-"))
                self.functions[spec.name] = function
                self._ports[f"function {spec.name}"] = function.port
                self._processes.append(function.process)

    def _subscribe_functions(self) -> None:
        with self._step("push subscriptions (retry policy, dead letters)"):
            for spec in self._specs:
                function = self.functions[spec.name]
                topic = self.emulator.topic_path(getattr(self.topics, spec.topic))
                self.emulator.ensure_push_subscription(
                    f"{spec.topic}-to-{spec.name}",
                    topic,
                    topic_push_endpoint(function.url, topic),
                    ack_deadline_seconds=spec.ack_deadline_seconds,
                    retry_policy=RETRY_POLICY,
                    dead_letter=DeadLetter(self.topics.dead_letter, MAX_DELIVERY_ATTEMPTS),
                )
            if "on_push" in self.functions:
                on_push = next(spec for spec in self._specs if spec.name == "on_push")
                for project in self.gcr_projects:
                    if project == self.project:
                        continue
                    # As deploy does: a subscription of this project on the other project's topic.
                    topic = self.gcr_topic(project)
                    self.emulator.ensure_push_subscription(
                        f"gcr-{project}-to-on_push",
                        topic,
                        topic_push_endpoint(self.functions["on_push"].url, topic),
                        ack_deadline_seconds=on_push.ack_deadline_seconds,
                        retry_policy=RETRY_POLICY,
                        dead_letter=DeadLetter(self.topics.dead_letter, MAX_DELIVERY_ATTEMPTS),
                    )

            # Secret Manager's notifications (SECRET_ROTATE, SECRET_VERSION_ADD, …) go to Pub/Sub.
            def publish(topic: str, attributes: dict[str, str], data: bytes) -> None:
                self.emulator.publish(topic, data, attributes)

            self.secret_manager.publish_hook = publish
            self.secret_manager.start_ticker(1.0)
            self._stack.callback(self._stop_notifications)

    def _stop_notifications(self) -> None:
        """Stop Secret Manager's scheduler before the emulator it publishes to goes away."""
        self.secret_manager.stop_ticker()
        self.secret_manager.publish_hook = None

    def _seed_state(self) -> None:
        with self._step("seed: Dataloop org, API key in Secret Manager, repositories, canary service"):
            org_id = self.dataloop.add_org("acme", org_id=self.org_id)
            self.dataloop.add_member(DATALOOP_ADMIN_EMAIL, org_id, "admin")
            api_key = self.dataloop.issue_api_key(DATALOOP_ADMIN_EMAIL)
            self._store_dataloop_credentials(api_key)
            state = self.artifact_registry.state
            repository = state.create_repository(self.project, LOCATION, REPOSITORY, {"format": "DOCKER"})
            other = state.create_repository(self.project, LOCATION, OTHER_REPOSITORY, {"format": "DOCKER"})
            second = state.create_repository(SECOND_PROJECT, LOCATION, SECOND_REPOSITORY, {"format": "DOCKER"})
            service_id = self.dataloop.add_service(
                org_id, CANARY_SERVICE_NAME, self._runner.by_tag, service_id=self.canary_service_id
            )
            self.seed = Seed(
                org_id=org_id,
                admin_email=DATALOOP_ADMIN_EMAIL,
                admin_api_key=api_key,
                canary_service_id=service_id,
                runner_image=self._runner,
                repository_path=repository["name"],
                other_repository_path=other["name"],
                second_project_repository_path=second["name"],
            )

    def _store_dataloop_credentials(self, api_key: str) -> None:
        """The functions' Dataloop credentials, where they read them: a Secret Manager secret."""
        from shared.adapters.secrets import SecretManager

        secrets_adapter = SecretManager(self.project, endpoint=self.secret_manager_url, timeout=5.0)
        secrets_adapter.create_secret(
            DATALOOP_CREDENTIALS_SECRET, labels={"purpose": "dataloop-api-credentials"}, annotations={}
        )
        secrets_adapter.add_version(DATALOOP_CREDENTIALS_SECRET, json.dumps({"api_key": api_key}).encode())

    # -- endpoints ---------------------------------------------------------------------------
    @property
    def secret_manager_url(self) -> str:
        return self._servers["secretmanager"].url

    @property
    def dataloop_url(self) -> str:
        """The gateway's origin; the API base URL is this plus ``/api/v1``."""
        return self._servers["dataloop"].url

    @property
    def token_realm(self) -> str:
        return self.token_endpoint.realm

    @property
    def registry_host(self) -> str:
        """``127.0.0.1:PORT``: the registry host images and integrations name."""
        return self.registry.host

    def function_env(self) -> dict[str, str]:
        """The environment every function runs with: the endpoints, and timings suited to a local run."""
        env = {
            "GCP_PROJECT": self.project,
            "PUBSUB_EMULATOR_HOST": self.emulator.host_port,
            "RESULTS_TOPIC": self.topics.results,
            "ROTATION_TOPIC": self.topics.rotation,
            "SECRET_MANAGER_ENDPOINT": self.secret_manager_url,
            "IAM_ENDPOINT": self.iam.target,
            "ARTIFACT_REGISTRY_ENDPOINT": self.artifact_registry.url,
            "DATALOOP_BASE_URL": f"{self.dataloop_url}/api/v1",
            "DATALOOP_CREDENTIALS_SECRET": DATALOOP_CREDENTIALS_SECRET,
            "REGISTRY_INSECURE_HOSTS": self.registry_host,
            "ALLOW_LOOPBACK_REGISTRIES": "true",  # the local registry is 127.0.0.1:PORT
            "ACCESS_POLICY": self.access_policy().to_json(),
            "KEY_GRACE_PERIOD_SECONDS": f"{self.key_grace_period_seconds:g}",
            # Long enough to wait out the local IAM's propagation delay several times over.
            "ROTATION_TEST_TIMEOUT_SECONDS": f"{max(30.0, self.iam_propagation_delay_seconds * 5):g}",
            "CANARY_TIMEOUT_SECONDS": "20",
            # Production reuses the list of integrations for 60 s; here every push sees the
            # secret as it is now, so a push right after a rotation is tested with the new key.
            "INTEGRATION_CACHE_TTL_SECONDS": "0",
            "HTTP_TIMEOUT_SECONDS": "5",
            "HTTP_RETRIES": "2",
            "LOG_LEVEL": "INFO",
        }
        env.update(self._extra_env)
        return env

    @property
    def gcr_projects(self) -> tuple[str, ...]:
        """Projects whose ``gcr`` topic reaches on_push: this one and the second (deploy's ``gcr_projects``)."""
        return (self.project, SECOND_PROJECT)

    def gcr_topic(self, project: str) -> str:
        """The ``gcr`` topic Artifact Registry would notify for a repository of ``project``.

        A project the local cloud does not wire falls back to its own topic, so that tests
        pushing ad-hoc names (``a/b/c``) still see their notifications.
        """
        home = project if project in self.gcr_projects else self.project
        return f"projects/{home}/topics/{self.topics.gcr}"

    def access_policy(self) -> AccessPolicy:
        """What a deployment of the local cloud would allow: its org, its repositories (two here, one in the
        second project), its project; and the projects it wires, as deploy says them."""
        return AccessPolicy(
            org_ids=frozenset([self.org_id]),
            repositories=frozenset(
                [
                    *(
                        f"projects/{self.project}/locations/{LOCATION}/repositories/{r}"
                        for r in (REPOSITORY, OTHER_REPOSITORY)
                    ),
                    f"projects/{SECOND_PROJECT}/locations/{LOCATION}/repositories/{SECOND_REPOSITORY}",
                ]
            ),
            gcr_projects=frozenset(self.gcr_projects),
            # Puller accounts of the second project's integrations live beside its repository.
            account_projects=frozenset([self.project, SECOND_PROJECT]),
            service_accounts=(f"*@{self.project}.iam.gserviceaccount.com",),
            canary_services=frozenset([self.canary_service_id]),
        )

    def endpoints(self) -> dict[str, str]:
        """Name → address of everything a person might point a tool at."""
        found = {
            "Pub/Sub emulator (PUBSUB_EMULATOR_HOST)": self.emulator.host_port,
            "Secret Manager (REST)": self.secret_manager_url,
            "IAM (gRPC)": self.iam.target,
            "Artifact Registry (REST)": self.artifact_registry.url,
            "Cloud Logging (REST, LOGGING_API_ENDPOINT)": self.cloud_logging.url,
            "Dataloop gateway (API base)": f"{self.dataloop_url}/api/v1",
            "registry (docker-registry)": self.registry.url,
            "registry token endpoint": self.token_realm,
            "registry notifications bridge": f"{self._servers['registry-bridge'].url}/events",
        }
        for name, function in self.functions.items():
            found[f"function {name}"] = function.url
        return found

    def ports(self) -> dict[str, int]:
        """What listens on which port (to check every one is closed after :meth:`stop`)."""
        return dict(self._ports)

    def pids(self) -> list[int]:
        """Live processes the local cloud started (all of each process group)."""
        pids = [pid for process in self._processes for pid in process.group_members()]
        registry = getattr(self, "registry", None)
        registry_process = registry._process if registry is not None else None  # LocalRegistry exposes no pid
        if registry_process is not None and pid_running(registry_process.pid):
            pids.append(registry_process.pid)
        return sorted(pids)

    # -- using it ----------------------------------------------------------------------------
    def publish(self, topic_id: str, payload: Any, attributes: Mapping[str, str] | None = None) -> str:
        """Publish JSON (or raw ``bytes``) on a topic of the local cloud; returns the message id."""
        if isinstance(payload, bytes):
            return self.emulator.publish(topic_id, payload, attributes)
        return self.emulator.publish_json(topic_id, payload, attributes)

    def results_collector(self, label: str = "watch") -> Collector:
        """A new pull subscription on the results topic, and a reader for it.

        Create it *before* publishing what you wait for: Pub/Sub keeps messages only for
        subscriptions that exist when they are published.
        """
        subscription = f"results-{label}-{uuid.uuid4().hex[:8]}"
        self.emulator.ensure_pull_subscription(subscription, self.topics.results, ack_deadline_seconds=30)
        return self.emulator.collector(subscription)

    def delete_subscription(self, collector: Collector) -> None:
        with contextlib.suppress(api_exceptions.NotFound):
            self.emulator.subscriber.delete_subscription(
                request={"subscription": collector.subscription_path}, timeout=RPC_TIMEOUT
            )

    def push(
        self,
        image: str = "app",
        tag: str = "v1",
        *,
        repository: str = REPOSITORY,
        content: bytes | None = None,
        project: str | None = None,
    ) -> PushedImage:
        """``skopeo copy`` a one-layer image to ``HOST/PROJECT/REPOSITORY/IMAGE:TAG``.

        The registry then notifies the bridge, which publishes on ``gcr``, which triggers
        ``on_push``: exactly what a ``docker push`` to GAR sets off. Distinct ``content``
        (unique by default) gives a distinct digest. ``project`` (default: the local cloud's)
        is the project the repository is in, as in a GAR image name: the notification goes to
        that project's ``gcr`` topic.
        """
        project = project or self.project
        number = next(self._counter)
        layout = build_oci_layout(
            self.workdir / "images" / f"layout-{number}",
            tag=tag,
            content=content if content is not None else f"image {number} {uuid.uuid4()}\n".encode(),
        )
        name = f"{project}/{repository}/{image}"
        digest = push_image(
            layout,
            registry_host=self.registry_host,
            name=name,
            tag=tag,
            username=self.registry_admin[0],
            password=self.registry_admin[1],
        )
        return PushedImage(RegistryImage(self.registry_host, project, repository, image, tag, digest))

    def delete(self, pushed: PushedImage) -> None:
        """Delete a manifest by digest, as a cleanup policy would; the registry notifies a DELETE."""
        delete_manifest(
            self.registry.url,
            pushed.image.name,
            pushed.digest,
            username=self.registry_admin[0],
            password=self.registry_admin[1],
        )

    def function_deliveries(self, name: str, event_id: str) -> int:
        """How many times ``name`` logged handling the Pub/Sub message ``event_id``.

        Each delivery logs one outcome record labelled with the event id, so this counts
        deliveries (a redelivered message would count twice).
        """
        return sum(
            1
            for record in self.functions[name].json_lines()
            if (record.get("logging.googleapis.com/labels") or {}).get("event_id") == event_id
            and isinstance(record.get("outcome"), dict)
        )

    def write_registry_auth_file(self, path: Path) -> Path:
        """A containers auth file (mode 600) with the registry admin, for ``skopeo --dest-authfile``.

        A file rather than ``--dest-creds`` keeps the password out of process listings and
        out of anything printed.
        """
        token = base64.b64encode(f"{self.registry_admin[0]}:{self.registry_admin[1]}".encode()).decode()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)  # never readable by others, not even between create and write
        path.chmod(0o600)
        path.write_text(json.dumps({"auths": {self.registry_host: {"auth": token}}}))
        return path


def all_stopped(ports: Mapping[str, int], pids: list[int], *, settle_seconds: float = 3.0) -> list[str]:
    """What is still alive of a stopped local cloud: open ports and running pids, described.

    Some servers release their socket a moment after ``stop`` returns (gRPC closes its
    listener on a core thread), so a port gets ``settle_seconds`` to close before it counts.
    """

    def accepting(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    deadline = time.monotonic() + settle_seconds
    open_ports = dict(ports)
    while True:
        open_ports = {name: port for name, port in open_ports.items() if accepting(port)}
        if not open_ports or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    left = [f"port {port} ({name}) still accepts connections" for name, port in open_ports.items()]
    left += [f"pid {pid} still running" for pid in pids if pid_running(pid)]
    return left
