"""In-memory stand-ins for the services behind shared/ports.py: one fake per service, for every unit test.

One fake per service, so that a workflow's tests and another's cannot drift apart on what
the service does. They follow the adapters' contracts: a stale etag is a ``Conflict``,
reading a disabled version or an unknown secret a ``PermanentError`` with the adapter's
code, the 11th key a ``key-limit`` refusal. The Secret Manager, IAM, Dataloop and registry
fakes count their calls and can be told to fail the n-th call of a method (:class:`Faults`),
which is how the rotation's tests simulate a crash at each point of a run.

Where the tests of one workflow need the service to behave in a way others do not (how
IAM names keys, whether the registry checks keys against the IAM fake), that is a
constructor option, so the choice is visible where the world is built.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.core.errors import Conflict, CredentialsRefused, ImageNotFound, PermanentError, RegistryUnavailable
from shared.model.dataloop import Integration, IntegrationNameTaken, ServiceStatus
from shared.model.images import ManifestRef, RegistryImage, RepositoryInfo, location_of
from shared.model.integrations import MANAGED_FILTER, MANAGED_LABEL, Annotation, ManagedIntegration
from shared.model.keys import KeyInfo, RegistryCredential, ServiceAccountKey
from shared.model.record import SecretRecord
from shared.model.results import Outcome

#: The integration the fakes' defaults describe.
EMAIL = "puller@test-proj.iam.gserviceaccount.com"
HOST = "us-central1-docker.pkg.dev"
ORG = "org-1"
INTEGRATION_ID = "integration-1"
SECRET_ID = "dataloop-gar-team-a"
DIGEST = "sha256:" + "ab" * 32


# -- shared by the fakes ---------------------------------------------------------------------------


class Clock:
    """A wall clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


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


def key_json(key_id: str = "k1", email: str = "puller@proj.iam.gserviceaccount.com") -> str:
    """A small key file with a fixed body, for tests that compare or parse it."""
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "proj",
            "private_key_id": key_id,
            "private_key": f"-----BEGIN PRIVATE KEY-----\nMIIfake{key_id}\n-----END PRIVATE KEY-----\n",
            "client_email": email,
        }
    )


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


def integration_annotations(**overrides: str) -> dict[str, str]:
    """A provisioned integration's record annotations (the defaults above), as provisioning writes them."""
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


def integration(name: str = "team-a", version: int = 1, **overrides: object) -> ManagedIntegration:
    values: dict[str, object] = {
        "name": name,
        "secret_id": f"dataloop-gar-{name}",
        "registry_host": HOST,
        "repositories": ("proj/images",),
        "version_aliases": {"current": version},
    }
    values.update(overrides)
    return ManagedIntegration(**values)  # type: ignore[arg-type]


# -- Secret Manager -------------------------------------------------------------------------------


@dataclass
class Version:
    payload: bytes
    state: str = "ENABLED"


@dataclass
class FakeSecret:
    labels: dict[str, str]
    annotations: dict[str, str]
    etag: int
    aliases: dict[str, int] = field(default_factory=dict)
    versions: dict[int, Version] = field(default_factory=dict)
    topics: tuple[str, ...] = ()
    period: int | None = None
    next_rotation: datetime | None = None


WRITES = ("update_secret", "add_version", "set_version_state", "create_secret", "delete_secret")
_STATES = {"disable": "DISABLED", "enable": "ENABLED", "destroy": "DESTROYED"}


