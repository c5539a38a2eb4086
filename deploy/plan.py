"""What a deployment does, as data: every gcloud command, in order, with why it is needed.

The plan is built from the settings alone, without touching Google Cloud, so that the
dry run can print it and the tests can feed every command to gcloud's own parser. Values
only Google knows (the project number, the Eventarc subscription of each trigger) are
*facts*: a lookup step reads them at run time, and later commands refer to them as
``${fact}``; the dry run shows a placeholder instead.

Idempotence comes from the step kinds: a resource is created only when its ``describe``
says it is absent (and updated otherwise, where an update exists); IAM bindings are added
with ``add-iam-policy-binding``, which leaves an existing identical binding alone;
``gcloud functions deploy`` creates or updates. Running the plan twice changes nothing
the second time but the functions' code and settings.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from deploy import monitoring
from deploy.access import (
    agent_grants,
    custom_roles,
    function_grants,
    gcr_subscription_grant,
    requester_grants,
    subscription_grant,
    trigger_grants,
)
from deploy.settings import DEPLOYED_BY_LABEL, FUNCTIONS, DeploySettings, FunctionSpec
from shared.workflows.canary_lock import LOCK_LABEL, lock_secret_id

RUNTIME = "python312"
APIS = (
    "cloudfunctions.googleapis.com",  # the functions
    "run.googleapis.com",  # gen2 functions run as Cloud Run services
    "cloudbuild.googleapis.com",  # builds the functions' containers
    "artifactregistry.googleapis.com",  # stores them; and the registry under test
    "eventarc.googleapis.com",  # Pub/Sub triggers
    "pubsub.googleapis.com",
    "secretmanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "iam.googleapis.com",  # service accounts and their keys
    "cloudresourcemanager.googleapis.com",  # project IAM policy
    "logging.googleapis.com",  # log-based metrics
    "monitoring.googleapis.com",  # alert policies, notification channels, the dashboard
)
SWEEP_MESSAGE = '{"kind":"sweep"}'
#: Pub/Sub's longest ack deadline; a push that has not answered by then is redelivered.
ACK_DEADLINE_SECONDS = 600
LABEL = "=".join(DEPLOYED_BY_LABEL)


class Kind(enum.Enum):
    RUN = "run"  # always run (idempotent by itself)
    CREATE = "create"  # run when ``probe`` fails with not-found; else ``otherwise`` if any
    DELETE = "delete"  # run when ``probe`` succeeds (and prints ``expect``, if given)
    # CREATE and DELETE with a ``fact``: ``probe`` is a search printing the resource's
    # server-assigned name, or nothing when absent; that name is the fact (a CREATE's
    # ``argv`` prints it when it makes the resource).
    LOOKUP = "lookup"  # run and keep its output as the fact ``fact``
    CHECK = "check"  # a read that must succeed (with ``missing_ok``: or say not-found); changes nothing


@dataclass(frozen=True)
class Step:
    """One gcloud command of the plan. ``argv`` excludes the ``gcloud`` executable."""

    why: str
    argv: tuple[str, ...]
    kind: Kind = Kind.RUN
    probe: tuple[str, ...] | None = None
    otherwise: tuple[str, ...] | None = None
    expect: str | None = None
    fact: str | None = None
    #: Retry for a while on not-found: a service account created seconds ago is not yet
    #: visible to every IAM policy (IAM is eventually consistent).
    settle: bool = False
    #: Teardown: a binding or resource already gone counts as done.
    missing_ok: bool = False

    def commands(self) -> Iterator[tuple[str, ...]]:
        """Every argv this step may run, probe and alternative included."""
        for argv in (self.probe, self.argv, self.otherwise):
            if argv is not None:
                yield argv


def gcloud(command: str, *args: str) -> tuple[str, ...]:
    """``gcloud("pubsub topics create", name, …)``: the command's words, then its arguments."""
    return (*command.split(), *args)


