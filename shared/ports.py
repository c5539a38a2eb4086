"""The small interfaces workflows depend on, so that they never import a client library.

Adapters (Secret Manager, the registry client, Pub/Sub, Dataloop) implement these;
unit tests implement them with in-memory fakes (tests/unit/fakes.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from shared.model.record import CURRENT

if TYPE_CHECKING:
    from shared.model.images import ManifestRef, RegistryImage
    from shared.model.integrations import ManagedIntegration
    from shared.model.keys import RegistryCredential, ServiceAccountKey
    from shared.model.results import Outcome


class ManifestResolver(Protocol):
    def resolve(self, image: RegistryImage, credential: RegistryCredential) -> ManifestRef:
        """HEAD the manifest with a pull token; raise CredentialsRefused/ImageNotFound/DigestMismatch/RegistryUnavailable."""

    def challenge_for(self, host: str) -> str | None:
        """The ``WWW-Authenticate`` challenge ``host`` answered with, once it has (worth recording)."""

    def expect_challenge(self, host: str, header: str) -> bool:
        """Take a recorded challenge as a hint for a host not heard from yet (it may be ignored)."""


class IntegrationDirectory(Protocol):
    def covering(self, image: RegistryImage) -> Sequence[ManagedIntegration]:
        """The managed integrations whose registry host and repositories cover ``image``."""

    def refresh(self) -> None:
        """Forget any cached view, so the next lookup reads the source again."""


class KeySource(Protocol):
    def key(self, integration: ManagedIntegration, alias: str = CURRENT) -> ServiceAccountKey:
        """The key file an integration's secret holds under ``alias``."""


class ResultSink(Protocol):
    def publish(self, outcome: Outcome, message: Mapping[str, Any] | None = None) -> None:
        """Deliver one outcome to whoever watches results; raise TransientError if it could not.

        ``message`` is ``outcome.to_message()`` when the caller has already built it.
        """