class FakeSecrets(Faults):
    """Secret Manager as the adapter (shared.adapters.secrets.SecretManager) presents it, safe across threads.

    The etag check and the write happen under one lock, as they do atomically in the
    service, so two threads racing an update see exactly one of them win.
    """

    def __init__(self, project: str = "proj") -> None:
        super().__init__()
        self.project = project
        self.secrets: dict[str, FakeSecret] = {}
        #: every create and update, in order, with the fields it set (what the record said at each write).
        self.writes: list[tuple[str, dict[str, Any]]] = []
        #: called with the secret id just before an update is checked (to race a writer in).
        self.before_update: Callable[[str], None] | None = None
        #: every secret id a call named, existing or not (a call on a name outside the
        #: deployment's grant would be refused on Google, so tests check none is made).
        self.named: list[str] = []
        self._lock = threading.RLock()
        self._last_etag = 0

    def _new_etag(self, secret: FakeSecret | None = None) -> int:
        """Above every etag handed out and above ``secret``'s (which a test may have bumped by hand)."""
        self._last_etag = max(self._last_etag, secret.etag if secret else 0) + 1
        return self._last_etag

    @property
    def write_calls(self) -> int:
        """How many calls of any writing method were made (metadata or versions)."""
        return sum(self.count(m) for m in WRITES)

    # -- set-up and inspection -------------------------------------------------------------
    def put(self, secret_id: str, annotations: dict[str, str], *, labels: dict[str, str] | None = None) -> None:
        """A secret as provisioning left it (managed, unless ``labels`` say otherwise), with no versions."""
        labels = dict(labels if labels is not None else dict([MANAGED_LABEL]))
        self.secrets[secret_id] = FakeSecret(labels, annotations, self._new_etag())

    def raw_add(self, secret_id: str, payload: str, alias: str | None = None) -> int:
        secret = self.secrets[secret_id]
        number = max(secret.versions, default=0) + 1
        secret.versions[number] = Version(payload.encode())
        if alias:
            secret.aliases[alias] = number
        return number

    def touch(self, secret_id: str, **annotations: str) -> None:
        """Another writer changes annotations (the etag changes)."""
        with self._lock:
            secret = self.secrets[secret_id]
            secret.annotations.update(annotations)
            secret.etag = self._new_etag(secret)

    def annotations(self, secret_id: str) -> dict[str, str]:
        with self._lock:
            return dict(self.secrets[secret_id].annotations)

    def record(self, secret_id: str) -> SecretRecord:
        secret = self.secrets[secret_id]
        return SecretRecord(
            name=f"projects/{self.project}/secrets/{secret_id}",
            labels=dict(secret.labels),
            annotations=dict(secret.annotations),
            version_aliases=dict(secret.aliases),
            etag=f'"{secret.etag}"',
            topics=secret.topics,
            rotation_period_seconds=secret.period,
        )

    def key_id_of(self, secret_id: str, version: int) -> str:
        return json.loads(self.secrets[secret_id].versions[version].payload)["private_key_id"]

    def state_of(self, secret_id: str, version: int) -> str:
        return self.secrets[secret_id].versions[version].state

    # -- the adapter's API -----------------------------------------------------------------
    def _secret(self, secret_id: str) -> FakeSecret:
        self.named.append(secret_id)
        if secret_id not in self.secrets:
            raise PermanentError(f"Secret Manager: secret {secret_id} not found", code="not-found")
        return self.secrets[secret_id]

    def _version(self, secret_id: str, version: str | int) -> tuple[int, Version]:
        secret = self._secret(secret_id)
        number = secret.aliases.get(version) if isinstance(version, str) else version
        if number is None or number not in secret.versions:
            raise PermanentError(f"version {version} of {secret_id} not found", code="not-found")
        return number, secret.versions[number]

    def list_secrets(self, filter: str = "") -> list[SecretRecord]:
        with self._lock:
            self.enter("list_secrets")
            if filter.startswith("name:"):
                return [self.record(sid) for sid in self.secrets if filter[len("name:") :] in sid]
            assert filter in ("", MANAGED_FILTER), filter
            return [
                self.record(sid)
                for sid, s in self.secrets.items()
                if not filter or s.labels.get(MANAGED_LABEL[0]) == MANAGED_LABEL[1]
            ]

    def get_secret(self, secret_id: str) -> SecretRecord:
        with self._lock:
            self.enter("get_secret")
            self._secret(secret_id)
            return self.record(secret_id)

    def create_secret(
        self,
        secret_id: str,
        *,
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
        topics: tuple[str, ...] = (),
        rotation_period_seconds: int | None = None,
        next_rotation_time: datetime | None = None,
    ) -> SecretRecord:
        with self._lock:
            self.enter("create_secret")
            self.named.append(secret_id)
            if secret_id in self.secrets:
                raise Conflict(f"Secret Manager: secret {secret_id} already exists", code="already-exists")
            self.secrets[secret_id] = FakeSecret(
                dict(labels),
                dict(annotations),
                self._new_etag(),
                topics=tuple(topics),
                period=rotation_period_seconds,
                next_rotation=next_rotation_time,
            )
            self.writes.append((secret_id, {"labels": dict(labels), "annotations": dict(annotations)}))
            return self.record(secret_id)

    def update_secret(
        self,
        secret_id: str,
        *,
        etag: str | None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        version_aliases: Mapping[str, int] | None = None,
        rotation_period_seconds: int | None = None,
        next_rotation_time: datetime | None = None,
    ) -> SecretRecord:
        with self._lock:
            self.enter("update_secret")
            if self.before_update is not None:
                hook, self.before_update = self.before_update, None
                hook(secret_id)
            secret = self._secret(secret_id)
            if etag and etag != f'"{secret.etag}"':
                raise Conflict("Secret Manager: etag mismatch", code="etag-mismatch")
            if version_aliases is not None:
                assert all(v in secret.versions for v in version_aliases.values()), version_aliases
                secret.aliases = dict(version_aliases)
            if annotations is not None:
                secret.annotations = dict(annotations)
            if labels is not None:
                secret.labels = dict(labels)
            if rotation_period_seconds is not None:
                secret.period = rotation_period_seconds
            if next_rotation_time is not None:
                secret.next_rotation = next_rotation_time
            secret.etag = self._new_etag(secret)
            fields = {
                "labels": labels,
                "annotations": annotations,
                "version_aliases": version_aliases,
                "rotation_period_seconds": rotation_period_seconds,
                "next_rotation_time": next_rotation_time,
            }
            self.writes.append((secret_id, {k: v for k, v in fields.items() if v is not None}))
            return self.record(secret_id)

    def delete_secret(self, secret_id: str) -> bool:
        with self._lock:
            self.enter("delete_secret")
            self.named.append(secret_id)
            return self.secrets.pop(secret_id, None) is not None

    def add_version(self, secret_id: str, payload: bytes) -> int:
        with self._lock:
            self.enter("add_version")
            secret = self._secret(secret_id)
            number = max(secret.versions, default=0) + 1
            secret.versions[number] = Version(payload)
            return number

    def access(self, secret_id: str, version: str | int) -> tuple[int, bytes]:
        with self._lock:
            self.enter("access")
            number, found = self._version(secret_id, version)
            if found.state != "ENABLED":
                raise PermanentError(f"version {number} is {found.state}", code="failed-precondition")
            return number, found.payload

    def list_versions(self, secret_id: str) -> dict[int, str]:
        with self._lock:
            self.enter("list_versions")
            return {n: v.state for n, v in self._secret(secret_id).versions.items()}

    def set_version_state(self, secret_id: str, version: int, state: str) -> None:
        with self._lock:
            self.enter("set_version_state")
            _, found = self._version(secret_id, version)
            found.state = _STATES[state]
            if state == "destroy":
                found.payload = b""


