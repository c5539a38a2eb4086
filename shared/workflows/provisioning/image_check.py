"""``test``: can an integration's current key pull this image right now?

With a name, that integration is tested; without, every active integration covering the
image is (the same choice the on-push test makes). The key is only ever sent to the
integration's own registry host: an image on another host, or in a repository the
integration does not cover, is refused rather than tried.
"""

from __future__ import annotations

from typing import Any

from shared.core.errors import PermanentError
from shared.model.integrations import MANAGED_FILTER, SECRET_PREFIX, ManagedIntegration
from shared.model.keys import ServiceAccountKey
from shared.model.record import CURRENT
from shared.model.request import ImageTestRequest
from shared.model.results import Outcome, Status
from shared.ports import SecretStore
from shared.workflows.provisioning.last_test import record_test, summary
from shared.workflows.provisioning.records import is_active, read_record, records_integration
from shared.workflows.provisioning.steps import Steps
from shared.workflows.reference_test import ReferenceTest
from shared.workflows.stored_keys import read_key


class ImageCheck:
    """Answers ``test`` requests."""

    def __init__(self, secrets: SecretStore, reference_test: ReferenceTest) -> None:
        self._secrets = secrets
        self._reference_test = reference_test

    def test(self, request: ImageTestRequest) -> Outcome:
        steps = Steps(request.action, request.name, request.request_id)
        image = request.image
        facts: dict[str, Any] = {"image": str(image)}
        with steps.step("find"):
            integrations = self._named(request.name) if request.name else self._covering(request)
        if request.name and not integrations:
            return steps.outcome(
                Status.FAILED,
                f"no active integration named {request.name}",
                code="integration-not-found",
                details=facts,
            )
        covering = [i for i in integrations if i.covers(image)]
        if not covering:
            what = f"integration {request.name}" if request.name else "no active integration"
            return steps.outcome(
                Status.FAILED,
                f"{what} does not cover {image.host}/{image.repository_scope}",
                code="uncovered",
                details=facts,
            )
        results: dict[str, Any] = {}
        for integration in covering:
            with steps.step(integration.name):
                key = self._current_key(integration)
                verdict = self._reference_test.registry_tier(image, key)  # what is true now: no waiting
                results[integration.name] = summary(image, verdict, 1)
                record_test(
                    self._secrets, integration.secret_id, results[integration.name], challenge=verdict.challenge
                )
        facts["integrations"] = results
        failed = {name: r for name, r in results.items() if not r["passed"]}
        if failed:
            return steps.outcome(
                Status.FAILED,
                "; ".join(f"{name}: {r['reason']}" for name, r in failed.items()),
                code=next(iter(failed.values()))["code"],
                details=facts,
            )
        return steps.outcome(
            Status.OK, "; ".join(f"{name}: {r['reason']}" for name, r in results.items()), details=facts
        )

    def _named(self, name: str) -> list[ManagedIntegration]:
        record = read_record(self._secrets, SECRET_PREFIX + name)
        if record is None or not records_integration(record, name) or not is_active(record):
            return []
        return [ManagedIntegration.from_secret(record)]

    def _covering(self, request: ImageTestRequest) -> list[ManagedIntegration]:
        found = []
        for record in self._secrets.list_secrets(MANAGED_FILTER):
            try:
                found.append(ManagedIntegration.from_secret(record))
            except PermanentError:
                continue  # malformed records are reported by the catalog; they cover nothing
        return [i for i in found if i.covers(request.image)]

    def _current_key(self, integration: ManagedIntegration) -> ServiceAccountKey:
        version = integration.version_aliases.get(CURRENT)
        if version is None:
            raise PermanentError(
                f"integration {integration.name} has no current key; re-send its provision request",
                code="no-current-key",
            )
        return read_key(self._secrets, integration.secret_id, version)
