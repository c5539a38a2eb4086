"""A client for Dataloop's REST API: registry integrations and services (docs/external-apis.md §5).

Built from what the dtlpy SDK sends, without depending on it: dtlpy pulls in numpy, aiohttp
and more at import, which a Cloud Function would pay for at every cold start.
"""

from shared.dataloop.auth import ApiKey, BotLogin, jwt_claims, renew_at
from shared.dataloop.client import DEFAULT_BASE_URL, DataloopClient, gate_origin
from shared.dataloop.errors import (
    DataloopConflict,
    DataloopError,
    DataloopForbidden,
    DataloopNotFound,
    DataloopRejected,
    DataloopUnauthorized,
    DataloopUnavailable,
    IntegrationNameTaken,
)
from shared.dataloop.integrations import (
    GCP,
    PRIVATE_REGISTRY,
    Integration,
    Integrations,
    gar_options,
    registry_host_for,
)
from shared.dataloop.services import PULL_FAILURES, RuntimeStatus, Services, ServiceStatus, runner_image

__all__ = [
    "DEFAULT_BASE_URL",
    "GCP",
    "PRIVATE_REGISTRY",
    "PULL_FAILURES",
    "ApiKey",
    "BotLogin",
    "DataloopClient",
    "DataloopConflict",
    "DataloopError",
    "DataloopForbidden",
    "DataloopNotFound",
    "DataloopRejected",
    "DataloopUnauthorized",
    "DataloopUnavailable",
    "Integration",
    "IntegrationNameTaken",
    "Integrations",
    "RuntimeStatus",
    "ServiceStatus",
    "Services",
    "gar_options",
    "gate_origin",
    "jwt_claims",
    "registry_host_for",
    "renew_at",
    "runner_image",
]
