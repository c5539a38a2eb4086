"""What happens when Artifact Registry says an image was pushed (the ``on_push`` workflow).

INSERT with a digest is tested by digest; INSERT with only a tag is resolved by tag;
DELETE is recorded and nothing else; signature/attestation tags are skipped; an image no
managed integration covers is acknowledged as uncovered. Every path ends in one Outcome.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from shared.core.config import DEFAULT_SKIP_TAG_PATTERNS, REFERRERS_TAG_PATTERNS
from shared.model.events import PubSubMessage
from shared.model.images import GarNotification, RegistryImage
from shared.model.integrations import ManagedIntegration
from shared.model.push_verdict import PushVerdict
from shared.model.record import CURRENT
from shared.model.results import Outcome, Status
from shared.ports import IntegrationDirectory, KeySource
from shared.workflows.reference_test import ReferenceTest, Verdict

if TYPE_CHECKING:  # the platform tier is imported only where a canary is configured
    from shared.workflows.canary import CanaryTest
    from shared.workflows.last_push import LastPush

KIND = "reference-test"


class PushTester:
    """Turns one GAR notification into one reference-test outcome."""

    def __init__(
        self,
        directory: IntegrationDirectory,
        keys: KeySource,
        reference_test: ReferenceTest,
        *,
        skip_tag_patterns: Sequence[str] = DEFAULT_SKIP_TAG_PATTERNS,
        canary: Callable[[], CanaryTest] | None = None,
        last_push: LastPush | None = None,
    ) -> None:
        """``last_push`` records each integration's verdict when it changes (None: not recorded)."""
        self._directory = directory
        self._last_push = last_push
        self._keys = keys
        self._test = reference_test
        self._skip = tuple(skip_tag_patterns)
        self._canary = canary  # built on first use: no Dataloop client unless a canary is configured

    def handle(self, message: PubSubMessage) -> Outcome:
        """Decide and test.

        Raises:
            RejectedMessage: the notification is malformed.
            TransientError: Secret Manager or the registry is unavailable; redeliver.
        """
        started = time.perf_counter()
        notification = GarNotification.from_json(message.json())
        image = notification.image
        subject: dict[str, Any] = {"image": str(image), "action": notification.action}

        if not notification.is_insert:
            return Outcome(KIND, Status.IGNORED, f"{image} was deleted; nothing to test", subject=subject)
        skipped_by = next((p for p in self._skip if image.tag and fnmatch.fnmatchcase(image.tag, p)), None)
        if skipped_by is not None:
            what = (
                "an OCI referrers tag" if skipped_by in REFERRERS_TAG_PATTERNS else "a signature/attestation artifact"
            )
            return Outcome(
                KIND,
                Status.SKIPPED,
                f"tag {image.tag!r} is {what}, not a runnable image (SKIP_TAG_PATTERNS)",
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

        tiers = {i.name: self._test_tiers(i, image) for i in integrations}
        verdicts = {name: _overall(found) for name, found in tiers.items()}
        if self._last_push is not None:
            tested_at = self._last_push.now()
            for integration in integrations:
                verdict = verdicts[integration.name]
                self._last_push.note(
                    integration, PushVerdict(verdict.passed, verdict.code, str(image), tested_at, verdict.reason)
                )
        failed = {name: v for name, v in verdicts.items() if not v.passed}
        subject["integrations"] = sorted(verdicts)
        details = {name: _details(found) for name, found in tiers.items()}
        for integration in integrations:
            registry = tiers[integration.name][0]
            if len(tiers[integration.name]) == 1 and registry.passed and self._has_canary(integration):
                details[integration.name]["platform"] = {"ran": False, "reason": _NOT_THE_PUSHED_IMAGE}
        durations = {f"{name}.{v.tier}": v.duration_ms for name, found in tiers.items() for v in found}
        durations["total"] = (time.perf_counter() - started) * 1000
        if failed:
            first = next(iter(failed.values()))
            reason = "; ".join(f"{name}: {v.reason}" for name, v in failed.items())
            return Outcome(
                KIND, Status.FAILED, reason, code=first.code, subject=subject, details=details, durations_ms=durations
            )
        reason = "; ".join(f"{name}: {v.reason}" for name, v in verdicts.items())
        return Outcome(KIND, Status.PASSED, reason, subject=subject, details=details, durations_ms=durations)

    def _has_canary(self, integration: ManagedIntegration) -> bool:
        return bool(integration.canary_service) and self._canary is not None

    def _test_tiers(self, integration: ManagedIntegration, image: RegistryImage) -> list[Verdict]:
        """Registry tier always; the platform tier too when it passed, a canary is configured, and
        the notification names what was pushed (:func:`_stands_for_the_push`)."""
        verdict = self._test_one(integration, image)
        service, canary = integration.canary_service, self._canary
        if not verdict.passed or not service or canary is None or not _stands_for_the_push(image, verdict):
            return [verdict]
        pinned = image.with_digest(verdict.digest) if verdict.digest else image
        reference = f"{pinned.host}/{pinned.name}@{pinned.digest}" if pinned.digest else str(pinned)
        return [verdict, canary().run(service, reference)]

    def _test_one(self, integration: ManagedIntegration, image: RegistryImage) -> Verdict:
        verdict = self._test.registry_tier(image, self._keys.key(integration), challenge=integration.registry_challenge)
        if verdict.passed or verdict.code != "credentials-refused":
            return verdict
        # The catalog may be up to a TTL old: after a rotation, ``current`` may have moved to
        # a new key while the old one is already gone. Look again before crying wolf.
        self._directory.refresh()
        fresh = next((i for i in self._directory.covering(image) if i.secret_id == integration.secret_id), None)
        if fresh is None or fresh.version_aliases.get(CURRENT) == integration.version_aliases.get(CURRENT):
            return verdict
        return self._test.registry_tier(image, self._keys.key(fresh), challenge=fresh.registry_challenge)


_NOT_THE_PUSHED_IMAGE = (
    "not run: an untagged single-platform manifest, as a multi-platform push notifies for each platform "
    "(and attestations are pushed); the platform tier runs for the tagged push or the index"
)


def _stands_for_the_push(image: RegistryImage, registry: Verdict) -> bool:
    """Whether a notification names what someone pushed, worth one platform-tier run.

    A multi-platform push may notify once per platform manifest, by digest alone, and then
    for the index with its tag (docs/external-apis.md §1.1). Pointing the canary at each
    child would run it once per platform for one push, so the platform tier runs for a
    notification with a tag, or for an index pushed without one; an untagged single-platform
    manifest gets the registry tier only. Which kind it is comes from the registry tier's
    HEAD, so deciding costs no call. Notifications arrive in any order (§6.3), and a child
    usually before its index (a registry may refuse an index whose children it lacks), so the
    rule looks at nothing but the notification itself.
    """
    return image.tag is not None or registry.is_index


def _overall(verdicts: list[Verdict]) -> Verdict:
    """The first failing tier, or the last tier when all passed."""
    return next((v for v in verdicts if not v.passed), verdicts[-1])


def _details(verdicts: list[Verdict]) -> dict[str, object]:
    registry = verdicts[0]
    details: dict[str, object] = {
        "passed": all(v.passed for v in verdicts),
        "tier": registry.tier,
        "reason": registry.reason,
        "code": registry.code,
        "digest": registry.digest,
        "key_id": registry.key_id,
    }
    for extra in verdicts[1:]:
        details[extra.tier] = {"ran": True, "passed": extra.passed, "reason": extra.reason, "code": extra.code}
    return details
