"""Builds each function's adapters once per instance and keeps them for every invocation.

Cold starts are paid per instance, warm invocations are the common case: clients, token
caches and connection pools live here, at module level, created on first use.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from shared.core import logs
from shared.core.config import Settings, settings

if TYPE_CHECKING:  # the builders import these lazily: a cold start pays only for what it uses
    from shared.adapters.artifact_registry import RepositoryAccess
    from shared.adapters.catalog import IntegrationCatalog, SecretKeySource
    from shared.adapters.dataloop.client import DataloopClient
    from shared.adapters.iam import ServiceAccounts
    from shared.adapters.pubsub import PubSubFanOut, PubSubResultSink
    from shared.adapters.registry import RegistryClient
    from shared.adapters.secrets import SecretManager
    from shared.model.policy import AccessPolicy
    from shared.workflows.canary import CanaryTest
    from shared.workflows.key_probe import KeyProbe
    from shared.workflows.provisioning.deprovision import Deprovisioner
    from shared.workflows.provisioning.handler import RequestHandler
    from shared.workflows.provisioning.image_check import ImageCheck
    from shared.workflows.provisioning.provision import Provisioner
    from shared.workflows.push import PushTester
    from shared.workflows.reference_test import ReferenceTest
    from shared.workflows.rotation.messages import RotationMessages
    from shared.workflows.rotation.workflow import KeyRotation
    from shared.workflows.status import StatusReport
    from shared.workflows.sweep import Sweep

logger = logging.getLogger("dataloop_gar")


T = TypeVar("T")


class _Once(Generic[T]):
    """A builder run once per instance, also when several events arrive at once.

    ``functools.cache`` lets concurrent first callers each run the builder and keep
    their own result: on a cold instance serving eight events, eight registry clients
    with eight token caches. Here the first caller builds under a lock and the others
    wait for its result.
    """

    def __init__(self, build: Callable[[], T]) -> None:
        functools.update_wrapper(self, build)
        self._build = build
        self._lock = threading.RLock()
        self._built: list[T] = []

    def __call__(self) -> T:
        if not self._built:
            with self._lock:
                if not self._built:
                    self._built.append(self._build())
        return self._built[0]

    def is_built(self) -> bool:
        return bool(self._built)

    def cache_clear(self) -> None:
        with self._lock:
            self._built.clear()


def start(function: str) -> Settings:
    """Validate configuration and set up logging; called at import by each entry point.

    Raises:
        ConfigError: with every problem in the environment, so the deployment fails
            loudly at start rather than on the first event.
    """
    config = settings()
    logs.configure(config.log_level, project=config.project)
    access_policy()  # a bad ACCESS_POLICY stops the function here, with every problem listed
    logger.debug("%s started", function)
    return config


@_Once
def access_policy() -> AccessPolicy:
    """The deployment's access policy (shared.model.policy), parsed once per instance."""
    from shared.model.policy import AccessPolicy

    return AccessPolicy.from_json(settings().access_policy)


@_Once
def secret_manager() -> SecretManager:
    from shared.adapters.secrets import SecretManager

    config = settings()
    return SecretManager(config.project, endpoint=config.secret_manager_endpoint, timeout=config.http_timeout_seconds)


@_Once
def catalog() -> IntegrationCatalog:
    from shared.adapters.catalog import IntegrationCatalog

    def invalid(secret_id: str, reason: str) -> None:
        logs.log(logger, logging.WARNING, f"ignoring managed secret {secret_id}: {reason}", secret_id=secret_id)

    return IntegrationCatalog(secret_manager(), ttl=settings().integration_cache_ttl_seconds, on_invalid=invalid)


@_Once
def key_source() -> SecretKeySource:
    from shared.adapters.catalog import SecretKeySource

    return SecretKeySource(secret_manager())


@_Once
def registry() -> RegistryClient:
    from shared.adapters.registry import RegistryClient

    config = settings()
    return RegistryClient(
        timeout=config.http_timeout_seconds,
        retries=config.http_retries,
        insecure_hosts=config.registry_insecure_hosts,
    )


@_Once
def results() -> PubSubResultSink:
    from shared.adapters.pubsub import PubSubResultSink

    return PubSubResultSink(settings().results_topic_path)


@_Once
def push_tester() -> PushTester:
    from shared.workflows.last_push import LastPush
    from shared.workflows.push import PushTester
    from shared.workflows.reference_test import ReferenceTest

    return PushTester(
        catalog(),
        key_source(),
        ReferenceTest(registry()),
        skip_tag_patterns=settings().skip_tag_patterns,
        canary=canary,
        last_push=LastPush(secret_manager(), catalog()),
    )


@_Once
def canary() -> CanaryTest:
    from shared.workflows.canary import CanaryTest
    from shared.workflows.canary_lock import LEASE_MARGIN_SECONDS, CanaryLock

    config = settings()
    lock = CanaryLock(
        secret_manager(),
        lease_seconds=config.canary_timeout_seconds + LEASE_MARGIN_SECONDS,
        wait_seconds=config.canary_lease_wait_seconds,
    )
    return CanaryTest(dataloop().services, lock, timeout=config.canary_timeout_seconds)


@_Once
def service_accounts() -> ServiceAccounts:
    from shared.adapters.iam import ServiceAccounts

    config = settings()
    return ServiceAccounts(endpoint=config.iam_endpoint, timeout=config.http_timeout_seconds)


@_Once
def repository_access() -> RepositoryAccess:
    from shared.adapters.artifact_registry import RepositoryAccess

    config = settings()
    return RepositoryAccess(endpoint=config.artifact_registry_endpoint, timeout=config.http_timeout_seconds)


