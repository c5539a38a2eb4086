"""In-memory Secret Manager, IAM, Dataloop and registry for the rotation's unit tests.

They follow the adapters' contracts (shared/workflows/rotation/ports.py): a stale etag is a
``Conflict``, reading a disabled version or an unknown secret a ``PermanentError`` with the
adapter's code, the 11th key a ``key-limit`` refusal. Every fake counts its calls and can be
told to fail the next call of a method (``fail_next``), which is how the tests simulate a
crash at each point of a rotation.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.core.errors import (
    Conflict,
    CredentialsRefused,
    ImageNotFound,
    PermanentError,
    RegistryUnavailable,
)
from shared.model.images import ManifestRef, RegistryImage
from shared.model.integrations import MANAGED_FILTER, MANAGED_LABEL, Annotation
from shared.model.keys import KeyInfo, RegistryCredential, ServiceAccountKey
from shared.model.record import SecretRecord

EMAIL = "puller@test-proj.iam.gserviceaccount.com"
HOST = "us-central1-docker.pkg.dev"
ORG = "org-1"
INTEGRATION_ID = "integration-1"
SECRET_ID = "dataloop-gar-team-a"
DIGEST = "sha256:" + "cd" * 32


class Clock:
    """A wall clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Faults:
    """Call counting and fault injection: ``fail_at(method, n, error)`` makes the n-th call of
    ``method`` from now raise ``error`` (once); ``fail_next`` is ``fail_at(method, 1, ...)``."""

    def __init__(self) -> None:
        self._scheduled: list[tuple[str, int, BaseException]] = []
        self.calls: list[str] = []

    def fail_at(self, method: str, nth: int, error: BaseException) -> None:
        self._scheduled.append((method, self.count(method) + nth, error))

    def fail_next(self, method: str, error: BaseException, times: int = 1) -> None:
        for n in range(1, times + 1):
            self.fail_at(method, n, error)

    def enter(self, method: str) -> None:
        self.calls.append(method)
        number = self.count(method)
        for item in self._scheduled:
            if item[0] == method and item[1] == number:
                self._scheduled.remove(item)
                raise item[2]

    def count(self, method: str) -> int:
        return self.calls.count(method)


def key_file(key_id: str, email: str = EMAIL) -> str:
    """A key file shaped like IAM's; the private key is fake but long enough to be masked."""
    body = base64.b64encode(secrets.token_bytes(96)).decode()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "proj",
            "private_key_id": key_id,
            "private_key": f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n",
            "client_email": email,
            "client_id": "1234567890",
        }
    )


# -- Secret Manager -------------------------------------------------------------------------------


@dataclass
class _Secret:
    labels: dict[str, str]
    annotations: dict[str, str]
    aliases: dict[str, int] = field(default_factory=dict)
    versions: dict[int, tuple[bytes, str]] = field(default_factory=dict)
    etag: str = field(default_factory=lambda: f'"{secrets.token_hex(6)}"')


WRITES = ("update_secret", "add_version", "set_version_state", "create_secret", "delete_secret")