# -- IAM --------------------------------------------------------------------------------------------


@dataclass
class FakeKey:
    info: KeyInfo
    json_text: str
    email: str


def iam_key_id(n: int) -> str:
    """The n-th key's id, 40 hex digits as IAM's are."""
    return f"{0xA000 + n - 1:040x}"


class FakeAccounts(Faults):
    """Service accounts and their keys, with IAM's 10-key limit; keys are stamped by ``clock``.

    ``key_id`` names the n-th key made (1-based): IAM's 40 hex digits unless told otherwise,
    so a test can name keys it has not seen yet (``key_id="key-{}".format``).
    """

    LIMIT = 10

    def __init__(
        self, clock: Callable[[], datetime] | None = None, *, key_id: Callable[[int], str] = iam_key_id
    ) -> None:
        super().__init__()
        self.clock = clock or Clock()
        self.accounts: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, FakeKey] = {}  # deleted keys are removed
        self.created = 0
        self.creation_disabled = False
        #: The key-expiry org policy: keys made from now on stop working this long after creation.
        self.key_lifetime: timedelta | None = None
        self._key_id = key_id

    # -- set-up and inspection -------------------------------------------------------------
    def add(self, email: str = EMAIL, *, at: datetime | None = None) -> ServiceAccountKey:
        """A key created outside the workflow under test (by provisioning, or by a person)."""
        self.created += 1
        key_id = self._key_id(self.created)
        text = key_file(key_id, email)
        moment = (at or self.clock()).replace(microsecond=0)
        valid_before = moment + self.key_lifetime if self.key_lifetime is not None else None
        self.keys[key_id] = FakeKey(
            KeyInfo(key_id, f"projects/proj/serviceAccounts/{email}/keys/{key_id}", moment, valid_before, False),
            text,
            email,
        )
        return dataclasses.replace(ServiceAccountKey.from_json(text), valid_before=valid_before)

    def live(self, email: str = EMAIL) -> list[str]:
        return [k for k, v in self.keys.items() if v.email == email]

    # -- the adapter's API -----------------------------------------------------------------
    def ensure_account(
        self, project: str, account_id: str, display_name: str = "", description: str = ""
    ) -> tuple[str, bool]:
        self.enter("ensure_account")
        email = f"{account_id}@{project}.iam.gserviceaccount.com"
        if email in self.accounts:
            return email, False
        self.accounts[email] = {
            "email": email,
            "display_name": display_name,
            "description": description,
            "disabled": False,
        }
        return email, True

    def get_account(self, email: str) -> dict[str, Any] | None:
        self.enter("get_account")
        return self.accounts.get(email)

    def delete_account(self, email: str) -> bool:
        self.enter("delete_account")
        return self.accounts.pop(email, None) is not None

    def create_key(self, email: str) -> ServiceAccountKey:
        self.enter("create_key")
        if self.creation_disabled:
            raise PermanentError("constraints/iam.disableServiceAccountKeyCreation", code="key-creation-disabled")
        if len(self.live(email)) >= self.LIMIT:
            raise PermanentError("the account has 10 keys", code="key-limit")
        return self.add(email)

    def list_keys(self, email: str) -> list[KeyInfo]:
        self.enter("list_keys")
        return [self.keys[k].info for k in self.live(email)]

    def delete_key(self, email: str, key_id: str) -> bool:
        self.enter("delete_key")
        return self.keys.pop(key_id, None) is not None


