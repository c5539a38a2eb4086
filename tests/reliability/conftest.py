"""The reliability tests' plumbing: the figures plugin, and the capture every test is scanned on.

- The figures plugin's hooks are re-exported here (see ``figures.py`` for why it is a plugin).
- Capture: while a module of these tests runs, every log record is formatted by the production formatter
  (``shared.core.logs.CloudLoggingFormatter``, which masks) and kept, and every result message
  the code builds (``Outcome.to_message``: what is logged and what is published) is kept.
- After each test, what that test wrote is scanned for secrets: by shape, and by the exact
  values the test's worlds handed out (harvested from its fixtures: Secret Manager payloads,
  Dataloop keys and passwords and stored docker configs, registry passwords and keys). A
  leak fails the test that caused it.
- The test that scans the function logs of the whole run is moved to the very end.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from shared.core import redaction
from shared.core.logs import CloudLoggingFormatter
from shared.model.results import Outcome
from tests.reliability.figures import (  # noqa: F401  (pytest finds hooks by name in a conftest)
    pytest_runtest_makereport,
    pytest_runtest_setup,
    pytest_sessionfinish,
    pytest_terminal_summary,
    record,
)
from tests.reliability.leaks import CAPTURED, SecretScanner

LAST = "test_every_function_log_of_this_run_is_free_of_secrets"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the whole-run log scan last, after every other test (e2e and wire ones too) has logged."""
    last = [item for item in items if getattr(item, "originalname", item.name) == LAST]
    for item in last:
        items.remove(item)
    items.extend(last)


class _CaptureHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            CAPTURED.add(f"log {record.name}", self.format(record))
        except Exception:  # a capture must never break the code under test
            self.handleError(record)


@pytest.fixture(scope="module", autouse=True)
def _capture_what_the_system_writes() -> Iterator[None]:
    """Module-scoped, so that the other suites of a ``make test`` run are neither slowed nor
    affected (root logger level, a patched ``Outcome``) by this one's capture."""
    handler = _CaptureHandler(level=logging.DEBUG)
    handler.setFormatter(CloudLoggingFormatter())
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(min(previous_level, logging.INFO))
    original = Outcome.to_message

    def to_message(self: Outcome) -> dict[str, Any]:
        message = original(self)
        CAPTURED.add(f"result {self.kind}", json.dumps(message, default=str))
        return message

    patch = pytest.MonkeyPatch()
    patch.setattr(Outcome, "to_message", to_message)
    try:
        yield
    finally:
        patch.undo()
        root.removeHandler(handler)
        root.setLevel(previous_level)
        CAPTURED.clear()  # scanned test by test already; keep memory flat over a long run


# -- harvesting the secrets a test's worlds handed out ----------------------------------------------------


def harvest_secret_manager(scanner: SecretScanner, standin: Any) -> None:
    for secret in list(getattr(standin, "_secrets", {}).values()):
        for version in secret.versions.values():
            if version.payload:
                scanner.know_payload(version.payload)


def harvest_dataloop(scanner: SecretScanner, sandbox: Any) -> None:
    for name in ("admin_key", "member_key", "bot_password"):
        value = getattr(sandbox, name, None)
        if isinstance(value, str):
            scanner.know(value, f"Dataloop {name.replace('_', ' ')}")
    harvest_gateway(scanner, sandbox.gateway)


def harvest_gateway(scanner: SecretScanner, gateway: Any) -> None:
    for stored in gateway.stored_integrations():
        password = ((stored.get("options") or {}).get("spec") or {}).get("password")
        if isinstance(password, str):
            scanner.know(password, "docker config (base64) stored in Dataloop")
            try:
                config = json.loads(base64.b64decode(password))
            except ValueError:
                continue
            for auth in (config.get("auths") or {}).values():
                if isinstance(auth.get("password"), str):
                    scanner.know_payload(auth["password"])


def harvest(scanner: SecretScanner, fixtures: dict[str, Any]) -> None:
    """Everything secret the fixtures a test used could have handed to the code."""
    for value in list(getattr(getattr(redaction, "_registry", None), "_values", {})):
        scanner.know(value, "secret the code registered with the redactor")
    if "secretmanager" in fixtures:
        harvest_secret_manager(scanner, fixtures["secretmanager"].standin)
    for name in ("stack", "cloud"):
        world = fixtures.get(name)
        if world is not None:
            harvest_secret_manager(scanner, (world.sm if name == "stack" else world.secretmanager).standin)
            harvest_dataloop(scanner, world.dataloop)
    if "dataloop" in fixtures:
        harvest_dataloop(scanner, fixtures["dataloop"])
    if "local_registry" in fixtures:
        scanner.know(fixtures["local_registry"].admin_password, "registry admin password")
    if "registry_keys" in fixtures:
        for key in list(fixtures["registry_keys"]._pool._keys):
            scanner.know_key_file(key.json_text)
    cloud = fixtures.get("local_cloud")
    if cloud is not None:
        harvest_local_cloud(scanner, cloud)


def harvest_local_cloud(scanner: SecretScanner, cloud: Any) -> None:
    harvest_secret_manager(scanner, cloud.secret_manager)
    harvest_gateway(scanner, cloud.dataloop)
    scanner.know(cloud.seed.admin_api_key, "Dataloop API key (local cloud)")
    scanner.know(cloud.registry_admin[1], "registry admin password (local cloud)")


@pytest.fixture(autouse=True)
def _scan_what_this_test_wrote(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if anything it made the system write (logs, results) holds a secret."""
    mark = len(CAPTURED)
    yield
    written = dict.fromkeys(CAPTURED.since(mark))  # in order, each distinct line once
    if not written:
        return
    scanner = SecretScanner()
    harvest(scanner, getattr(request.node, "funcargs", {}))
    scanned, leaks = scanner.scan_all(written)
    record("hygiene: logs and results of these tests", inputs=scanned, leaks=len(leaks))
    assert not leaks, f"{len(leaks)} secret(s) in what this test made the system write: {[str(x) for x in leaks[:5]]}"