def placeholders(settings: DeploySettings) -> dict[str, str]:
    """What the dry run shows for each fact (a known project number is shown as it is)."""
    s = settings
    facts = {"project_number": s.project_number or "PROJECT_NUMBER", "on_push_url": "ON_PUSH_URL"}
    for index, _ in enumerate(s.notification_emails):
        facts[f"channel_{index}"] = f"projects/{s.project}/notificationChannels/CHANNEL_{index}"
    for policy in monitoring.policies(s):
        facts[_policy_fact(policy)] = (
            f"projects/{s.project}/alertPolicies/POLICY_{policy.key.upper().replace('-', '_')}"
        )
    facts["dashboard"] = f"projects/{s.project}/dashboards/DASHBOARD"
    for spec in FUNCTIONS:
        name = spec.key.upper()
        facts[f"trigger_{spec.key}"] = f"projects/{s.project}/locations/{s.region}/triggers/TRIGGER_OF_{name}"
        facts[f"subscription_{spec.key}"] = f"projects/{s.project}/subscriptions/SUBSCRIPTION_OF_{name}"
    return facts


# -- the deploy plan --------------------------------------------------------------------------------


def deploy_steps(
    settings: DeploySettings, *, source_root: str = "build/functions", monitoring_dir: str = "build/monitoring"
) -> list[Step]:
    """The whole deployment, in the order it must run; ``monitoring_dir`` holds :func:`monitoring.write`'s files."""
    return [
        *_preflight(settings),
        *_foundation(settings),
        *_topics(settings),
        *_identities(settings),
        *_roles(settings),
        *_grants(settings),
        *_functions(settings, source_root),
        *_dead_lettering(settings),
        *_other_projects_delivery(settings),
        _scheduler(settings),
        *_monitoring(settings, monitoring_dir),
    ]


def _preflight(s: DeploySettings) -> list[Step]:
    """Reads in every other repository project, first: one that cannot be wired stops the run
    before anything anywhere has changed (an integration there would never have a push tested).
    So does a notification channel of the settings that is not there (a typo would otherwise
    fail the last steps, with the functions already deployed)."""
    steps: list[Step] = [
        Step(
            f"notification channel {channel} ([monitoring]) must exist for the alert policies to name it",
            gcloud("beta monitoring channels describe", s.channel_path(channel), "--format=value(name)"),
            kind=Kind.CHECK,
        )
        for channel in s.notification_channels
    ]
    for project in s.other_gcr_projects:
        steps += [
            Step(
                f"project {project} holds a repository: the deployer must see it before anything changes",
                gcloud("projects describe", project, "--format=value(projectId)"),
                kind=Kind.CHECK,
            ),
            Step(
                f"Pub/Sub must answer in {project} (API enabled, deployer allowed) for its `{s.topics.gcr}` topic "
                "to be created and subscribed to; the topic itself may be absent",
                gcloud("pubsub topics describe", s.topics.gcr, f"--project={project}", "--format=value(name)"),
                kind=Kind.CHECK,
                missing_ok=True,
            ),
        ]
    return steps


def _foundation(s: DeploySettings) -> list[Step]:
    p = f"--project={s.project}"
    steps = [
        Step("enable the APIs the functions, their builds and their triggers use", gcloud("services enable", *APIS, p))
    ]
    if s.project_number is None:
        steps.append(
            Step(
                "look up the project number (service agents and IAM conditions use it)",
                gcloud("projects describe", s.project, "--format=value(projectNumber)"),
                kind=Kind.LOOKUP,
                fact="project_number",
            )
        )
    for service in ("secretmanager", "pubsub"):
        steps.append(
            Step(
                f"make sure the {service} service agent exists before it is granted roles",
                gcloud("beta services identity create", f"--service={service}.googleapis.com", p),
            )
        )
    return steps


_TOPIC_PURPOSE = {
    "gcr": "Artifact Registry publishes push notifications on `gcr` (created only if absent)",
    "requests": "provisioning requests",
    "rotation": "scheduler sweeps, rotate messages and Secret Manager notifications",
    "results": "one result per event",
    "dead_letter": "events no function could handle after every delivery attempt",
}