# -- Artifact Registry ------------------------------------------------------------------------------


class FakeRepositories:
    """Docker repositories of one project and location, and who may read each."""

    def __init__(self, *names: str, project: str = "proj", location: str = "us-central1") -> None:
        self.readers: dict[str, set[str]] = {
            f"projects/{project}/locations/{location}/repositories/{n}": set() for n in names
        }

    def get_repository(self, path: str) -> RepositoryInfo:
        if path not in self.readers:
            raise PermanentError(f"{path}: repository not found", code="repository-not-found")
        return RepositoryInfo(name=path, format="DOCKER", mode="STANDARD_REPOSITORY", description="")

    def grant_reader(self, path: str, member: str) -> bool:
        self.get_repository(path)
        changed = member not in self.readers[path]
        self.readers[path].add(member)
        return changed

    def revoke_reader(self, path: str, member: str) -> bool:
        self.get_repository(path)
        changed = member in self.readers[path]
        self.readers[path].discard(member)
        return changed


# -- the registry v2 API ----------------------------------------------------------------------------


def challenge_of(host: str) -> str:
    """The challenge :class:`FakeRegistry` answers with, as GAR does: a realm on its own host."""
    return f'Bearer realm="https://{host}/v2/token",service="{host}"'


class FakeRegistry(Faults):
    """Answers like a registry: ``images`` maps (host, name) to {tag: digest}.

    Which keys it accepts: with ``accounts``, the live keys of that :class:`FakeAccounts`
    once each has been tried more than ``delay_tries`` times (IAM's propagation delay) and
    is not in ``never``; without, the key ids in ``valid_keys``.
    """

    def __init__(
        self,
        accounts: FakeAccounts | None = None,
        *,
        images: dict[tuple[str, str], dict[str, str]] | None = None,
        valid_keys: set[str] | None = None,
        down: bool = False,
    ) -> None:
        super().__init__()
        self.accounts = accounts
        self.images: dict[tuple[str, str], dict[str, str]] = images if images is not None else {}
        self.valid_keys: set[str] = valid_keys if valid_keys is not None else set()
        self.down = down
        self.delay_tries = 0
        self.never: set[str] = set()
        self.tries: dict[str, int] = {}
        #: (image, username) of every resolve, in order
        self.resolved: list[tuple[str, str]] = []
        self.forgotten = 0
        #: host -> the challenge the client has learnt from the host (after any answer)
        self.learnt: dict[str, str] = {}
        #: host -> the recorded challenges it was handed as hints, in order
        self.hints: dict[str, list[str]] = {}
        #: digest -> the Content-Type the registry answers for it (None, as when a registry sends none)
        self.media_types: dict[str, str] = {}

    def _accepts(self, key_id: str) -> bool:
        if self.accounts is None:
            return key_id in self.valid_keys
        self.tries[key_id] = self.tries.get(key_id, 0) + 1
        return key_id in self.accounts.keys and key_id not in self.never and self.tries[key_id] > self.delay_tries

    def resolve(self, image: RegistryImage, credential: RegistryCredential) -> ManifestRef:
        self.enter("resolve")
        self.resolved.append((str(image), credential.username))
        if self.down:
            raise RegistryUnavailable("registry down")
        self.learnt[image.host] = challenge_of(image.host)
        if not self._accepts(credential.key_id or ""):
            raise CredentialsRefused(f"registry refused {credential.describe()}")
        tags = self.images.get((image.host, image.name))
        if tags is None:
            raise ImageNotFound(f"image {image} not found")
        if image.digest:
            if image.digest not in tags.values():
                raise ImageNotFound(f"image {image} not found")
            return ManifestRef(image.digest, self.media_types.get(image.digest))
        if image.tag not in tags:
            raise ImageNotFound(f"image {image} not found")
        return ManifestRef(tags[image.tag], self.media_types.get(tags[image.tag]))

    def challenge_for(self, host: str) -> str | None:
        return self.learnt.get(host)

    def expect_challenge(self, host: str, header: str) -> bool:
        self.hints.setdefault(host, []).append(header)
        return host not in self.learnt

    def forget(self, credential: RegistryCredential | None = None) -> None:
        self.forgotten += 1

    def check_host(self, host: str) -> None:
        """As the real client with no insecure hosts: GAR hosts only."""
        if location_of(host) is None:
            raise PermanentError(
                f"registry host {host!r} is not an Artifact Registry host", code="registry-host-refused"
            )


