"""Configuration from environment variables, validated once per process.

A function that starts with a bad environment should say *everything* that is wrong in
one message, at start, rather than fail one variable at a time on the first event.
The README's configuration table documents each variable declared here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.core.errors import ConfigError

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: Tags under which signing and attestation tools store artifacts that no runtime can run
#: (docs/external-apis.md §1.3): cosign's suffixed tags, and the OCI referrers tag schema
#: (``<algorithm>-<digest hex truncated to 64>``, no suffix), which tools such as GitHub's
#: attest-build-provenance use on registries without a referrers API, GAR among them.
REFERRERS_TAG_PATTERNS: tuple[str, ...] = ("sha256-" + "[0-9a-f]" * 64, "sha512-" + "[0-9a-f]" * 64)
DEFAULT_SKIP_TAG_PATTERNS: tuple[str, ...] = ("*.sig", "*.att", "*.sbom", *REFERRERS_TAG_PATTERNS)


@dataclass(frozen=True)
class Settings:
    """Every setting a function reads. Defaults suit a production deployment."""

    project: str
    results_topic: str = "dataloop-gar-results"
    skip_tag_patterns: tuple[str, ...] = DEFAULT_SKIP_TAG_PATTERNS
    http_timeout_seconds: float = 10.0
    http_retries: int = 3
    integration_cache_ttl_seconds: float = 60.0
    registry_insecure_hosts: tuple[str, ...] = ()
    secret_manager_endpoint: str | None = None
    log_level: str = "INFO"
    # -- Dataloop -----------------------------------------------------------------------
    dataloop_base_url: str = "https://gate.dataloop.ai/api/v1"
    dataloop_credentials_secret: str = "dataloop-api-credentials"
    # -- provisioning and rotation ----------------------------------------------------------
    rotation_topic: str = "dataloop-gar-rotation"
    rotation_period_days: float = 30.0
    #: The least notice before a key's expiry (an organisation's key-expiry policy) at which its
    #: rotation is due; a tenth of the key's lifetime when more, never over half of it. A day covers
    #: a daily sweep plus one redelivered run (shared.model.schedule.expiry_margin).
    key_expiry_margin_seconds: float = 86400.0
    key_grace_period_seconds: float = 86400.0
    rotation_test_timeout_seconds: float = 420.0
    rotation_lease_seconds: float = 900.0
    canary_timeout_seconds: float = 300.0
    #: How long a push waits for another push's canary test on the same service before it is redelivered.
    canary_lease_wait_seconds: float = 30.0
    dry_run: bool = False
    #: Who may ask for what (shared.model.policy): the JSON the deployment writes from its settings.
    #: Empty: the built-in rules only (see shared.model.policy.AccessPolicy.from_json).
    access_policy: str = ""
    # -- local cloud only: endpoints of the stand-ins -----------------------------------------
    iam_endpoint: str | None = None
    artifact_registry_endpoint: str | None = None
    #: Registry hosts on the loopback interface (127.0.0.1:PORT, localhost:PORT) are accepted
    #: only when this is on; the local cloud turns it on, a deployment never does.
    allow_loopback_registries: bool = False

    @property
    def rotation_topic_path(self) -> str:
        return self._topic_path(self.rotation_topic)

    @property
    def results_topic_path(self) -> str:
        return self._topic_path(self.results_topic)

    def _topic_path(self, topic: str) -> str:
        return topic if topic.startswith("projects/") else f"projects/{self.project}/topics/{topic}"


def _text(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _number(low: float, high: float, kind: type = float) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            raise ValueError(f"must be a {'whole ' if kind is int else ''}number, got {value!r}") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low:g} and {high:g}, got {value}")
        return number

    return parse


def _url(value: str) -> str:
    url = _endpoint(value)
    if url is None:
        raise ValueError("must not be empty")
    return url


def _flag(value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {value!r}")


def _host_port(value: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"must be HOST:PORT, got {value!r}")
    return value


def _level(value: str) -> str:
    level = value.strip().upper()
    if level not in _LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}, got {value!r}")
    return level


def _endpoint(value: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, got {value!r}")
    return value.rstrip("/")


#: env var -> (Settings field, parser). ``project`` is resolved separately (two names).
_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "RESULTS_TOPIC": ("results_topic", _text),
    "SKIP_TAG_PATTERNS": ("skip_tag_patterns", _csv),
    "HTTP_TIMEOUT_SECONDS": ("http_timeout_seconds", _number(0.1, 300)),
    "HTTP_RETRIES": ("http_retries", _number(0, 10, int)),
    "INTEGRATION_CACHE_TTL_SECONDS": ("integration_cache_ttl_seconds", _number(0, 3600)),
    "REGISTRY_INSECURE_HOSTS": ("registry_insecure_hosts", _csv),
    "SECRET_MANAGER_ENDPOINT": ("secret_manager_endpoint", _endpoint),
    "LOG_LEVEL": ("log_level", _level),
    "DATALOOP_BASE_URL": ("dataloop_base_url", _url),
    "DATALOOP_CREDENTIALS_SECRET": ("dataloop_credentials_secret", _text),
    "ROTATION_TOPIC": ("rotation_topic", _text),
    "ROTATION_PERIOD_DAYS": ("rotation_period_days", _number(1 / 24, 3650)),
    "KEY_EXPIRY_MARGIN_SECONDS": ("key_expiry_margin_seconds", _number(0, 30 * 86400)),
    "KEY_GRACE_PERIOD_SECONDS": ("key_grace_period_seconds", _number(0, 90 * 86400)),
    "ROTATION_TEST_TIMEOUT_SECONDS": ("rotation_test_timeout_seconds", _number(1, 480)),
    "ROTATION_LEASE_SECONDS": ("rotation_lease_seconds", _number(60, 86400)),
    "CANARY_TIMEOUT_SECONDS": ("canary_timeout_seconds", _number(5, 480)),
    "CANARY_LEASE_WAIT_SECONDS": ("canary_lease_wait_seconds", _number(0, 300)),
    "DRY_RUN": ("dry_run", _flag),
    "IAM_ENDPOINT": ("iam_endpoint", _host_port),
    "ARTIFACT_REGISTRY_ENDPOINT": ("artifact_registry_endpoint", _endpoint),
    "ACCESS_POLICY": ("access_policy", str.strip),
    "ALLOW_LOOPBACK_REGISTRIES": ("allow_loopback_registries", _flag),
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``environ``.

    Raises:
        ConfigError: listing every missing or invalid variable at once.
    """
    env = os.environ if environ is None else environ
    problems: list[str] = []
    values: dict[str, Any] = {}

    project = (env.get("GCP_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT") or "").strip()
    if not project:
        problems.append("GCP_PROJECT: required (the project that holds the secrets and topics)")
    values["project"] = project

    for name, (field, parse) in _VARIABLES.items():
        if name not in env:
            continue
        try:
            values[field] = parse(env[name])
        except ValueError as exc:
            problems.append(f"{name}: {exc}")

    if problems:
        raise ConfigError(problems)
    return Settings(**values)


_lock = threading.Lock()
_settings: Settings | None = None


def settings() -> Settings:
    """The process's settings, loaded on first use and then kept."""
    global _settings
    if _settings is None:
        with _lock:
            if _settings is None:
                _settings = load_settings()
    return _settings


def reset_settings() -> None:
    """Forget the loaded settings (tests change the environment between cases)."""
    global _settings
    with _lock:
        _settings = None