def _topics(s: DeploySettings) -> list[Step]:
    p = f"--project={s.project}"
    steps = [
        Step(
            f"topic {topic}: {_TOPIC_PURPOSE[attribute]}",
            gcloud("pubsub topics create", topic, f"--labels={LABEL}", p),
            kind=Kind.CREATE,
            probe=gcloud("pubsub topics describe", topic, p, "--format=value(name)"),
        )
        for attribute, topic in s.topics.all().items()
    ]
    steps += [
        Step(
            f"topic {s.topics.gcr} in {project}: Artifact Registry notifies pushes to that project's repositories "
            "only there (created only if absent)",
            gcloud("pubsub topics create", s.topics.gcr, f"--labels={LABEL}", f"--project={project}"),
            kind=Kind.CREATE,
            probe=gcloud("pubsub topics describe", s.topics.gcr, f"--project={project}", "--format=value(name)"),
        )
        for project in s.other_gcr_projects
    ]
    subscription = s.dead_letter_subscription
    steps.append(
        Step(
            "keep dead-lettered events for a week (a topic without subscriptions drops them)",
            gcloud(
                "pubsub subscriptions create",
                subscription,
                f"--topic={s.topic_path(s.topics.dead_letter)}",
                "--message-retention-duration=7d",
                "--expiration-period=never",
                f"--labels={LABEL}",
                p,
            ),
            kind=Kind.CREATE,
            probe=gcloud("pubsub subscriptions describe", subscription, p, "--format=value(name)"),
        )
    )
    return steps


def _identities(s: DeploySettings) -> list[Step]:
    """One service account per function, one for the triggers, and the credentials secret."""
    p = f"--project={s.project}"
    purposes = {spec.key: f"runs {s.function_name(spec.key)}: {spec.summary}" for spec in FUNCTIONS}
    purposes[s.trigger_account_key] = "identity of the Eventarc triggers (invokes the functions)"
    steps = [
        Step(
            f"service account {s.account_id(key)}",
            gcloud(
                "iam service-accounts create",
                s.account_id(key),
                f"--display-name={s.prefix} {key}",
                f"--description={purpose}",
                p,
            ),
            kind=Kind.CREATE,
            probe=gcloud("iam service-accounts describe", s.account_email(key), p, "--format=value(email)"),
        )
        for key, purpose in purposes.items()
    ]
    secret = s.dataloop_credentials_secret
    steps.append(
        Step(
            f"secret {secret} for the Dataloop API credentials (no version is written: add one yourself)",
            gcloud("secrets create", secret, "--replication-policy=automatic", f"--labels={LABEL}", p),
            kind=Kind.CREATE,
            probe=gcloud("secrets describe", secret, p, "--format=value(name)"),
        )
    )
    return steps


def _roles(s: DeploySettings) -> list[Step]:
    """Custom roles, created or brought back to the permissions the code needs."""
    p = f"--project={s.project}"
    steps = []
    for role in custom_roles(s):
        definition = (
            f"--title={role.title}",
            f"--description={role.description}",
            f"--permissions={','.join(role.permissions)}",
            "--stage=GA",
            p,
        )
        steps.append(
            Step(
                f"custom role {role.role_id}: {', '.join(role.permissions)}",
                gcloud("iam roles create", role.role_id, *definition),
                kind=Kind.CREATE,
                probe=gcloud("iam roles describe", role.role_id, p, "--format=value(name)"),
                otherwise=gcloud("iam roles update", role.role_id, *definition, "--quiet"),
            )
        )
    return steps


