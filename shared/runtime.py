"""Builds each function's adapters once per instance and keeps them for every invocation.

Cold starts are paid per instance, warm invocations are the common case: clients, token
caches and connection pools live here, at module level, created on first use.
"""

from __future__ import annotations

import functools
import logging

from shared import logs
from shared.config import Settings, settings

logger = logging.getLogger("dataloop_gar")


def start(function: str) -> Settings:
    """Validate configuration and set up logging; called at import by each entry point.

    Raises:
        ConfigError: with every problem in the environment, so the deployment fails
            loudly at start rather than on the first event.
    """
    config = settings()
    logs.configure(config.log_level, project=config.project)
    logger.debug("%s started", function)
    return config


@functools.cache
def secret_manager():  # type: ignore[no-untyped-def]
    from shared.secrets import SecretManager

    config = settings()
    return SecretManager(config.project, endpoint=config.secret_manager_endpoint, timeout=config.http_timeout_seconds)


@functools.cache
def catalog():  # type: ignore[no-untyped-def]
    from shared.integrations import IntegrationCatalog

    def invalid(secret_id: str, reason: str) -> None:
        logs.log(logger, logging.WARNING, f"ignoring managed secret {secret_id}: {reason}", secret=secret_id)

    return IntegrationCatalog(secret_manager(), ttl=settings().integration_cache_ttl_seconds, on_invalid=invalid)


@functools.cache
def key_source():  # type: ignore[no-untyped-def]
    from shared.integrations import SecretKeySource

    return SecretKeySource(secret_manager())


@functools.cache
def registry():  # type: ignore[no-untyped-def]
    from shared.registry import RegistryClient

    config = settings()
    return RegistryClient(
        timeout=config.http_timeout_seconds,
        retries=config.http_retries,
        insecure_hosts=config.registry_insecure_hosts,
    )


@functools.cache
def results():  # type: ignore[no-untyped-def]
    from shared.results import PubSubResultSink

    return PubSubResultSink(settings().results_topic_path)


@functools.cache
def push_tester():  # type: ignore[no-untyped-def]
    from shared.push import PushTester
    from shared.reference_test import ReferenceTest

    return PushTester(
        catalog(), key_source(), ReferenceTest(registry()), skip_tag_patterns=settings().skip_tag_patterns
    )


def reset() -> None:
    """Drop every cached adapter (tests reconfigure between cases)."""
    for builder in (secret_manager, catalog, key_source, registry, results, push_tester):
        builder.cache_clear()
