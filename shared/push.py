"""What happens when Artifact Registry says an image was pushed (the ``on_push`` workflow).

INSERT with a digest is tested by digest; INSERT with only a tag is resolved by tag;
DELETE is recorded and nothing else; signature/attestation tags are skipped; an image no
managed integration covers is acknowledged as uncovered. Every path ends in one Outcome.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Sequence

from shared.events import PubSubMessage
from shared.images import GarNotification
from shared.integrations import ManagedIntegration
from shared.ports import IntegrationDirectory, KeySource
from shared.reference_test import ReferenceTest, Verdict
from shared.results import Outcome, Status

KIND = "reference-test"


class PushTester:
    """Turns one GAR notification into one reference-test outcome."""

    def __init__(
        self,
        directory: IntegrationDirectory,
        keys: KeySource,
        reference_test: ReferenceTest,
        *,
        skip_tag_patterns: Sequence[str] = ("*.sig", "*.att", "*.sbom"),
    ) -> None:
        self._directory = directory
        self._keys = keys
        self._test = reference_test
        self._skip = tuple(skip_tag_patterns)

    def handle(self, message: PubSubMessage) -> Outcome:
        """Decide and test.

        Raises:
            RejectedMessage: the notification is malformed.
            TransientError: Secret Manager or the registry is unavailable; redeliver.
        """
        started = time.perf_counter()
        notification = GarNotification.from_json(message.json())
        image = notification.image
        subject = {"image": str(image), "action": notification.action}

        if not notification.is_insert:
            return Outcome(KIND, Status.IGNORED, f"{image} was deleted; nothing to test", subject=subject)
        if image.tag and any(fnmatch.fnmatchcase(image.tag, p) for p in self._skip):
            return Outcome(
                KIND,
                Status.SKIPPED,
                f"tag {image.tag!r} is a signature/attestation artifact (SKIP_TAG_PATTERNS)",
                subject=subject,
            )

        integrations = self._directory.covering(image)
        if not integrations:
            return Outcome(
                KIND,
                Status.UNCOVERED,
                f"no managed integration covers {image.host}/{image.repository_scope}",
                subject=subject,
            )

        verdicts = {i.name: self._test_one(i, image) for i in integrations}
        failed = {name: v for name, v in verdicts.items() if not v.passed}
        subject["integrations"] = sorted(verdicts)
        details = {
            name: {
                "passed": v.passed,
                "tier": v.tier,
                "reason": v.reason,
                "code": v.code,
                "digest": v.digest,
                "key_id": v.key_id,
            }
            for name, v in verdicts.items()
        }
        durations = {f"{name}.{v.tier}": v.duration_ms for name, v in verdicts.items()}
        durations["total"] = (time.perf_counter() - started) * 1000
        if failed:
            first = next(iter(failed.values()))
            reason = "; ".join(f"{name}: {v.reason}" for name, v in failed.items())
            return Outcome(
                KIND, Status.FAILED, reason, code=first.code, subject=subject, details=details, durations_ms=durations
            )
        reason = "; ".join(f"{name}: {v.reason}" for name, v in verdicts.items())
        return Outcome(KIND, Status.PASSED, reason, subject=subject, details=details, durations_ms=durations)

    def _test_one(self, integration: ManagedIntegration, image) -> Verdict:  # type: ignore[no-untyped-def]
        verdict = self._test.registry_tier(image, self._keys.key(integration))
        if verdict.passed or verdict.code != "credentials-refused":
            return verdict
        # The catalog may be up to a TTL old: after a rotation, ``current`` may have moved to
        # a new key while the old one is already gone. Look again before crying wolf.
        self._directory.refresh()
        fresh = next((i for i in self._directory.covering(image) if i.secret_id == integration.secret_id), None)
        if fresh is None or fresh.version_aliases.get("current") == integration.version_aliases.get("current"):
            return verdict
        return self._test.registry_tier(image, self._keys.key(fresh))