def _grants(s: DeploySettings) -> list[Step]:
    steps = [Step(f"{grant.role} for a service agent: {grant.why}", grant.add()) for grant in agent_grants(s)]
    for key, grants in function_grants(s).items():
        steps += [
            Step(f"{s.account_id(key)}: {grant.role} on {grant.kind}: {grant.why}", grant.add(), settle=True)
            for grant in grants
        ]
    steps += [
        Step(f"requester {grant.member}: {grant.role} on topic {grant.resource}: {grant.why}", grant.add())
        for grant in requester_grants(s)
    ]
    return steps


def _functions(s: DeploySettings, source_root: str) -> list[Step]:
    steps = [
        Step(f"deploy {s.function_name(spec.key)} ({spec.summary})", function_deploy(s, spec, source_root))
        for spec in FUNCTIONS
    ]
    trigger = s.account_id(s.trigger_account_key)
    steps += [Step(f"{trigger}: {g.role} on {g.resource}", g.add(), settle=True) for g in trigger_grants(s)]
    return steps


def _dead_lettering(s: DeploySettings) -> list[Step]:
    """Bound each trigger's retries: find its Eventarc subscription, give it a dead-letter policy.

    Eventarc creates the subscription and offers no flag for this; Pub/Sub's own
    ``subscriptions update`` on it is the documented way. A redeploy that replaces the
    trigger makes a new subscription, which is why every deploy runs these steps again.
    """
    steps: list[Step] = []
    for spec in FUNCTIONS:
        name = s.function_name(spec.key)
        steps += [
            Step(
                f"look up the Eventarc trigger of {name}",
                gcloud(
                    "functions describe",
                    name,
                    f"--region={s.region}",
                    "--gen2",
                    f"--project={s.project}",
                    "--format=value(eventTrigger.trigger)",
                ),
                kind=Kind.LOOKUP,
                fact=f"trigger_{spec.key}",
            ),
            Step(
                "look up the Pub/Sub subscription that trigger pushes from",
                gcloud(
                    "eventarc triggers describe",
                    f"${{trigger_{spec.key}}}",
                    "--format=value(transport.pubsub.subscription)",
                ),
                kind=Kind.LOOKUP,
                fact=f"subscription_{spec.key}",
            ),
            Step(
                f"bound the retries of {name}: after {s.max_delivery_attempts} attempts an event goes to "
                f"{s.topics.dead_letter}",
                gcloud(
                    "pubsub subscriptions update",
                    f"${{subscription_{spec.key}}}",
                    f"--dead-letter-topic={s.topic_path(s.topics.dead_letter)}",
                    f"--max-delivery-attempts={s.max_delivery_attempts}",
                    f"--ack-deadline={ACK_DEADLINE_SECONDS}",
                    "--min-retry-delay=10s",
                    "--max-retry-delay=600s",
                ),
            ),
            Step("the Pub/Sub service agent acknowledges what it dead-letters", subscription_grant(spec).add()),
        ]
    return steps