# -- Dataloop ---------------------------------------------------------------------------------------


def key_id_in_options(options: Mapping[str, Any], host: str = HOST) -> str:
    """Which key a Dataloop integration's options carry (decoded as a kubelet would)."""
    config = json.loads(base64.b64decode(options["spec"]["password"]))
    return json.loads(config["auths"][host]["password"])["private_key_id"]


class FakeDataloop(Faults):
    """Dataloop's registry integrations (shared.adapters.dataloop.DataloopClient and its Integrations).

    ``integrations(org)`` returns the fake itself, bound to ``org``: the workflows use one
    organization at a time, and a test can then replace one method on the object the
    workflow will call.
    """

    def __init__(self) -> None:
        super().__init__()
        self.org: str | None = None
        self.stored: dict[str, dict[str, Any]] = {}  # id -> {"org", "name", "options"}
        self.ensured: list[str] = []  # every write: Dataloop's PATCH reloads the services pulling with it
        self.updates: list[tuple[str, str, str]] = []  # (org, integration id, key id) of credential updates
        self.holds: dict[tuple[str, str], str] = {}  # (org, integration id) -> the key id it pulls with

    def integrations(self, org_id: str) -> FakeDataloop:
        self.org = org_id
        return self

    def held(self, org_id: str = ORG, integration_id: str = INTEGRATION_ID) -> str | None:
        return self.holds.get((org_id, integration_id))

    def _integration(self, integration_id: str, name: str) -> Integration:
        return Integration(integration_id, name, "private-registry", org=self.org)

    def ensure(
        self, name: str, options: Mapping[str, Any], *, owned_id: str | None = None, adopt: bool = False
    ) -> Integration:
        self.enter("ensure")
        found = self.find_by_name(name)
        if found is not None and found.id != owned_id and not adopt:
            raise IntegrationNameTaken(f"an integration named {name} exists")
        self.ensured.append(name)
        integration_id = found.id if found else f"dl-{len(self.stored) + 1}"
        self.stored[integration_id] = {"org": self.org, "name": name, "options": dict(options)}
        return self._integration(integration_id, name)

    def find_by_name(self, name: str) -> Integration | None:
        return next((self._integration(i, s["name"]) for i, s in self.stored.items() if s["name"] == name), None)

    def delete(self, integration_id: str) -> bool:
        self.enter("delete")
        return self.stored.pop(integration_id, None) is not None

    def update_credentials(self, integration_id: str, options: Mapping[str, Any]) -> dict[str, str]:
        self.enter("update_credentials")
        assert self.org is not None, "integrations(org) first"
        key_id = key_id_in_options(options)
        self.updates.append((self.org, integration_id, key_id))
        self.holds[(self.org, integration_id)] = key_id
        if integration_id in self.stored:
            self.stored[integration_id]["options"] = dict(options)
        return {"id": integration_id}


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


