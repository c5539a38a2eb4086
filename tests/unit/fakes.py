"""In-memory stand-ins at the ports (shared/ports.py), for workflow unit tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.errors import CredentialsRefused, ImageNotFound, RegistryUnavailable
from shared.images import RegistryImage
from shared.integrations import ManagedIntegration
from shared.keys import ServiceAccountKey
from shared.registry import ManifestRef, RegistryCredential
from shared.results import Outcome

DIGEST = "sha256:" + "ab" * 32


def key_json(key_id: str = "k1", email: str = "puller@proj.iam.gserviceaccount.com") -> str:
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "proj",
            "private_key_id": key_id,
            "private_key": f"-----BEGIN PRIVATE KEY-----\nMIIfake{key_id}\n-----END PRIVATE KEY-----\n",
            "client_email": email,
        }
    )


def challenge_of(host: str) -> str:
    """The challenge :class:`FakeRegistry` answers with, as GAR does: a realm on its own host."""
    return f'Bearer realm="https://{host}/v2/token",service="{host}"'


@dataclass
class FakeRegistry:
    """Answers like a registry: images by (host, name) -> {tag: digest}; valid key ids."""

    images: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    valid_keys: set[str] = field(default_factory=set)
    down: bool = False
    calls: list[tuple[str, str]] = field(default_factory=list)
    #: host -> the challenge the client has learnt from the host (after any authenticated answer)
    learnt: dict[str, str] = field(default_factory=dict)
    #: host -> the recorded challenges it was handed as hints, in order
    hints: dict[str, list[str]] = field(default_factory=dict)

    def challenge_for(self, host: str) -> str | None:
        return self.learnt.get(host)

    def expect_challenge(self, host: str, header: str) -> bool:
        self.hints.setdefault(host, []).append(header)
        return host not in self.learnt

    def resolve(self, image: RegistryImage, credential: RegistryCredential) -> ManifestRef:
        self.calls.append((str(image), credential.username))
        if self.down:
            raise RegistryUnavailable("registry down")
        self.learnt[image.host] = challenge_of(image.host)
        if json.loads(credential.password)["private_key_id"] not in self.valid_keys:
            raise CredentialsRefused("registry refused the credentials")
        tags = self.images.get((image.host, image.name))
        if tags is None:
            raise ImageNotFound(f"image {image} not found")
        if image.digest:
            if image.digest not in tags.values():
                raise ImageNotFound(f"image {image} not found")
            return ManifestRef(image.digest, None)
        if image.tag not in tags:
            raise ImageNotFound(f"image {image} not found")
        return ManifestRef(tags[image.tag], None)


@dataclass
class FakeDirectory:
    integrations: list[ManagedIntegration] = field(default_factory=list)
    refreshes: int = 0
    after_refresh: list[ManagedIntegration] | None = None

    def covering(self, image: RegistryImage) -> list[ManagedIntegration]:
        return [i for i in self.integrations if i.covers(image)]

    def refresh(self) -> None:
        self.refreshes += 1
        if self.after_refresh is not None:
            self.integrations = self.after_refresh


@dataclass
class FakeKeys:
    """secret_id -> {version: key json}."""

    versions: dict[str, dict[int, str]] = field(default_factory=dict)
    reads: int = 0

    def key(self, integration: ManagedIntegration, alias: str = "current") -> ServiceAccountKey:
        self.reads += 1
        version = integration.version_aliases[alias]
        return ServiceAccountKey.from_json(self.versions[integration.secret_id][version])


@dataclass
class FakeSink:
    outcomes: list[Outcome] = field(default_factory=list)

    messages: list[Mapping[str, Any]] = field(default_factory=list)

    def publish(self, outcome: Outcome, message: Mapping[str, Any] | None = None) -> None:
        self.outcomes.append(outcome)
        self.messages.append(message if message is not None else outcome.to_message())


def integration(name: str = "team-a", version: int = 1, **overrides: object) -> ManagedIntegration:
    values: dict[str, object] = {
        "name": name,
        "secret_id": f"dataloop-gar-{name}",
        "registry_host": "us-central1-docker.pkg.dev",
        "repositories": ("proj/images",),
        "version_aliases": {"current": version},
    }
    values.update(overrides)
    return ManagedIntegration(**values)  # type: ignore[arg-type]
