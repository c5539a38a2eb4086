"""An in-memory stand-in for the gcloud commands the deployment runs.

It answers like gcloud does where the deployment depends on it: ``describe`` of something
absent fails with NOT_FOUND, ``create`` of something present fails with ALREADY_EXISTS (so
a non-idempotent plan fails loudly here), bindings need their resource, a function deploy
makes an Eventarc trigger and its subscription, a function delete removes them. Any
command it does not know fails the test: the plan may not grow commands nobody modelled.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

PROJECT_NUMBER = "123456789012"

Result = subprocess.CompletedProcess


def ok(stdout: str = "") -> Result[str]:
    return subprocess.CompletedProcess([], 0, stdout, "")


def error(message: str) -> Result[str]:
    return subprocess.CompletedProcess([], 1, "", f"ERROR: (gcloud) {message}\n")


def not_found(what: str) -> Result[str]:
    return error(f"NOT_FOUND: {what} not found")


@dataclass
class Binding:
    resource: str
    member: str
    role: str
    condition: str = ""


@dataclass
class FakeCloud:
    project: str
    region: str
    topics: dict[str, dict[str, str]] = field(default_factory=dict)  # id (another project's: its path) -> labels
    subscriptions: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> settings
    accounts: set[str] = field(default_factory=set)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    functions: dict[str, dict[str, str]] = field(default_factory=dict)
    triggers: dict[str, str] = field(default_factory=dict)  # trigger path -> subscription path
    jobs: dict[str, dict[str, str]] = field(default_factory=dict)
    repositories: set[str] = field(default_factory=set)
    roles: dict[str, dict[str, str]] = field(default_factory=dict)  # custom role id -> its flags
    bindings: list[Binding] = field(default_factory=list)
    metrics: dict[str, dict[str, object]] = field(default_factory=dict)  # log-based metric name -> its config
    #: Server-named Cloud Monitoring resources: kind ("notificationChannels", "alertPolicies",
    #: "dashboards") -> full name -> the resource, as its config file or flags described it.
    monitoring: dict[str, dict[str, dict[str, object]]] = field(default_factory=dict)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    #: Projects the deployer cannot see (``projects describe`` is refused).
    hidden_projects: set[str] = field(default_factory=set)
    #: Called first with every argv; a result it returns replaces the normal answer.
    intercept: Callable[[tuple[str, ...]], Result[str] | None] | None = None

    def __call__(self, argv: Sequence[str]) -> Result[str]:
        argv = tuple(argv)
        self.calls.append(argv)
        if self.intercept is not None and (result := self.intercept(argv)) is not None:
            return result
        words = [a for a in argv if not a.startswith("--")]
        flags = dict(_flag(a) for a in argv if a.startswith("--"))
        group = words[0] if words[0] != "beta" else "beta " + words[1]
        verb = words[1] if len(words) > 1 else ""
        if group in ("services", "beta services"):
            return ok()
        if (words[0] in ("alpha", "beta") and words[1] == "monitoring") or words[0] == "monitoring":
            return self._monitoring(words[words.index("monitoring") + 1 :], flags)
        if words[0] == "logging":
            return self._metrics(words, flags)
        if group == "projects":
            if verb == "describe":
                if words[2] in self.hidden_projects:
                    return error(f"PERMISSION_DENIED: the caller does not have permission on project {words[2]}")
                return ok((words[2] if flags.get("format") == "value(projectId)" else PROJECT_NUMBER) + "\n")
            return (self._bind if verb.startswith("add") else self._unbind)(f"project/{words[2]}", flags)
        handlers = {
            "pubsub": lambda: self._topics(words, flags) if verb == "topics" else self._subscriptions(words, flags),
            "iam": lambda: self._roles(words, flags) if verb == "roles" else self._accounts(words, flags),
            "secrets": lambda: self._secrets(words, flags),
            "artifacts": lambda: self._repositories(words, flags),
            "functions": lambda: self._functions(words, flags),
            "eventarc": lambda: self._triggers(words, flags),
            "scheduler": lambda: self._jobs(words, flags),
        }
        if group not in handlers:
            raise AssertionError(f"the fake cloud does not know: gcloud {' '.join(argv)}")
        return handlers[group]()

    # -- IAM bindings -----------------------------------------------------------------------
    def _bind(self, resource: str, flags: dict[str, str]) -> Result[str]:
        condition = flags.get("condition", "None")
        binding = Binding(resource, flags["member"], flags.get("role", "roles/run.invoker"), condition)
        if binding not in self.bindings:
            self.bindings.append(binding)
        return ok()

    def _unbind(self, resource: str, flags: dict[str, str]) -> Result[str]:
        role = flags.get("role", "roles/run.invoker")
        matching = [b for b in self.bindings if (b.resource, b.member, b.role) == (resource, flags["member"], role)]
        if not matching:
            return error("Policy binding with the specified principal, role, and condition not found!")
        self.bindings = [b for b in self.bindings if b not in matching]
        return ok()

    def bindings_of(self, member_fragment: str) -> list[Binding]:
        return [b for b in self.bindings if member_fragment in b.member]

    def _drop_bindings(self, resource: str) -> None:
        self.bindings = [b for b in self.bindings if b.resource != resource]

    # -- resources --------------------------------------------------------------------------
    def _topic_key(self, name: str, project: str | None) -> str:
        """A topic of the deployment's project by its id, another project's by its path."""
        if name.startswith("projects/"):
            project, name = name.split("/")[1], name.rsplit("/", 1)[-1]
        return name if project in (None, self.project) else f"projects/{project}/topics/{name}"

    def _topics(self, words: list[str], flags: dict[str, str]) -> Result[str]:
        verb, name = words[2], self._topic_key(words[3], flags.get("project"))
        if verb == "create":
            if name in self.topics:
                return error(f"ALREADY_EXISTS: Resource already exists in the project (resource={name}).")
            key, _, value = flags.get("labels", "").partition("=")
            self.topics[name] = {key: value} if key else {}
            return ok()
        if name not in self.topics:
            return not_found(f"Resource (resource={name})")
        if verb == "describe":
            fmt = flags.get("format", "")
            if fmt.startswith("value(labels."):
                return ok(self.topics[name].get(fmt[len("value(labels.") : -1], "") + "\n")
            return ok((name if name.startswith("projects/") else f"projects/{self.project}/topics/{name}") + "\n")
        if verb == "delete":
            del self.topics[name]
            self._drop_bindings(f"topic/{name}")
            return ok()
        if verb == "add-iam-policy-binding":
            return self._bind(f"topic/{name}", flags)
        raise AssertionError(f"topics {verb}")

    def _subscriptions(self, words: list[str], flags: dict[str, str]) -> Result[str]:
        verb, name = words[2], words[3].rsplit("/", 1)[-1]
        if verb == "create":
            if name in self.subscriptions:
                return error("ALREADY_EXISTS: Resource already exists in the project")
            topic = self._topic_key(flags["topic"], None)
            if topic not in self.topics:
                return not_found(f"Resource (resource={topic})")
            self.subscriptions[name] = {"topic": topic, **{k: v for k, v in flags.items() if k != "topic"}}
            return ok()
        if name not in self.subscriptions:
            return not_found(f"Resource (resource={name})")
        if verb == "describe":
            fmt = flags.get("format", "")
            if fmt.startswith("value(labels."):
                return ok(_labels(self.subscriptions[name]).get(fmt[len("value(labels.") : -1], "") + "\n")
            return ok(f"projects/{self.project}/subscriptions/{name}\n")
        if verb == "update":
            dead_letter = flags.get("dead-letter-topic", "").rsplit("/", 1)[-1]
            if dead_letter and dead_letter not in self.topics:
                return not_found(f"Resource (resource={dead_letter})")
            updates = dict(flags)
            if "update-labels" in updates:
                updates["labels"] = updates.pop("update-labels")
            self.subscriptions[name].update(updates)
            return ok()
        if verb == "delete":
            del self.subscriptions[name]
            self._drop_bindings(f"subscription/{name}")
            return ok()
        if verb == "add-iam-policy-binding":
            return self._bind(f"subscription/{name}", flags)
        raise AssertionError(f"subscriptions {verb}")

    def _accounts(self, words: list[str], flags: dict[str, str]) -> Result[str]:
        verb, name = words[2], words[3]
        if verb == "create":
            email = f"{name}@{flags['project']}.iam.gserviceaccount.com"
            if email in self.accounts:
                return error(f"ALREADY_EXISTS: Service account {email} already exists within project")
            self.accounts.add(email)
            return ok()
        if verb in ("add-iam-policy-binding", "remove-iam-policy-binding"):
            if name not in self.accounts:
                return not_found(f"Service account {name}")
            return (self._bind if verb.startswith("add") else self._unbind)(f"account/{name}", flags)
        if name not in self.accounts:
            return not_found(f"Unknown service account {name}")
        if verb == "describe":
            return ok(name + "\n")
        if verb == "delete":
            self.accounts.remove(name)
            self._drop_bindings(f"account/{name}")
            return ok()
        raise AssertionError(f"service-accounts {verb}")

    def _roles(self, words: list[str], flags: dict[str, str]) -> Result[str]:
        verb, role_id = words[2], words[3]
        definition = {k: v for k, v in flags.items() if k in ("title", "description", "permissions", "stage")}
        if verb == "create":
            if role_id in self.roles:
                return error(f"ALREADY_EXISTS: A role named {role_id} in projects/{flags['project']} already exists.")
            self.roles[role_id] = definition
            return ok()
        if role_id not in self.roles:
            return not_found(f"The role named projects/{flags['project']}/roles/{role_id}")
        if verb == "describe":
            return ok(f"projects/{flags['project']}/roles/{role_id}\n")
        if verb == "update":
            self.roles[role_id].update(definition)
            return ok()
        raise AssertionError(f"roles {verb}")

    def _secrets(self, words: list[str], flags: dict[str, str]) -> Result[str]:
        verb, name = words[1], words[2]
        if verb == "create":
            if name in self.secrets:
                return error(f"ALREADY_EXISTS: Secret [projects/{PROJECT_NUMBER}/secrets/{name}] already exists.")
            self.secrets[name] = dict(flags)
            return ok()
        if name not in self.secrets:
            return not_found(f"Secret [projects/{PROJECT_NUMBER}/secrets/{name}]")
        if verb == "describe":
            fmt = flags.get("format", "")
            if fmt.startswith("value(labels."):
                return ok(_labels(self.secrets[name]).get(fmt[len("value(labels.") : -1], "") + "\n")
            return ok(f"projects/{PROJECT_NUMBER}/secrets/{name}\n")
        if verb == "delete":
            del self.secrets[name]
            self._drop_bindings(f"secret/{name}")
            return ok()
        if verb == "add-iam-policy-binding":
            return self._bind(f"secret/{name}", flags)
        if verb == "remove-iam-policy-binding":
            return self._unbind(f"secret/{name}", flags)
        raise AssertionError(f"secrets {verb}")

    def _repositories(self, words: list[str], flags: dict[str, str]) -> Result[str]:
        verb, name = words[2], words[3]
        path = f"{flags['project']}/{flags['location']}/{name}"
        if path not in self.repositories:
            return not_found(f"Repository {path}")
        return (self._bind if verb.startswith("add") else self._unbind)(f"repository/{path}", flags)

    def _functions(self, words: list[str], flags: dict[str, str]) -> Result[str]:
        verb, name = words[1], words[2]
        if verb == "deploy":
            if name not in self.functions:
                trigger = f"projects/{self.project}/locations/{self.region}/triggers/{name}-{len(self.triggers):03d}"
                subscription = f"eventarc-{self.region}-{name}-{len(self.triggers):03d}-sub-001"
                self.triggers[trigger] = f"projects/{self.project}/subscriptions/{subscription}"
                self.subscriptions[subscription] = {"topic": flags["trigger-topic"]}
                self.functions[name] = {"trigger": trigger}
            self.functions[name].update(flags)
            return ok()
        if name not in self.functions:
            return not_found(f"Resource 'projects/{self.project}/locations/{self.region}/functions/{name}' was")
        if verb == "describe":
            if flags.get("format") == "value(eventTrigger.trigger)":
                return ok(self.functions[name]["trigger"] + "\n")
            if flags.get("format") == "value(serviceConfig.uri)":
                return ok(f"https://{name}-abcdefghij-ez.a.run.app\n")
            return ok(f"projects/{self.project}/locations/{self.region}/functions/{name}\n")
        if verb == "add-invoker-policy-binding":
            return self._bind(f"function/{name}", flags)
        if verb == "delete":
            trigger = self.functions.pop(name)["trigger"]
            subscription = self.triggers.pop(trigger).rsplit("/", 1)[-1]
            self.subscriptions.pop(subscription)
            self._drop_bindings(f"subscription/{subscription}")
            self._drop_bindings(f"function/{name}")
            return ok()
        raise AssertionError(f"functions {verb}")

    def _triggers(self, words: list[str], flags: dict[str, str]) -> Result[str]:
        trigger = words[3]
        if trigger not in self.triggers:
            return not_found(f"Trigger {trigger}")
        return ok(self.triggers[trigger] + "\n")

    def _jobs(self, words: list[str], flags: dict[str, str]) -> Result[str]:
        verb = words[2]
        name = words[4] if verb in ("create", "update") else words[3]
        if verb == "create":
            if name in self.jobs:
                return error("ALREADY_EXISTS: Job already exists.")
            self.jobs[name] = dict(flags)
            return ok()
        if name not in self.jobs:
            return not_found("Job")
        if verb == "describe":
            return ok(f"projects/{self.project}/locations/{self.region}/jobs/{name}\n")
        if verb == "update":
            self.jobs[name].update(flags)
            return ok()
        if verb == "delete":
            del self.jobs[name]
            return ok()
        raise AssertionError(f"jobs {verb}")

    def _metrics(self, words: list[str], flags: dict[str, str]) -> Result[str]:
        verb, name = words[2], words[3]
        if verb == "create":
            if name in self.metrics:
                return error(f"ALREADY_EXISTS: metric {name} already exists")
            self.metrics[name] = _config(flags["config-from-file"])
            return ok()
        if name not in self.metrics:
            return not_found(f"Metric {name}")
        if verb == "describe":
            return ok(f"{name}\n")
        if verb == "update":
            self.metrics[name] = _config(flags["config-from-file"])
            return ok()
        if verb == "delete":
            del self.metrics[name]
            return ok()
        raise AssertionError(f"metrics {verb}")

    def _monitoring(self, words: list[str], flags: dict[str, str]) -> Result[str]:
        """Channels, policies and dashboards: named by the server, found by ``list --filter``."""
        group, verb = words[0], words[1]
        kind = {"channels": "notificationChannels", "policies": "alertPolicies", "dashboards": "dashboards"}[group]
        found = self.monitoring.setdefault(kind, {})
        if verb == "list":
            wanted = dict(re.findall(r'([\w.]+)="([^"]*)"', flags.get("filter", "")))
            names = [n for n, r in found.items() if all(_field(r, k) == v for k, v in wanted.items())]
            return ok("".join(f"{n}\n" for n in names[: int(flags.get("limit", len(names) or 1))]))
        if verb == "create":
            name = f"projects/{flags['project']}/{kind}/{len(self.calls)}"
            found[name] = self._monitoring_resource(group, flags, {})
            return ok(f"{name}\n" if flags.get("format") == "value(name)" else "")
        name = words[2]
        if name not in found:
            return not_found(f"{kind} {name}")
        if verb == "describe":
            return ok(f"{name}\n")
        if verb == "update":
            found[name] = self._monitoring_resource(group, flags, found[name])
            return ok()
        if verb == "delete":
            if group == "channels" and "force" not in flags:
                policies = self.monitoring.get("alertPolicies", {})
                users = [p for p, r in policies.items() if name in cast("list[str]", r["channels"])]
                if users:
                    return error(f"FAILED_PRECONDITION: channel {name} is referenced by {users}")
            del found[name]
            return ok()
        raise AssertionError(f"monitoring {group} {verb}")

    def _monitoring_resource(self, group: str, flags: dict[str, str], old: dict[str, object]) -> dict[str, object]:
        if group == "channels":
            key, _, value = flags["channel-labels"].partition("=")
            return {"displayName": flags["display-name"], "type": flags["type"], "labels": {key: value}}
        resource = _config(flags.get("policy-from-file") or flags["config-from-file"])
        if group == "policies":
            given = flags.get("notification-channels") or flags.get("set-notification-channels")
            channels = given.split(",") if given else []
            resource["channels"] = channels
            for channel in channels:
                if "/notificationChannels/" not in channel or "$" in channel:
                    raise AssertionError(f"a policy names no channel: {channel}")
        return resource

    # -- what tests compare -----------------------------------------------------------------
    def state(self) -> dict[str, object]:
        return {
            "topics": dict(self.topics),
            "subscriptions": {k: dict(v) for k, v in self.subscriptions.items()},
            "accounts": set(self.accounts),
            "secrets": set(self.secrets),
            "roles": {k: dict(v) for k, v in self.roles.items()},
            "functions": {k: dict(v) for k, v in self.functions.items()},
            "jobs": {k: dict(v) for k, v in self.jobs.items()},
            "bindings": sorted((b.resource, b.member, b.role, b.condition) for b in self.bindings),
            "metrics": json.dumps(self.metrics, sort_keys=True),
            "monitoring": json.dumps(self.monitoring, sort_keys=True),
        }


def _config(path: str) -> dict[str, object]:
    """The file a ``--config-from-file`` names, read now (as gcloud does while it parses)."""
    with open(path, encoding="utf-8") as file:
        config: dict[str, object] = json.load(file)
    return config


def _flag(arg: str) -> tuple[str, str]:
    """``--name=value`` as ``(name, value)``; a bare ``--name`` as ``(name, "")``."""
    if "=" in arg:
        name, value = arg[2:].split("=", 1)
        return name, value
    return arg[2:], ""


def _field(resource: object, dotted: str) -> object:
    for key in dotted.split("."):
        resource = resource.get(key) if isinstance(resource, dict) else None
    return resource


def _labels(resource: dict[str, str]) -> dict[str, str]:
    """A resource's ``--labels=k=v,k2=v2`` flag (as created) as a mapping."""
    return dict(pair.split("=", 1) for pair in resource.get("labels", "").split(",") if pair)
