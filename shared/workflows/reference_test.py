"""The reference test: can the credentials Dataloop holds really pull this image?

Registry tier (docs/external-apis.md §2.2, §2.3): with the integration's ``current`` key, exactly as Dataloop
presents it (``_json_key`` Basic auth to the registry's token endpoint), take a pull token
and HEAD the manifest. Passing means 200 and, when asked by digest, the same digest.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, replace

from shared.core.errors import CredentialsRefused, DigestMismatch, ImageNotFound, PermanentError
from shared.model.images import RegistryImage
from shared.model.keys import RegistryCredential, ServiceAccountKey
from shared.ports import ManifestResolver


@dataclass(frozen=True)
class Verdict:
    """The result of one tier of the reference test."""

    tier: str
    passed: bool
    reason: str
    code: str | None = None
    digest: str | None = None
    key_id: str | None = None
    duration_ms: float = 0.0
    #: The registry's ``WWW-Authenticate`` challenge, once known: recorded on the integration
    #: (``registry-challenge``) so that a cold instance can skip asking for it.
    challenge: str | None = None
    #: Whether the manifest is a multi-platform index (from the same HEAD): a push notifies each
    #: platform's manifest too, and only the index stands for what was pushed.
    is_index: bool = False


class ReferenceTest:
    """Runs the tiers of the reference test against one image with one key."""

    def __init__(self, registry: ManifestResolver) -> None:
        self._registry = registry

    def registry_tier(self, image: RegistryImage, key: ServiceAccountKey, *, challenge: str | None = None) -> Verdict:
        """Pull-check ``image`` with ``key``, starting from a recorded ``challenge`` when there is one.

        Returns a failing verdict for permanent failures (credentials refused, image
        missing, digest mismatch).

        Raises:
            TransientError: the registry could not be reached; worth redelivering.
        """
        started = time.perf_counter()
        credential = _credential(key)
        if challenge:
            self._registry.expect_challenge(image.host, challenge)
        try:
            ref = self._registry.resolve(image, credential)
        except (CredentialsRefused, ImageNotFound, DigestMismatch) as exc:
            return self._verdict(False, exc.reason, started, key, code=exc.code)
        except PermanentError as exc:
            return self._verdict(False, exc.reason, started, key, code=exc.code)
        how = "by digest" if image.digest else f"tag {image.tag} resolved to {ref.digest}"
        verdict = self._verdict(True, f"{key.client_email} can pull {image} ({how})", started, key, digest=ref.digest)
        return replace(verdict, challenge=self._registry.challenge_for(image.host), is_index=ref.is_index)

    @staticmethod
    def _verdict(
        passed: bool,
        reason: str,
        started: float,
        key: ServiceAccountKey,
        *,
        code: str | None = None,
        digest: str | None = None,
    ) -> Verdict:
        return Verdict(
            tier="registry",
            passed=passed,
            reason=reason,
            code=code,
            digest=digest,
            key_id=key.key_id,
            duration_ms=(time.perf_counter() - started) * 1000,
        )


@functools.lru_cache(maxsize=64)
def _credential(key: ServiceAccountKey) -> RegistryCredential:
    """The key as Dataloop presents it; kept per key, since keys are read once per version."""
    return RegistryCredential.from_key_file(key.json_text)