def _other_projects_delivery(s: DeploySettings) -> list[Step]:
    """Deliver each other repository project's ``gcr`` topic to ``on_push``.

    A Pub/Sub subscription may live in another project than its topic, so each one is
    created here, in the deployment's project, pushing to the function's URL with an OIDC
    token of the trigger account (which may invoke it). Living beside the function, its
    pushes count as internal traffic, which ``--ingress-settings=internal-only`` requires;
    an Eventarc trigger is documented only for topics of its own project. Retries, ack
    deadline and dead-lettering are those of the Eventarc subscriptions (docs/external-apis.md §6.6).
    """
    if not s.other_gcr_projects:
        return []
    name = s.function_name("on_push")
    p = f"--project={s.project}"
    steps = [
        Step(
            f"look up the URL of {name}: the other projects' subscriptions push to it",
            gcloud(
                "functions describe",
                name,
                f"--region={s.region}",
                "--gen2",
                p,
                "--format=value(serviceConfig.uri)",
            ),
            kind=Kind.LOOKUP,
            fact="on_push_url",
        )
    ]
    delivery = (
        "--push-endpoint=${on_push_url}",
        f"--push-auth-service-account={s.account_email(s.trigger_account_key)}",
        f"--ack-deadline={ACK_DEADLINE_SECONDS}",
        "--min-retry-delay=10s",
        "--max-retry-delay=600s",
        f"--dead-letter-topic={s.topic_path(s.topics.dead_letter)}",
        f"--max-delivery-attempts={s.max_delivery_attempts}",
        "--expiration-period=never",
    )
    for project in s.other_gcr_projects:
        subscription = s.gcr_subscription(project)
        steps += [
            Step(
                f"subscription {subscription}: pushes of {project} (its topic {s.topics.gcr}) to {name}, as "
                f"{s.account_id(s.trigger_account_key)}; after {s.max_delivery_attempts} attempts an event goes "
                f"to {s.topics.dead_letter}",
                gcloud(
                    "pubsub subscriptions create",
                    subscription,
                    f"--topic=projects/{project}/topics/{s.topics.gcr}",
                    *delivery,
                    f"--labels={LABEL}",
                    p,
                ),
                kind=Kind.CREATE,
                probe=gcloud("pubsub subscriptions describe", subscription, p, "--format=value(name)"),
                otherwise=gcloud("pubsub subscriptions update", subscription, *delivery, f"--update-labels={LABEL}", p),
            ),
            Step(
                "the Pub/Sub service agent acknowledges what it dead-letters",
                gcr_subscription_grant(s, project).add(),
            ),
        ]
    return steps


def _scheduler(s: DeploySettings) -> Step:
    p = f"--project={s.project}"
    job = s.scheduler_job
    schedule = (
        f"--location={s.region}",
        f"--schedule={s.rotation_schedule}",
        f"--time-zone={s.time_zone}",
        f"--topic={s.topic_path(s.topics.rotation)}",
        f"--message-body={SWEEP_MESSAGE}",
        "--description=dataloop-gar: rotate the keys of integrations that are due",
        p,
    )
    return Step(
        f"scheduler job {job}: publishes the rotation sweep ({s.rotation_schedule}, {s.time_zone})",
        gcloud("scheduler jobs create pubsub", job, *schedule),
        kind=Kind.CREATE,
        probe=gcloud("scheduler jobs describe", job, f"--location={s.region}", p, "--format=value(name)"),
        otherwise=gcloud("scheduler jobs update pubsub", job, *schedule),
    )


def _policy_fact(policy: monitoring.Policy) -> str:
    return "policy_" + policy.key.replace("-", "_")


def _channel_search(s: DeploySettings, email: str) -> tuple[str, ...]:
    """Our email channel for ``email``: by address and the display name deploy gives it (someone
    else's channel for the same address is neither reused nor, at teardown, deleted)."""
    return gcloud(
        "beta monitoring channels list",
        f'--filter=type="email" AND labels.email_address="{email}" AND displayName="{_channel_name(s, email)}"',
        "--format=value(name)",
        "--limit=1",
        f"--project={s.project}",
    )


def _channel_name(s: DeploySettings, email: str) -> str:
    return f"{s.prefix} alerts: {email}"


def _by_display_name(command: str, s: DeploySettings, display_name: str) -> tuple[str, ...]:
    return gcloud(
        command, f'--filter=displayName="{display_name}"', "--format=value(name)", "--limit=1", f"--project={s.project}"
    )


