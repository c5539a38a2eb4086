"""In-memory stand-ins at the ports (shared/ports.py), for workflow unit tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.adapters.dataloop.services import ServiceStatus
from shared.core.errors import Conflict, CredentialsRefused, ImageNotFound, PermanentError, RegistryUnavailable
from shared.model.images import ManifestRef, RegistryImage
from shared.model.integrations import ManagedIntegration
from shared.model.keys import RegistryCredential, ServiceAccountKey
from shared.model.record import SecretRecord
from shared.model.results import Outcome

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


class FakeLockSecrets:
    """Secret Manager's get/create/update of secrets as the adapter presents them, safe across threads.

    The etag check and the write happen under one lock, as they do atomically in the
    service, so two threads racing an update see exactly one of them win.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.secrets: dict[str, dict[str, Any]] = {}  # id -> {"labels", "annotations", "etag"}
        self.calls: list[tuple[str, str]] = []
        self._etags = 0

    def _etag(self) -> str:
        self._etags += 1
        return f'"e{self._etags}"'

    def _record(self, secret_id: str) -> SecretRecord:
        secret = self.secrets[secret_id]
        return SecretRecord(
            name=f"projects/proj/secrets/{secret_id}",
            labels=dict(secret["labels"]),
            annotations=dict(secret["annotations"]),
            etag=secret["etag"],
        )

    def annotations(self, secret_id: str) -> dict[str, str]:
        with self._lock:
            return dict(self.secrets[secret_id]["annotations"])

    def get_secret(self, secret_id: str) -> SecretRecord:
        with self._lock:
            self.calls.append(("get_secret", secret_id))
            if secret_id not in self.secrets:
                raise PermanentError(f"Secret Manager: secret {secret_id} not found", code="not-found")
            return self._record(secret_id)

    def create_secret(
        self, secret_id: str, *, labels: Mapping[str, str], annotations: Mapping[str, str], **_: Any
    ) -> SecretRecord:
        with self._lock:
            self.calls.append(("create_secret", secret_id))
            if secret_id in self.secrets:
                raise Conflict(f"Secret Manager: secret {secret_id} already exists", code="already-exists")
            self.secrets[secret_id] = {"labels": dict(labels), "annotations": dict(annotations), "etag": self._etag()}
            return self._record(secret_id)

    def update_secret(
        self, secret_id: str, *, etag: str | None, annotations: Mapping[str, str] | None = None, **_: Any
    ) -> SecretRecord:
        with self._lock:
            self.calls.append(("update_secret", secret_id))
            if secret_id not in self.secrets:
                raise PermanentError(f"Secret Manager: secret {secret_id} not found", code="not-found")
            secret = self.secrets[secret_id]
            if etag and etag != secret["etag"]:
                raise Conflict("Secret Manager: etag mismatch", code="etag-mismatch")
            if annotations is not None:
                secret["annotations"] = dict(annotations)
            secret["etag"] = self._etag()
            return self._record(secret_id)


@dataclass
class FakeServices:
    """Dataloop services (shared.adapters.dataloop.Services): a runner image and runtime status entries per service.

    A restart adds ``restart_entry`` (a replica that runs, unless told otherwise; None: the
    pull never ends), stamped now. ``hook(method, service_id)`` is called at the start of every call, to pause or
    observe a run at a chosen point.
    """

    images: dict[str, str] = field(default_factory=dict)
    runtime: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    restart_entry: dict[str, Any] | None = field(default_factory=lambda: {"status": True})
    set_calls: list[tuple[str, str]] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    hook: Callable[[str, str], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _enter(self, method: str, service_id: str) -> None:
        with self._lock:
            self.calls.append((method, service_id))
        if self.hook is not None:
            self.hook(method, service_id)

    def report(self, service_id: str, **entry: Any) -> None:
        """A replica reports, now."""
        with self._lock:
            self.runtime.setdefault(service_id, []).append({**entry, "createdAt": datetime.now(UTC).isoformat()})

    def get(self, service_id: str) -> dict[str, Any]:
        self._enter("get", service_id)
        with self._lock:
            return {"id": service_id, "runtime": {"runnerImage": self.images[service_id]}}

    def set_runner_image(self, service_id: str, image: str) -> dict[str, Any]:
        self._enter("set_runner_image", service_id)
        with self._lock:
            self.images[service_id] = image
            self.set_calls.append((service_id, image))
            return {"id": service_id, "runtime": {"runnerImage": image}}

    def restart(self, service_id: str) -> None:
        self._enter("restart", service_id)
        if self.restart_entry is not None:
            self.report(service_id, **self.restart_entry)

    def status(self, service_id: str) -> ServiceStatus:
        self._enter("status", service_id)
        with self._lock:
            entries = [dict(e) for e in self.runtime.get(service_id, [])]
        return ServiceStatus.from_json(service_id, {"runtimeStatus": entries})
