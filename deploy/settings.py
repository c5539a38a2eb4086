"""The deployment's settings: one small TOML file, checked whole before anything runs.

A deployment that fails half way through on a typo costs minutes and leaves half-made
resources, so every value is checked up front and every problem is reported at once
(like ``shared.core.config`` does for a function's environment). The environment each
function will receive is validated with the functions' own ``shared.core.config.load_settings``,
so a value the functions would refuse at cold start is refused here instead.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from shared.core.config import Settings, load_settings
from shared.core.errors import ConfigError
from shared.model.integrations import SECRET_PREFIX
from shared.model.policy import (
    ADOPTABLE_ACCOUNT,
    CREATED_ACCOUNT_PREFIX,
    DEFAULT_CREATED_ACCOUNT_PREFIX,
    ORG_ID,
    AccessPolicy,
)
from shared.model.request import SERVICE_ID

#: Labels every resource the deployment creates (topics, functions, the credentials secret),
#: so that teardown can tell what it made from what it found. Deliberately not the
#: ``managed-by`` label of managed integrations: the catalog lists secrets by that one.
DEPLOYED_BY_LABEL = ("deployed-by", "dataloop-gar")

PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
REGION = re.compile(r"[a-z]+-[a-z]+[0-9]+")
PREFIX = re.compile(r"[a-z][a-z0-9-]*[a-z0-9]")
ACCOUNT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
TOPIC_ID = re.compile(r"[A-Za-z][A-Za-z0-9._~%+-]{2,254}")
SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
#: A user-managed service account; its project is part of its address.
ACCOUNT_EMAIL = re.compile(
    r"[a-z][a-z0-9-]{4,28}[a-z0-9]@(?P<project>[a-z][a-z0-9-]{4,28}[a-z0-9])\.iam\.gserviceaccount\.com"
)
REPOSITORY = re.compile(
    r"projects/(?P<project>[a-z][a-z0-9-]{4,28}[a-z0-9])/locations/(?P<location>[a-z0-9-]+)"
    r"/repositories/(?P<repository>[a-z][a-z0-9-]*[a-z0-9])"
)
#: Who may publish requests: an IAM principal (a Google group, user, service account or domain).
REQUESTER = re.compile(r"(?:user|group|serviceAccount):[^\s@,=]+@[^\s@,=]+|domain:[a-z0-9.-]+")
#: ``LOCATION/REPOSITORY`` (in the deployment's project) or the full resource name.
REPOSITORY_REFERENCE = re.compile(rf"{REPOSITORY.pattern}|[a-z0-9-]+/[a-z][a-z0-9-]*[a-z0-9]")
#: A notification channel's address for alerts.
EMAIL = re.compile(r"[^\s@,=\"']+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
#: An existing Cloud Monitoring notification channel: its full name, or its id in the deployment's project.
CHANNEL = re.compile(r"projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/notificationChannels/[0-9]+|[0-9]+")
MEMORY = re.compile(r"[1-9][0-9]*(Mi|Gi|M|G)")
#: vCPUs per instance: "1", "2", "0.5", ".5", "2.0", or millicpus, "500m" (gcloud's --cpu forms).
CPU = re.compile(r"(?P<cpus>[0-9]+(?:\.[0-9]+)?|\.[0-9]+)|(?P<millis>[1-9][0-9]*)m")
CRON_FIELD = re.compile(r"[0-9A-Za-z*/,-]+")

#: Bounded waits inside a function must finish well before the platform kills it.
TIMEOUT_MARGIN_SECONDS = 60
#: Gen2 event-driven functions may run at most this long.
EVENT_FUNCTION_MAX_TIMEOUT = 540
#: Events one instance may serve at once (gcloud's --concurrency bounds).
MAX_CONCURRENCY = 1000
#: vCPUs per instance (Cloud Run): 0.08 to 8, in steps of 0.001 below 1, whole numbers above.
MIN_CPU, MAX_CPU = Decimal("0.08"), Decimal(8)

#: Variables the deployment sets itself, from the settings above; not overridable in [env].
DEPLOY_OWNED_ENV = frozenset(
    {"GCP_PROJECT", "GOOGLE_CLOUD_PROJECT", "RESULTS_TOPIC", "ROTATION_TOPIC"}
    | {"DATALOOP_BASE_URL", "DATALOOP_CREDENTIALS_SECRET"}
    | {"THREADS"}  # functions-framework's threads per instance: from [functions.<key>] concurrency
    | {"ACCESS_POLICY"}  # from [access]
)
#: Variables that only make sense against the local cloud's stand-ins.
LOCAL_ONLY_ENV = frozenset(
    {"SECRET_MANAGER_ENDPOINT", "IAM_ENDPOINT", "ARTIFACT_REGISTRY_ENDPOINT", "REGISTRY_INSECURE_HOSTS"}
    | {"PUBSUB_EMULATOR_HOST", "ALLOW_LOOPBACK_REGISTRIES"}
)


class SettingsError(ValueError):
    """The settings file is wrong; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid deployment settings:\n" + "\n".join(f"  - {p}" for p in self.problems))