def _monitoring(s: DeploySettings, directory: str) -> list[Step]:
    """Log-based metrics, notification channels, alert policies and the dashboard (docs/external-apis.md §9.3, §9.4).

    Metrics have names of our choosing, so ``describe`` tells whether one exists; channels,
    policies and dashboards are named by the server, so a search by display name finds
    ours, and its name is the fact the update uses. Alert policies are under ``gcloud alpha``
    only; channels under ``beta`` too, which the deployment already needs.
    """
    p = f"--project={s.project}"
    steps = []
    for metric in monitoring.metrics(s):
        name = metric.name(s)
        config = f"--config-from-file={directory}/metric-{metric.key}.json"
        steps.append(
            Step(
                f"log-based metric {name}: {metric.description}",
                gcloud("logging metrics create", name, config, p),
                kind=Kind.CREATE,
                probe=gcloud("logging metrics describe", name, p, "--format=value(name)"),
                otherwise=gcloud("logging metrics update", name, config, p),
            )
        )
    channels = [s.channel_path(c) for c in s.notification_channels]
    for index, email in enumerate(s.notification_emails):
        steps.append(
            Step(
                f"email notification channel for {email} (found by its display name, or created)",
                gcloud(
                    "beta monitoring channels create",
                    f"--display-name={_channel_name(s, email)}",
                    f"--description={s.prefix} alert policies notify here",
                    "--type=email",
                    f"--channel-labels=email_address={email}",
                    f"--user-labels={LABEL}",
                    "--format=value(name)",
                    p,
                ),
                kind=Kind.CREATE,
                probe=_channel_search(s, email),
                fact=f"channel_{index}",
            )
        )
        channels.append(f"${{channel_{index}}}")
    notifies = (
        f"notifies {len(channels)} channel(s)"
        if channels
        else "notifies nobody: no [monitoring] notification_emails or notification_channels are set, so its "
        "incidents show only in the console"
    )
    for policy in monitoring.policies(s):
        config = f"--policy-from-file={directory}/policy-{policy.key}.json"
        fact = _policy_fact(policy)
        steps.append(
            Step(
                f"alert policy {policy.display_name(s)!r}; {notifies}"
                + ("" if policy.enabled else f"; created DISABLED: {policy.disabled_because}"),
                gcloud(
                    "alpha monitoring policies create",
                    config,
                    "--format=value(name)",
                    *((f"--notification-channels={','.join(channels)}",) if channels else ()),
                    p,
                ),
                kind=Kind.CREATE,
                probe=_by_display_name("alpha monitoring policies list", s, policy.display_name(s)),
                otherwise=gcloud(
                    "alpha monitoring policies update",
                    f"${{{fact}}}",
                    config,
                    *((f"--set-notification-channels={','.join(channels)}",) if channels else ()),
                    p,
                ),
                fact=fact,
            )
        )
    title = monitoring.dashboard_name(s)
    config = f"--config-from-file={directory}/dashboard.json"
    steps.append(
        Step(
            f"dashboard {title!r}: verdicts by status, failures by integration, rotations, keys, dead letters",
            gcloud("monitoring dashboards create", config, "--format=value(name)", p),
            kind=Kind.CREATE,
            probe=_by_display_name("monitoring dashboards list", s, title),
            otherwise=gcloud("monitoring dashboards update", "${dashboard}", config, p),
            fact="dashboard",
        )
    )
    return steps


def _monitoring_teardown(s: DeploySettings) -> list[Step]:
    """Policies first (a channel they name cannot be deleted), then channels deploy made, metrics, the dashboard."""
    p = f"--project={s.project}"
    steps = [
        Step(
            f"delete alert policy {policy.display_name(s)!r}",
            gcloud("alpha monitoring policies delete", f"${{{_policy_fact(policy)}}}", p, "--quiet"),
            kind=Kind.DELETE,
            probe=_by_display_name("alpha monitoring policies list", s, policy.display_name(s)),
            fact=_policy_fact(policy),
        )
        for policy in monitoring.policies(s)
    ]
    steps += [
        Step(
            f"delete the email notification channel deploy made for {email}",
            gcloud("beta monitoring channels delete", f"${{channel_{index}}}", p, "--quiet"),
            kind=Kind.DELETE,
            probe=_channel_search(s, email),
            fact=f"channel_{index}",
        )
        for index, email in enumerate(s.notification_emails)
    ]
    steps += [
        Step(
            f"delete log-based metric {metric.name(s)}",
            gcloud("logging metrics delete", metric.name(s), p, "--quiet"),
            kind=Kind.DELETE,
            probe=gcloud("logging metrics describe", metric.name(s), p, "--format=value(name)"),
        )
        for metric in monitoring.metrics(s)
    ]
    title = monitoring.dashboard_name(s)
    steps.append(
        Step(
            f"delete dashboard {title!r}",
            gcloud("monitoring dashboards delete", "${dashboard}", p, "--quiet"),
            kind=Kind.DELETE,
            probe=_by_display_name("monitoring dashboards list", s, title),
            fact="dashboard",
        )
    )
    return steps