# -- the managed secrets read as integrations (shared.adapters.catalog) -------------------------------


@dataclass
class FakeDirectory:
    integrations: list[ManagedIntegration] = field(default_factory=list)
    refreshes: int = 0
    after_refresh: list[ManagedIntegration] | None = None
    remembered: list[SecretRecord] = field(default_factory=list)

    def covering(self, image: RegistryImage) -> list[ManagedIntegration]:
        return [i for i in self.integrations if i.covers(image)]

    def refresh(self) -> None:
        self.refreshes += 1
        if self.after_refresh is not None:
            self.integrations = self.after_refresh

    def remember(self, record: SecretRecord) -> None:
        self.remembered.append(record)
        self.integrations = [
            ManagedIntegration.from_secret(record) if i.secret_id == record.secret_id else i for i in self.integrations
        ]


@dataclass
class FakeKeys:
    """secret_id -> {version: key json}."""

    versions: dict[str, dict[int, str]] = field(default_factory=dict)
    reads: int = 0

    def key(self, integration: ManagedIntegration, alias: str = "current") -> ServiceAccountKey:
        self.reads += 1
        version = integration.version_aliases[alias]
        return ServiceAccountKey.from_json(self.versions[integration.secret_id][version])


# -- Pub/Sub ----------------------------------------------------------------------------------------


@dataclass
class FakeSink:
    outcomes: list[Outcome] = field(default_factory=list)

    messages: list[Mapping[str, Any]] = field(default_factory=list)

    def publish(self, outcome: Outcome, message: Mapping[str, Any] | None = None) -> None:
        self.outcomes.append(outcome)
        self.messages.append(message if message is not None else outcome.to_message())


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