class FakeSecrets(Faults):
    """Secret Manager as the adapter presents it."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[str, _Secret] = {}
        #: called with the secret id just before an update is checked (to race a writer in).
        self.before_update: Callable[[str], None] | None = None
        #: every secret id a call named, existing or not (a call on a name outside the
        #: deployment's grant would be refused on Google, so tests check none is made).
        self.named: list[str] = []

    @property
    def writes(self) -> int:
        return sum(self.count(m) for m in WRITES)

    # -- set-up ----------------------------------------------------------------------------
    def put(self, secret_id: str, annotations: dict[str, str], *, labels: dict[str, str] | None = None) -> None:
        self.secrets[secret_id] = _Secret(dict(labels if labels is not None else dict([MANAGED_LABEL])), annotations)

    def raw_add(self, secret_id: str, payload: str, alias: str | None = None) -> int:
        secret = self.secrets[secret_id]
        number = max(secret.versions, default=0) + 1
        secret.versions[number] = (payload.encode(), "ENABLED")
        if alias:
            secret.aliases[alias] = number
        return number

    def touch(self, secret_id: str, **annotations: str) -> None:
        """Another writer changes annotations (the etag changes)."""
        secret = self.secrets[secret_id]
        secret.annotations.update(annotations)
        secret.etag = f'"{secrets.token_hex(6)}"'

    def record(self, secret_id: str) -> SecretRecord:
        secret = self.secrets[secret_id]
        return SecretRecord(
            name=f"projects/proj/secrets/{secret_id}",
            labels=dict(secret.labels),
            annotations=dict(secret.annotations),
            version_aliases=dict(secret.aliases),
            etag=secret.etag,
        )

    def key_id_of(self, secret_id: str, version: int) -> str:
        return json.loads(self.secrets[secret_id].versions[version][0])["private_key_id"]

    def state_of(self, secret_id: str, version: int) -> str:
        return self.secrets[secret_id].versions[version][1]

    # -- the adapter's API -----------------------------------------------------------------
    def _secret(self, secret_id: str) -> _Secret:
        self.named.append(secret_id)
        if secret_id not in self.secrets:
            raise PermanentError(f"Secret Manager: secret {secret_id} not found", code="not-found")
        return self.secrets[secret_id]

    def list_secrets(self, filter: str = "") -> list[SecretRecord]:
        self.enter("list_secrets")
        assert filter in ("", MANAGED_FILTER)
        return [
            self.record(sid)
            for sid, s in self.secrets.items()
            if not filter or s.labels.get(MANAGED_LABEL[0]) == MANAGED_LABEL[1]
        ]

    def get_secret(self, secret_id: str) -> SecretRecord:
        self.enter("get_secret")
        self._secret(secret_id)
        return self.record(secret_id)

    def access(self, secret_id: str, version: str | int) -> tuple[int, bytes]:
        self.enter("access")
        secret = self._secret(secret_id)
        number = secret.aliases[version] if isinstance(version, str) else version
        payload, state = secret.versions[number]
        if state != "ENABLED":
            raise PermanentError(f"version {number} is {state}", code="failed-precondition")
        return number, payload

    def update_secret(
        self,
        secret_id: str,
        *,
        etag: str | None,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        version_aliases: dict[str, int] | None = None,
    ) -> SecretRecord:
        self.enter("update_secret")
        if self.before_update is not None:
            hook, self.before_update = self.before_update, None
            hook(secret_id)
        secret = self._secret(secret_id)
        if etag and etag != secret.etag:
            raise Conflict("Secret Manager: etag mismatch", code="etag-mismatch")
        if version_aliases is not None:
            assert all(v in secret.versions for v in version_aliases.values()), version_aliases
            secret.aliases = dict(version_aliases)
        if annotations is not None:
            secret.annotations = dict(annotations)
        if labels is not None:
            secret.labels = dict(labels)
        secret.etag = f'"{secrets.token_hex(6)}"'
        return self.record(secret_id)

    def add_version(self, secret_id: str, payload: bytes) -> int:
        self.enter("add_version")
        secret = self._secret(secret_id)
        number = max(secret.versions, default=0) + 1
        secret.versions[number] = (payload, "ENABLED")
        return number

    def list_versions(self, secret_id: str) -> dict[int, str]:
        self.enter("list_versions")
        return {n: state for n, (_, state) in self._secret(secret_id).versions.items()}

    def set_version_state(self, secret_id: str, version: int, state: str) -> None:
        self.enter("set_version_state")
        secret = self._secret(secret_id)
        if version not in secret.versions:
            raise PermanentError(f"version {version} of {secret_id} not found", code="not-found")
        payload, _ = secret.versions[version]
        secret.versions[version] = (
            payload,
            {"disable": "DISABLED", "enable": "ENABLED", "destroy": "DESTROYED"}[state],
        )


# -- IAM --------------------------------------------------------------------------------------------


@dataclass
class _Key:
    info: KeyInfo
    json_text: str
    deleted: bool = False


class FakeAccounts(Faults):
    """Service-account keys with IAM's 10-key limit, timestamped by a :class:`Clock`."""

    LIMIT = 10

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.keys: dict[str, _Key] = {}
        self._ids = (f"{n:040x}" for n in itertools.count(0xA000))
        self.creation_disabled = False

    def add(self, email: str = EMAIL, *, at: datetime | None = None) -> ServiceAccountKey:
        """A key created outside the rotation (by provisioning, or by a person)."""
        key_id = next(self._ids)
        text = key_file(key_id, email)
        moment = (at or self.clock()).replace(microsecond=0)
        self.keys[key_id] = _Key(
            KeyInfo(key_id, f"projects/proj/serviceAccounts/{email}/keys/{key_id}", moment, None, False), text
        )
        return ServiceAccountKey.from_json(text)

    def live(self, email: str = EMAIL) -> list[str]:
        return [k for k, v in self.keys.items() if not v.deleted and json.loads(v.json_text)["client_email"] == email]

    def create_key(self, email: str) -> ServiceAccountKey:
        self.enter("create_key")
        if self.creation_disabled:
            raise PermanentError("key creation disabled by org policy", code="key-creation-disabled")
        if len(self.live(email)) >= self.LIMIT:
            raise PermanentError("the account has 10 keys", code="key-limit")
        return self.add(email)

    def list_keys(self, email: str) -> list[KeyInfo]:
        self.enter("list_keys")
        return [self.keys[k].info for k in self.live(email)]

    def delete_key(self, email: str, key_id: str) -> bool:
        self.enter("delete_key")
        key = self.keys.get(key_id)
        if key is None or key.deleted:
            return False
        key.deleted = True
        return True