def env_flag(env: dict[str, str]) -> str:
    """``--set-env-vars``, with gcloud's ``^DELIM^`` escape when a value holds a comma."""
    pairs = [f"{k}={v}" for k, v in env.items()]
    if not any("," in pair for pair in pairs):
        return "--set-env-vars=" + ",".join(pairs)
    for delimiter in ("|", "@", "~", ";", "#"):
        if not any(delimiter in pair for pair in pairs):
            return f"--set-env-vars=^{delimiter}^" + delimiter.join(pairs)
    raise ValueError("no delimiter is free of the environment's values")


def function_deploy(settings: DeploySettings, spec: FunctionSpec, source_root: str) -> tuple[str, ...]:
    """``gcloud functions deploy``: creates the function, or updates it to these settings."""
    s = settings
    config = s.function(spec.key)
    argv = gcloud(
        "functions deploy",
        s.function_name(spec.key),
        "--gen2",
        f"--project={s.project}",
        f"--region={s.region}",
        f"--runtime={RUNTIME}",
        f"--source={source_root}/{spec.key}",
        f"--entry-point={spec.entry_point}",
        f"--trigger-topic={getattr(s.topics, spec.trigger)}",
        "--retry",
        f"--service-account={s.account_email(spec.key)}",
        f"--trigger-service-account={s.account_email(s.trigger_account_key)}",
        f"--memory={config.memory}",
        *((f"--cpu={config.cpu}",) if config.cpu else ()),  # none: derived from memory
        f"--timeout={config.timeout_seconds}s",
        f"--max-instances={config.max_instances}",
        # Always given, so that a redeploy restores it (gcloud keeps an unflagged value as it is).
        f"--concurrency={config.concurrency}",
        # Only Eventarc and Pub/Sub in this project may call it, and only as the trigger account.
        "--ingress-settings=internal-only",
        "--no-allow-unauthenticated",
        env_flag(s.function_env(spec.key)),
        f"--update-labels={LABEL}",
    )
    if s.build_service_account:
        argv += (f"--build-service-account=projects/{s.project}/serviceAccounts/{s.build_service_account}",)
    return (*argv, "--quiet")


# -- the teardown plan ------------------------------------------------------------------------------