@_Once
def dataloop() -> DataloopClient:
    """The Dataloop client, with credentials read once from Secret Manager.

    The secret's payload is JSON: ``{"api_key": "…"}`` or ``{"username": "…", "password": "…"}``
    for a bot user. Its content is registered with the redactor and never logged.
    """

    from shared.adapters.dataloop.client import DataloopClient
    from shared.core import json_text
    from shared.core.errors import PermanentError
    from shared.core.redaction import register_secret

    config = settings()
    _, payload = secret_manager().access(config.dataloop_credentials_secret, "latest")
    register_secret(payload)
    try:
        credentials = json_text.loads(payload)
    except ValueError:
        credentials = None
    if not isinstance(credentials, dict) or not (
        credentials.get("api_key") or (credentials.get("username") and credentials.get("password"))
    ):
        raise PermanentError(
            f"secret {config.dataloop_credentials_secret} must hold JSON with 'api_key', or 'username' and "
            "'password' of a Dataloop bot user",
            code="bad-dataloop-credentials",
        )
    for value in credentials.values():
        if isinstance(value, str):
            register_secret(value)
    return DataloopClient(
        api_key=credentials.get("api_key"),
        username=credentials.get("username"),
        password=credentials.get("password"),
        base_url=config.dataloop_base_url,
        timeout=config.http_timeout_seconds,
        retries=config.http_retries,
    )


# -- key rotation ----------------------------------------------------------------------


@_Once
def key_rotation() -> KeyRotation:
    """The rotation workflow: ``key_rotation().rotate(secret_id, force=, dry_run=, request_id=) -> Outcome``.

    Dataloop is passed as the ``dataloop`` builder itself, so runs that never reach
    Dataloop (not due, in progress, dry runs) never read its credentials.
    """
    from shared.workflows.rotation.workflow import KeyRotation

    config = settings()
    return KeyRotation(
        secret_manager(),
        service_accounts(),
        dataloop,
        key_probe(),
        grace_period_seconds=config.key_grace_period_seconds,
        test_timeout_seconds=config.rotation_test_timeout_seconds,
        lease_seconds=config.rotation_lease_seconds,
        default_period_seconds=config.rotation_period_days * 86400,
        expiry_margin_seconds=config.key_expiry_margin_seconds,
        dry_run=config.dry_run,
        policy=access_policy(),
    )


@_Once
def rotation_publisher() -> PubSubFanOut:
    """Publishes the sweep's fan-out on the rotation topic (one PublisherClient per instance)."""
    from shared.adapters.pubsub import PubSubFanOut

    return PubSubFanOut(settings().rotation_topic_path)


@_Once
def rotation_sweep() -> Sweep:
    from shared.workflows.sweep import Sweep

    config = settings()
    return Sweep(
        secret_manager(),
        rotation_publisher(),
        default_period_seconds=config.rotation_period_days * 86400,
        expiry_margin_seconds=config.key_expiry_margin_seconds,
    )


@_Once
def rotation_handler() -> RotationMessages:
    """Routes rotation-topic messages (sweep, rotate, Secret Manager notifications)."""
    from shared.workflows.rotation.messages import RotationMessages

    return RotationMessages(key_rotation(), rotation_sweep(), secret_manager())


# -- provisioning requests ---------------------------------------------------------------
# Not cached: each composes the cached adapters above (so reset() covers them too) and costs
# nothing to build; the Dataloop client and the rotation workflow are passed as builders so
# that a request which never needs them never reads their credentials.


def key_probe() -> KeyProbe:
    """Proves new keys, for rotation and for provisioning alike."""
    from shared.workflows.key_probe import KeyProbe

    return KeyProbe(registry())


def reference_test() -> ReferenceTest:
    from shared.workflows.reference_test import ReferenceTest

    return ReferenceTest(registry())


def provisioner() -> Provisioner:
    from shared.workflows.provisioning.provision import Provisioner

    config = settings()
    return Provisioner(
        secret_manager(),
        service_accounts(),
        repository_access(),
        dataloop,
        key_probe(),
        reference_test(),
        test_timeout_seconds=config.rotation_test_timeout_seconds,
        rotation_topic=config.rotation_topic_path,
        default_rotation_period_days=config.rotation_period_days,
    )


def deprovisioner() -> Deprovisioner:
    from shared.workflows.provisioning.deprovision import Deprovisioner

    return Deprovisioner(secret_manager(), service_accounts(), repository_access(), dataloop, policy=access_policy())


def image_check() -> ImageCheck:
    from shared.workflows.provisioning.image_check import ImageCheck

    return ImageCheck(secret_manager(), reference_test())


def status_report() -> StatusReport:
    from shared.workflows.status import StatusReport

    config = settings()
    return StatusReport(
        secret_manager(),
        default_rotation_period_days=config.rotation_period_days,
        expiry_margin_seconds=config.key_expiry_margin_seconds,
        keys=service_accounts,
        policy=access_policy(),
    )


def request_handler() -> RequestHandler:
    """The ``requests`` function's workflow: validate, dispatch, answer."""
    from shared.workflows.provisioning.handler import RequestHandler

    return RequestHandler(
        provisioner=provisioner,
        deprovisioner=deprovisioner,
        rotation=key_rotation,
        image_check=image_check,
        status=status_report,
        policy=access_policy(),
        allow_loopback_registries=settings().allow_loopback_registries,
    )


def reset() -> None:
    """Drop every cached adapter and workflow of this module (tests reconfigure between cases)."""
    for value in list(globals().values()):
        if isinstance(value, _Once):
            value.cache_clear()
