"""Does a new key pull from the registry yet? The one check every new key passes before Dataloop relies on it.

Rotation's *test* step and provisioning's first test both ask it. A new service-account key is refused by GAR's token endpoint for 60 s or more while IAM
propagates it (docs/external-apis.md §3.4), and Dataloop must never be handed a key that does not work.
So the key is tried exactly as a kubelet presents it (``_json_key`` Basic auth to the
token endpoint, then ``HEAD`` a manifest) until it works, with backoff, up to a deadline
that keeps the function inside its 540 s timeout.

What is resolved: the image the caller names (provisioning's test image), else the
integration's ``canary-image`` annotation when it names an image, else a probe name (``dataloop-gar-key-probe``) in the integration's first repository.
Either proves the key: the registry only answers a manifest request (200, or 404 for a
name it does not hold) after the token endpoint accepted the key and issued a token the
registry honours for ``repository:PROJECT/REPO/NAME:pull``; a key that is not (yet) valid
or lacks the reader role is refused with 401/403 before any manifest is looked up. One
repository suffices: the key authenticates the same account everywhere, and the
account's grants do not change with its keys.

Eventual consistency can accept a key at one front end and refuse it at the next, so a
key must pass ``confirmations`` times in a row before it counts as working.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.core.errors import (
    CredentialsRefused,
    DigestMismatch,
    ImageNotFound,
    PermanentError,
    RegistryUnavailable,
    RejectedMessage,
)
from shared.model.images import RegistryImage
from shared.model.integrations import ManagedIntegration
from shared.model.keys import RegistryCredential, ServiceAccountKey
from shared.ports import ProbeRegistry

PROBE_IMAGE = "dataloop-gar-key-probe"
PROBE_TAG = "latest"


@dataclass(frozen=True)
class ProbeResult:
    """How the key fared. ``unavailable`` means the registry never answered: nothing was learnt."""

    passed: bool
    attempts: int
    reason: str
    code: str | None = None
    unavailable: bool = False
    #: The registry's challenge, learnt while proving the key: recorded on the integration.
    challenge: str | None = None


def probe_target(integration: ManagedIntegration) -> tuple[RegistryImage, str]:
    """The image to resolve and a word on why it was chosen."""
    if integration.canary_image:
        try:
            image = RegistryImage.parse(integration.canary_image)
        except RejectedMessage:
            pass
        else:
            if image.host == integration.registry_host:
                return image, "canary image"
    project, _, repository = integration.repositories[0].partition("/")
    return RegistryImage(integration.registry_host, project, repository, PROBE_IMAGE, PROBE_TAG), "probe name"


class KeyProbe:
    """Tries a key against the registry until it works or the deadline passes.

    Args:
        registry: resolves manifests; its token cache is dropped for the key before each try.
        initial_backoff / max_backoff: seconds between refused tries, doubling.
        confirmations: consecutive passes required.
        confirm_interval: seconds between confirming tries.
        sleep / monotonic: injectable for tests.
    """

    def __init__(
        self,
        registry: ProbeRegistry,
        *,
        initial_backoff: float = 2.0,
        max_backoff: float = 20.0,
        confirmations: int = 2,
        confirm_interval: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.confirmations = max(1, confirmations)
        self.confirm_interval = confirm_interval
        self._sleep = sleep
        self._monotonic = monotonic

    def check_target(self, integration: ManagedIntegration) -> None:
        """Raise PermanentError when the key could never be tested at the integration's host
        (one the registry client refuses to send credentials to): then no key is made."""
        self._registry.check_host(probe_target(integration)[0].host)

    def deadline_in(self, seconds: float) -> float:
        """The deadline ``seconds`` from now, on the clock :meth:`prove` reads."""
        return self._monotonic() + seconds

    def prove(
        self,
        key: ServiceAccountKey,
        integration: ManagedIntegration,
        *,
        deadline: float,
        image: RegistryImage | None = None,
    ) -> ProbeResult:
        """Try ``key`` until it passes ``confirmations`` times in a row, or ``deadline`` (monotonic) passes.

        ``image``, when given, is resolved instead of the integration's probe target; that
        it is missing still proves the key (the token endpoint accepted it). A permanent
        answer that is not about the credentials (an unexpected registry error) ends the
        probe at once as a failure: the key could not be proven.
        """
        image, why = (image, "image") if image is not None else probe_target(integration)
        credential = RegistryCredential.from_key_file(key.json_text)
        attempts = passes = 0
        backoff = self.initial_backoff
        last: PermanentError | RegistryUnavailable | None = None
        while True:
            attempts += 1
            self._registry.forget(credential)
            try:
                self._registry.resolve(image, credential)
                ok, note = True, f"resolved {why} {image}"
            except (ImageNotFound, DigestMismatch):
                ok, note = True, f"token accepted for {why} {image} (the registry does not hold that manifest)"
            except (CredentialsRefused, RegistryUnavailable) as exc:
                ok, last = False, exc
            except PermanentError as exc:
                return ProbeResult(False, attempts, f"the registry answered unexpectedly: {exc.reason}", exc.code)
            if ok:
                passes += 1
                if passes >= self.confirmations:
                    return self._passed(image, attempts, f"key {key.key_id} works: {note}")
                wait = self.confirm_interval
            else:
                passes = 0
                wait = backoff
                backoff = min(backoff * 2, self.max_backoff)
            if self._monotonic() + wait > deadline:
                break
            self._sleep(wait)
        if passes:
            # Out of time while confirming: the last answer was a pass, and no refusal since.
            return self._passed(image, attempts, f"key {key.key_id} works: {note} (confirmed {passes} time(s))")
        assert last is not None
        return ProbeResult(
            False,
            attempts,
            f"key {key.key_id} did not work after {attempts} tries: {last.reason}",
            last.code,
            unavailable=isinstance(last, RegistryUnavailable),
        )

    def _passed(self, image: RegistryImage, attempts: int, reason: str) -> ProbeResult:
        return ProbeResult(True, attempts, reason, challenge=self._registry.challenge_for(image.host))