def teardown_steps(settings: DeploySettings, *, delete_credentials: bool = False) -> list[Step]:
    """Remove what :func:`deploy_steps` made; leave what it found.

    The ``gcr`` topic goes only if the deployment created it (it carries our label), and
    the Dataloop credentials secret only when asked: it holds a credential you made.
    Monitoring goes first: the alert policies (a channel they name cannot be deleted), the
    email channels deploy made (found by their display name), the log-based metrics and the
    dashboard; channels named in the settings stay.
    Managed integrations (their secrets, puller accounts and Dataloop integrations) are
    not touched: deprovision them first, while the functions still run. The lock secrets of
    the settings' canary services go (provisioning made them; they hold no credential, only
    a lease and the image to restore), each only if it carries the lock label. Bindings are
    revoked before the accounts are deleted, or they would linger as ``deleted:`` members.
    Custom roles stay (bound to no one, they grant nothing): IAM keeps a deleted custom
    role's id unusable for up to 37 days, so a redeployment within that time could not
    create it again (IAM documentation, "Create and manage custom roles": a deleted role can
    be undeleted for 7 days, and its id is reusable only once its permanent deletion, up to
    30 days more, has ended).
    """
    s = settings
    p = f"--project={s.project}"
    region = f"--region={s.region}"
    label_key, label_value = DEPLOYED_BY_LABEL

    def delete(
        why: str, describe: str, remove: str, name: str, *args: str, fmt: str = "value(name)", expect: str | None = None
    ) -> Step:
        return Step(
            why,
            gcloud(remove, name, *args, p, "--quiet"),
            kind=Kind.DELETE,
            probe=gcloud(describe, name, *args, p, f"--format={fmt}"),
            expect=expect,
        )

    job = s.scheduler_job
    steps = [
        *_monitoring_teardown(s),
        delete(
            f"delete scheduler job {job}",
            "scheduler jobs describe",
            "scheduler jobs delete",
            job,
            f"--location={s.region}",
        ),
        *(
            delete(
                f"delete function {s.function_name(spec.key)} (its Eventarc trigger and subscription go with it)",
                "functions describe",
                "functions delete",
                s.function_name(spec.key),
                region,
                "--gen2",
            )
            for spec in FUNCTIONS
        ),
        *(
            delete(
                f"delete subscription {s.gcr_subscription(project)} (pushes of {project} to on_push) if ours",
                "pubsub subscriptions describe",
                "pubsub subscriptions delete",
                s.gcr_subscription(project),
                fmt=f"value(labels.{label_key})",
                expect=label_value,
            )
            for project in s.other_gcr_projects
        ),
        delete(
            f"delete subscription {s.dead_letter_subscription} (dead-lettered events are lost with it)",
            "pubsub subscriptions describe",
            "pubsub subscriptions delete",
            s.dead_letter_subscription,
        ),
    ]
    for attribute, topic in s.topics.all().items():
        if attribute == "gcr":
            steps.append(
                delete(
                    f"delete topic {topic} if the deployment created it (it carries our label)",
                    "pubsub topics describe",
                    "pubsub topics delete",
                    topic,
                    fmt=f"value(labels.{label_key})",
                    expect=label_value,
                )
            )
        else:
            steps.append(delete(f"delete topic {topic}", "pubsub topics describe", "pubsub topics delete", topic))
    for project in s.other_gcr_projects:
        steps.append(
            Step(
                f"delete topic {s.topics.gcr} in {project} if the deployment created it (it carries our label)",
                gcloud("pubsub topics delete", s.topics.gcr, f"--project={project}", "--quiet"),
                kind=Kind.DELETE,
                probe=gcloud(
                    "pubsub topics describe",
                    s.topics.gcr,
                    f"--project={project}",
                    f"--format=value(labels.{label_key})",
                ),
                expect=label_value,
            )
        )
    for key, grants in function_grants(s).items():
        steps += [
            Step(f"revoke {grant.role} of {s.account_id(key)} on {grant.resource}", grant.remove(), missing_ok=True)
            for grant in grants
            # topic grants went with the topics; the secret's go with it when it is deleted
            if grant.kind in ("project", "service-account", "repository")
            or (grant.kind == "secret" and not delete_credentials)
        ]
    for key in [spec.key for spec in FUNCTIONS] + [s.trigger_account_key]:
        email = s.account_email(key)
        steps.append(
            delete(
                f"delete service account {email}",
                "iam service-accounts describe",
                "iam service-accounts delete",
                email,
                fmt="value(email)",
            )
        )
    lock_key, lock_value = LOCK_LABEL
    steps += [
        delete(
            f"delete secret {lock_secret_id(service)}, the lock of canary service {service} and the runner image "
            "recorded to restore (provisioning made it), if it carries the lock label",
            "secrets describe",
            "secrets delete",
            lock_secret_id(service),
            fmt=f"value(labels.{lock_key})",
            expect=lock_value,
        )
        for service in s.canary_services
    ]
    if delete_credentials:
        secret = s.dataloop_credentials_secret
        steps.append(
            delete(
                f"delete secret {secret} and the Dataloop credentials in it",
                "secrets describe",
                "secrets delete",
                secret,
            )
        )
    return steps