@dataclass(frozen=True)
class FunctionSpec:
    """One Cloud Function of this project: what is fixed by the code, not by settings."""

    key: str
    entry_point: str
    trigger: str  # attribute of Topics
    summary: str
    #: Events one instance serves at once, as the code is built and benchmarked for: the
    #: default of the ``concurrency`` setting.
    concurrency: int = 1

    @property
    def source(self) -> str:
        return f"functions/{self.key}"


FUNCTIONS: tuple[FunctionSpec, ...] = (
    # Shared clients, token caches and group-committed publishes: 8 events per instance.
    FunctionSpec("on_push", "on_push", "gcr", "reference test after every image push", concurrency=8),
    FunctionSpec("requests", "on_request", "requests", "provision / deprovision / rotate / test / status requests"),
    FunctionSpec("rotate", "rotate", "rotation", "scheduled sweep and Secret Manager SECRET_ROTATE"),
)


@dataclass(frozen=True)
class Repository:
    """An Artifact Registry repository provisioning may grant read access on."""

    project: str
    location: str
    repository: str

    @property
    def path(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/repositories/{self.repository}"


@dataclass(frozen=True)
class Topics:
    gcr: str = "gcr"
    requests: str = "dataloop-gar-requests"
    rotation: str = "dataloop-gar-rotation"
    results: str = "dataloop-gar-results"
    dead_letter: str = "dataloop-gar-dead-letter"

    def all(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def default_cpu(concurrency: int) -> str:
    """More than one event per instance needs at least 1 vCPU; otherwise memory decides."""
    return "1" if concurrency > 1 else ""


@dataclass(frozen=True)
class FunctionSettings:
    memory: str = "256Mi"
    timeout_seconds: int = EVENT_FUNCTION_MAX_TIMEOUT
    max_instances: int = 10
    #: Events one instance serves at once (``--concurrency``; also functions-framework's THREADS).
    concurrency: int = 1
    #: vCPUs per instance (``--cpu``), as gcloud takes them; empty: derived from memory (no flag).
    cpu: str = ""

    @classmethod
    def defaults(cls, spec: FunctionSpec) -> FunctionSettings:
        return cls(concurrency=spec.concurrency, cpu=default_cpu(spec.concurrency))


@dataclass(frozen=True)
class DeploySettings:
    """Everything the plan needs; names of derived resources are computed here, once."""

    project: str
    region: str
    prefix: str = "dataloop-gar"
    project_number: str | None = None
    dataloop_org_id: str = ""
    dataloop_base_url: str = "https://gate.dataloop.ai/api/v1"
    dataloop_credentials_secret: str = "dataloop-api-credentials"
    topics: Topics = field(default_factory=Topics)
    rotation_schedule: str = "17 * * * *"
    time_zone: str = "Etc/UTC"
    max_delivery_attempts: int = 10
    account_projects: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()  # exact emails or *@PROJECT.iam.gserviceaccount.com
    repositories: tuple[Repository, ...] = ()
    dataloop_org_ids: tuple[str, ...] = ()
    requesters: tuple[str, ...] = ()
    created_account_prefix: str = DEFAULT_CREATED_ACCOUNT_PREFIX
    canary_services: tuple[str, ...] = ()
    functions: Mapping[str, FunctionSettings] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    build_service_account: str | None = None
    #: Alert notifications: addresses deploy makes email channels for, and channels that exist already.
    notification_emails: tuple[str, ...] = ()
    notification_channels: tuple[str, ...] = ()

    # -- derived names ----------------------------------------------------------------------
    def function_name(self, key: str) -> str:
        return f"{self.prefix}-{key.replace('_', '-')}"

    def account_id(self, key: str) -> str:
        return f"{self.prefix}-{key.replace('_', '-')}"

    def account_email(self, key: str) -> str:
        return f"{self.account_id(key)}@{self.project}.iam.gserviceaccount.com"

    @property
    def trigger_account_key(self) -> str:
        return "trigger"

    @property
    def scheduler_job(self) -> str:
        return f"{self.prefix}-sweep"

    @property
    def dead_letter_subscription(self) -> str:
        return f"{self.topics.dead_letter}-sub"

    @property
    def gcr_projects(self) -> tuple[str, ...]:
        """Projects whose ``gcr`` topic deploy delivers to ``on_push``: its own, and every repository's.

        Artifact Registry notifies only the ``gcr`` topic of the repository's own project
        (docs/external-apis.md §1.1), so a repository in another project is tested only if
        that project's topic is wired too; the access policy names these projects, so that
        provisioning refuses a repository anywhere else.
        """
        return tuple(dict.fromkeys([self.project, *(r.project for r in self.repositories)]))

    @property
    def other_gcr_projects(self) -> tuple[str, ...]:
        """Repository projects other than the deployment's: wired by a push subscription each."""
        return tuple(p for p in self.gcr_projects if p != self.project)

    def gcr_subscription(self, project: str) -> str:
        """The push subscription (in the deployment's project) that brings ``project``'s pushes to on_push."""
        return f"{self.function_name('on_push')}-{project}"

    @property
    def exact_service_accounts(self) -> tuple[str, ...]:
        return tuple(a for a in self.service_accounts if not a.startswith("*@"))

    @property
    def key_admin_projects(self) -> tuple[str, ...]:
        """Projects where key administration is project-wide: where accounts are created at run time,
        and where every account may be adopted (``*@PROJECT…``)."""
        patterns = (ADOPTABLE_ACCOUNT.fullmatch(a) for a in self.service_accounts if a.startswith("*@"))
        return tuple(dict.fromkeys([*self.account_projects, *(m["project"] for m in patterns if m)]))

    def deployment_accounts(self) -> tuple[str, ...]:
        """The deployment's own accounts: never adopted, keyed or deleted by the functions."""
        own = [self.account_email(spec.key) for spec in FUNCTIONS] + [self.account_email(self.trigger_account_key)]
        if self.build_service_account:
            own.append(self.build_service_account)
        return tuple(own)

    def access_policy(self) -> AccessPolicy:
        """What requests may target, as the functions enforce it (``ACCESS_POLICY``)."""
        return AccessPolicy(
            org_ids=frozenset(self.dataloop_org_ids),
            repositories=frozenset(r.path for r in self.repositories),
            account_projects=frozenset(self.account_projects),
            service_accounts=self.service_accounts,
            created_account_prefix=self.created_account_prefix,
            deployment_accounts=frozenset(self.deployment_accounts()),
            canary_services=frozenset(self.canary_services),
            gcr_projects=frozenset(self.gcr_projects),
        )

    def channel_path(self, channel: str) -> str:
        """An existing channel's full name (an id alone is in the deployment's project)."""
        return channel if channel.startswith("projects/") else f"projects/{self.project}/notificationChannels/{channel}"

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    def function(self, key: str) -> FunctionSettings:
        if key in self.functions:
            return self.functions[key]
        return FunctionSettings.defaults(next(spec for spec in FUNCTIONS if spec.key == key))

    def function_env(self, key: str) -> dict[str, str]:
        """The environment of function ``key``: what the deployment owns, then [env], then THREADS.

        A function that serves several events at once gets ``THREADS`` = its concurrency:
        functions-framework's gunicorn runs that many threads (by default 4 per CPU it sees,
        which on 1 vCPU may be fewer than the events Cloud Run sends it).
        """
        env = {
            "GCP_PROJECT": self.project,
            "RESULTS_TOPIC": self.topics.results,
            "ROTATION_TOPIC": self.topics.rotation,
            "DATALOOP_BASE_URL": self.dataloop_base_url,
            "DATALOOP_CREDENTIALS_SECRET": self.dataloop_credentials_secret,
            "ACCESS_POLICY": self.access_policy().to_json(),
        }
        env.update(self.env)
        concurrency = self.function(key).concurrency
        if concurrency > 1:
            env["THREADS"] = str(concurrency)
        return env


# -- loading --------------------------------------------------------------------------------------

_SECTIONS: dict[str, set[str]] = {
    "": {"project", "region", "prefix", "project_number", "build_service_account"}
    | {"dataloop", "topics", "rotation", "delivery", "access", "functions", "env", "monitoring"},
    "dataloop": {"org_id", "base_url", "credentials_secret"},
    "topics": {f.name for f in dataclasses.fields(Topics)},
    "rotation": {"schedule", "time_zone"},
    "delivery": {"max_delivery_attempts"},
    "access": {
        "account_projects",
        "service_accounts",
        "repositories",
        "dataloop_org_ids",
        "requesters",
        "created_account_prefix",
        "canary_services",
    },
    "monitoring": {"notification_emails", "notification_channels"},
    "functions": {spec.key for spec in FUNCTIONS},
    "function": {"memory", "timeout_seconds", "max_instances", "concurrency", "cpu"},
}


def overridable_env() -> frozenset[str]:
    """The shared.core.config variables a deployment may set in [env]."""
    names = {f.name.upper() for f in dataclasses.fields(Settings)} - {"PROJECT"}
    return frozenset(names - DEPLOY_OWNED_ENV - LOCAL_ONLY_ENV)


def load(path: Path, **overrides: str | None) -> DeploySettings:
    """Read and check the settings file; command-line ``overrides`` win over the file.

    Raises:
        SettingsError: listing every problem at once.
        OSError: the file cannot be read.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError([f"{path}: not valid TOML: {exc}"]) from None
    for key, value in overrides.items():
        if value is not None:
            data[key] = value
    return parse(data)


def parse(data: Mapping[str, Any]) -> DeploySettings:
    """Build :class:`DeploySettings` from parsed TOML; see :func:`load`."""
    problems: list[str] = []
    reader = _Reader(problems)

    reader.unknown("", data)
    project = reader.text(data, "project", PROJECT_ID, required=True)
    region = reader.text(data, "region", REGION, required=True)
    prefix = reader.text(data, "prefix", PREFIX, default="dataloop-gar")
    number = data.get("project_number")
    project_number = None
    if number is not None:
        project_number = str(number)
        if not project_number.isdigit():
            problems.append(f"project_number: must be digits, got {number!r}")
    build_account = reader.text(data, "build_service_account", ACCOUNT_EMAIL, default="") or None

    dataloop = reader.table(data, "dataloop")
    org_id = reader.text(dataloop, "org_id", None, default="", where="dataloop.")
    base_url = reader.text(dataloop, "base_url", None, default=DeploySettings.dataloop_base_url, where="dataloop.")
    credentials = reader.text(
        dataloop, "credentials_secret", SECRET_ID, default=DeploySettings.dataloop_credentials_secret, where="dataloop."
    )
    if credentials.startswith(SECRET_PREFIX):
        problems.append(
            f"dataloop.credentials_secret: must not start with {SECRET_PREFIX!r}: the functions hold admin rights on "
            "every secret with that prefix (they are the managed integrations)"
        )

    topics_table = reader.table(data, "topics")
    topics = Topics(
        **{
            name: reader.text(topics_table, name, TOPIC_ID, default=default, where="topics.")
            for name, default in Topics().all().items()
        }
    )
    names = list(topics.all().values())
    if len(set(names)) != len(names):
        problems.append(f"topics: every topic must be different, got {names}")
    if any(name.startswith("goog") for name in names):
        problems.append("topics: a topic id may not start with 'goog'")

    rotation = reader.table(data, "rotation")
    schedule = reader.text(rotation, "schedule", None, default=DeploySettings.rotation_schedule, where="rotation.")
    fields = schedule.split()
    if len(fields) != 5 or not all(CRON_FIELD.fullmatch(f) for f in fields):
        problems.append(f"rotation.schedule: must be a five-field cron expression, got {schedule!r}")
    time_zone = reader.text(rotation, "time_zone", None, default=DeploySettings.time_zone, where="rotation.")

    delivery = reader.table(data, "delivery")
    attempts = reader.integer(delivery, "max_delivery_attempts", 5, 100, default=10, where="delivery.")

    access = reader.table(data, "access")
    # Absent means "the deployment's own project", where provisioning creates accounts by
    # default; an explicit empty list allows existing accounts only.
    account_projects = (
        reader.texts(access, "account_projects", PROJECT_ID, where="access.")
        if "account_projects" in access
        else (project,)
    )
    service_accounts = reader.texts(access, "service_accounts", ADOPTABLE_ACCOUNT, where="access.")
    # Absent: the one org of [dataloop], when it is set.
    org_ids = (
        reader.texts(access, "dataloop_org_ids", ORG_ID, where="access.")
        if "dataloop_org_ids" in access
        else ((org_id,) if org_id else ())
    )
    requesters = reader.texts(access, "requesters", REQUESTER, where="access.")
    canary_services = reader.texts(access, "canary_services", SERVICE_ID, where="access.")
    created_prefix = reader.text(
        access,
        "created_account_prefix",
        CREATED_ACCOUNT_PREFIX,
        default=DEFAULT_CREATED_ACCOUNT_PREFIX,
        where="access.",
    )
    repositories = tuple(
        _repository(text, project)
        for text in reader.texts(access, "repositories", REPOSITORY_REFERENCE, where="access.")
        if REPOSITORY_REFERENCE.fullmatch(text)
    )

    functions_table = reader.table(data, "functions")
    functions: dict[str, FunctionSettings] = {}
    for spec in FUNCTIONS:
        table = reader.table(functions_table, spec.key, where="functions.", section="function")
        where = f"functions.{spec.key}."
        memory = reader.text(table, "memory", MEMORY, default="256Mi", where=where)
        timeout = reader.integer(
            table, "timeout_seconds", 1, EVENT_FUNCTION_MAX_TIMEOUT, default=EVENT_FUNCTION_MAX_TIMEOUT, where=where
        )
        max_instances = reader.integer(table, "max_instances", 1, 1000, default=10, where=where)
        concurrency = reader.integer(table, "concurrency", 1, MAX_CONCURRENCY, default=spec.concurrency, where=where)
        cpu = reader.cpu(table, "cpu", default=default_cpu(concurrency), where=where)
        # Cloud Run sends an instance more than one request at a time only if it has 1 or more vCPUs.
        if concurrency > 1 and cpu == "":
            problems.append(
                f"{where}cpu: empty (derived from memory) with {where}concurrency = {concurrency}: more than one "
                'event per instance needs 1 or more vCPUs; set them (cpu = "1" or more), or concurrency = 1'
            )
        elif concurrency > 1 and cpu and _vcpus(cpu) < 1:
            problems.append(
                f"{where}cpu: {cpu!r} vCPU is too little for {where}concurrency = {concurrency}: more than one "
                'event per instance needs 1 or more vCPUs (set cpu = "1" or more, or concurrency = 1)'
            )
        functions[spec.key] = FunctionSettings(
            memory=memory,
            timeout_seconds=timeout,
            max_instances=max_instances,
            concurrency=concurrency,
            cpu=cpu or "",
        )

    env = reader.env(reader.table(data, "env", section=None))

    monitoring = reader.table(data, "monitoring")
    emails = reader.texts(monitoring, "notification_emails", EMAIL, where="monitoring.")
    channels = reader.texts(monitoring, "notification_channels", CHANNEL, where="monitoring.")

    settings = DeploySettings(
        project=project,
        region=region,
        prefix=prefix,
        project_number=project_number,
        dataloop_org_id=org_id,
        dataloop_base_url=base_url,
        dataloop_credentials_secret=credentials,
        topics=topics,
        rotation_schedule=schedule,
        time_zone=time_zone,
        max_delivery_attempts=attempts,
        account_projects=account_projects,
        service_accounts=service_accounts,
        repositories=repositories,
        dataloop_org_ids=org_ids,
        requesters=requesters,
        created_account_prefix=created_prefix,
        canary_services=canary_services,
        functions=functions,
        env=env,
        build_service_account=build_account,
        notification_emails=emails,
        notification_channels=channels,
    )
    if not problems:
        problems.extend(_derived_problems(settings))
    if problems:
        raise SettingsError(problems)
    return settings


def _vcpus(cpu: str) -> Decimal:
    """The vCPUs of a value :data:`CPU` matches."""
    match = CPU.fullmatch(cpu)
    if match is None:
        raise ValueError(f"not a cpu value: {cpu!r}")
    if match["millis"]:
        return Decimal(match["millis"]) / 1000
    return Decimal(match["cpus"])


def _repository(text: str, project: str) -> Repository:
    match = REPOSITORY.fullmatch(text)
    if match:
        return Repository(**match.groupdict())
    location, repository = text.split("/")
    return Repository(project=project, location=location, repository=repository)


def _derived_problems(settings: DeploySettings) -> list[str]:
    """Problems only visible once the names and the functions' environment are known."""
    problems = []
    for key in [spec.key for spec in FUNCTIONS] + [settings.trigger_account_key]:
        account = settings.account_id(key)
        if not ACCOUNT_ID.fullmatch(account):
            problems.append(f"prefix: makes the service account id {account!r}, which must be 6-30 characters")
        elif account.startswith(settings.created_account_prefix):
            problems.append(
                f"prefix: makes the service account id {account!r}, which starts with access.created_account_prefix "
                f"{settings.created_account_prefix!r}: that prefix marks the accounts provisioning creates, so the "
                "deployment's own may not carry it"
            )
    own = settings.deployment_accounts()
    for account in settings.service_accounts:
        if account in own:
            problems.append(f"access.service_accounts: {account} is one of the deployment's own accounts")

    loaded: dict[str, Settings] = {}
    refused: list[str] = []
    for spec in FUNCTIONS:
        try:
            loaded[spec.key] = load_settings(settings.function_env(spec.key))
        except ConfigError as exc:
            refused += [f"env: the functions would refuse this environment: {p}" for p in exc.problems]
    if refused:
        return problems + list(dict.fromkeys(refused))  # [env] is every function's: report it once
    # A function killed by its timeout mid-way is redelivered and starts over; the bounded
    # waits inside must therefore end before the timeout does.
    waits = {
        # A push may first wait for another push's canary test on the same service.
        "on_push": (
            "CANARY_TIMEOUT_SECONDS + CANARY_LEASE_WAIT_SECONDS",
            loaded["on_push"].canary_timeout_seconds + loaded["on_push"].canary_lease_wait_seconds,
        ),
        "requests": ("ROTATION_TEST_TIMEOUT_SECONDS", loaded["requests"].rotation_test_timeout_seconds),
        "rotate": ("ROTATION_TEST_TIMEOUT_SECONDS", loaded["rotate"].rotation_test_timeout_seconds),
    }
    for key, (variable, wait) in waits.items():
        timeout = settings.function(key).timeout_seconds
        if timeout < wait + TIMEOUT_MARGIN_SECONDS:
            problems.append(
                f"functions.{key}.timeout_seconds: {timeout} s leaves no room for {variable}={wait:g} s "
                f"(needs at least {wait + TIMEOUT_MARGIN_SECONDS:g} s, or lower {variable} in [env])"
            )
    return problems


class _Reader:
    """Typed access to TOML tables that records problems instead of stopping at the first."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems

    def unknown(self, section: str, table: Mapping[str, Any], where: str = "") -> None:
        allowed = _SECTIONS[section]
        for key in table:
            if key not in allowed:
                self.problems.append(f"{where}{key}: unknown setting (allowed: {', '.join(sorted(allowed))})")

    def table(
        self, data: Mapping[str, Any], key: str, *, where: str = "", section: str | None = "__same__"
    ) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, Mapping):
            self.problems.append(f"{where}{key}: must be a table")
            return {}
        section = key if section == "__same__" else section
        if section is not None:
            self.unknown(section, value, f"{where}{key}.")
        return value

    def text(
        self,
        data: Mapping[str, Any],
        key: str,
        pattern: re.Pattern[str] | None,
        *,
        default: str = "",
        required: bool = False,
        where: str = "",
    ) -> str:
        value = data.get(key)
        if value is None:
            if required:
                self.problems.append(f"{where}{key}: required")
            return default
        if not isinstance(value, str) or not value.strip():
            self.problems.append(f"{where}{key}: must be a non-empty string, got {value!r}")
            return default
        if pattern is not None and not pattern.fullmatch(value):
            self.problems.append(f"{where}{key}: {value!r} does not match {pattern.pattern}")
        return value

    def texts(self, data: Mapping[str, Any], key: str, pattern: re.Pattern[str], *, where: str = "") -> tuple[str, ...]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problems.append(f"{where}{key}: must be a list of strings")
            return ()
        for item in value:
            if not pattern.fullmatch(item):
                self.problems.append(f"{where}{key}: {item!r} does not match {pattern.pattern}")
        return tuple(dict.fromkeys(value))

    def integer(self, data: Mapping[str, Any], key: str, low: int, high: int, *, default: int, where: str = "") -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.problems.append(f"{where}{key}: must be a whole number from {low} to {high}, got {value!r}")
            return default
        return value

    def cpu(self, data: Mapping[str, Any], key: str, *, default: str, where: str = "") -> str | None:
        """vCPUs as gcloud's ``--cpu`` takes them; "" derives them from memory; None if invalid."""
        value = data.get(key)
        if value is None:
            return default
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)  # cpu = 2 or cpu = 0.5 in TOML
        if not isinstance(value, str) or (value and not CPU.fullmatch(value)):
            self.problems.append(
                f'{where}{key}: must be a number of vCPUs such as "1", "2", "0.5" or "500m" '
                f"(or empty: derived from memory), got {value!r}"
            )
            return None
        if not value:
            return value
        vcpus = _vcpus(value)
        if not MIN_CPU <= vcpus <= MAX_CPU:
            self.problems.append(f"{where}{key}: must be from {MIN_CPU} to {MAX_CPU} vCPUs, got {value!r}")
        elif vcpus > 1 and vcpus != vcpus.to_integral_value():
            self.problems.append(f"{where}{key}: above 1 vCPU must be a whole number (such as 2 or 4), got {value!r}")
        elif vcpus != vcpus.quantize(Decimal("0.001")):
            self.problems.append(f"{where}{key}: below 1 vCPU goes in steps of 0.001, got {value!r}")
        else:
            return value
        return None

    def env(self, table: Mapping[str, Any]) -> dict[str, str]:
        allowed = overridable_env()
        env: dict[str, str] = {}
        for key, value in table.items():
            if key in DEPLOY_OWNED_ENV:
                self.problems.append(f"env.{key}: set by the deployment from the settings above; set it there")
            elif key in LOCAL_ONLY_ENV:
                self.problems.append(f"env.{key}: only for the local cloud; never deployed")
            elif key not in allowed:
                self.problems.append(f"env.{key}: not a variable the functions read (see README, Configuration)")
            elif isinstance(value, bool):
                env[key] = "true" if value else "false"
            elif isinstance(value, int | float | str):
                env[key] = str(value)
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                env[key] = ",".join(value)
            else:
                self.problems.append(f"env.{key}: must be a string, number, boolean or list of strings")
        return env