# -- Dataloop ---------------------------------------------------------------------------------------


def key_id_in_options(options: dict[str, Any], host: str = HOST) -> str:
    """Which key a Dataloop integration's options carry (decoded as a kubelet would)."""
    config = json.loads(base64.b64decode(options["spec"]["password"]))
    return json.loads(config["auths"][host]["password"])["private_key_id"]


class FakeIntegrations:
    def __init__(self, dataloop: FakeDataloop, org_id: str) -> None:
        self._dataloop = dataloop
        self.org_id = org_id

    def update_credentials(self, integration_id: str, options: dict[str, Any]) -> dict[str, str]:
        self._dataloop.enter("update_credentials")
        self._dataloop.updates.append((self.org_id, integration_id, key_id_in_options(options)))
        self._dataloop.holds[(self.org_id, integration_id)] = key_id_in_options(options)
        return {"id": integration_id}


class FakeDataloop(Faults):
    def __init__(self) -> None:
        super().__init__()
        self.updates: list[tuple[str, str, str]] = []
        self.holds: dict[tuple[str, str], str] = {}

    def integrations(self, org_id: str) -> FakeIntegrations:
        return FakeIntegrations(self, org_id)

    def held(self, org_id: str = ORG, integration_id: str = INTEGRATION_ID) -> str | None:
        return self.holds.get((org_id, integration_id))


# -- the registry -----------------------------------------------------------------------------------


class FakeRegistry(Faults):
    """Accepts live keys of :class:`FakeAccounts` once they have been tried ``delay_tries`` times."""

    def __init__(self, accounts: FakeAccounts) -> None:
        super().__init__()
        self.accounts = accounts
        self.delay_tries = 0
        self.never: set[str] = set()  # key ids that never work
        self.down = False
        self.images: dict[str, str] = {}  # str(image without digest) -> digest
        self.tries: dict[str, int] = {}
        self.forgotten = 0
        self.resolved: list[str] = []

    def resolve(self, image: RegistryImage, credential: RegistryCredential) -> ManifestRef:
        self.enter("resolve")
        self.resolved.append(str(image))
        if self.down:
            raise RegistryUnavailable("registry down")
        key_id = credential.key_id or ""
        self.tries[key_id] = self.tries.get(key_id, 0) + 1
        key = self.accounts.keys.get(key_id)
        if key is None or key.deleted or key_id in self.never or self.tries[key_id] <= self.delay_tries:
            raise CredentialsRefused(f"registry refused {credential.describe()}")
        digest = self.images.get(str(image))
        if digest is None:
            raise ImageNotFound(f"image {image} not found")
        return ManifestRef(digest, None)

    def forget(self, credential: RegistryCredential | None = None) -> None:
        self.forgotten += 1

    def check_host(self, host: str) -> None:
        """As the real client with no insecure hosts: GAR hosts only."""
        from shared.model.images import location_of

        if location_of(host) is None:
            raise PermanentError(
                f"registry host {host!r} is not an Artifact Registry host", code="registry-host-refused"
            )

    def challenge_for(self, host: str) -> str | None:
        """What a real client learns on its first try: the host's challenge (a realm on the host)."""
        return f'Bearer realm="https://{host}/v2/token",service="{host}"' if self.resolved else None


class Sleeper:
    """``sleep`` and ``monotonic`` for the probe: sleeping moves the monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


def integration_annotations(**overrides: str) -> dict[str, str]:
    notes = {
        Annotation.ORG: ORG,
        Annotation.INTEGRATION_ID: INTEGRATION_ID,
        Annotation.INTEGRATION_NAME: "team-a",
        Annotation.SERVICE_ACCOUNT: EMAIL,
        Annotation.REGISTRY_HOST: HOST,
        Annotation.REPOSITORIES: "proj/images",
    }
    notes.update(overrides)
    return notes


@dataclass
class FakePublisher:
    """A ``PublisherClient`` stand-in: records publishes, futures resolve (or fail) on ``result``."""

    fail_integrations: set[str] = field(default_factory=set)
    published: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    awaited: int = 0

    def publish(self, topic: str, data: bytes, **attributes: str) -> _Future:
        self.published.append((topic, data, attributes))
        error = RuntimeError("publish failed") if attributes.get("integration") in self.fail_integrations else None
        return _Future(self, error)

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(data) for _, data, _ in self.published]


@dataclass
class _Future:
    publisher: FakePublisher
    error: Exception | None

    def result(self, timeout: float | None = None) -> str:
        self.publisher.awaited += 1
        if self.error is not None:
            raise self.error
        return "message-id"
