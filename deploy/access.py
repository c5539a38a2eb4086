"""Who may do what: every role the deployment grants, on which resource, and why.

Least privilege, concretely: each function runs as its own service account; Secret
Manager roles are narrowed by IAM conditions to the managed integrations' secrets
(``dataloop-gar-*``; conditions name secrets by project *number*), and ``on_push`` may
read and update the canary services' lock secrets (``dataloop-gar_canary-*``) and the
managed secrets (to record a changed push verdict) through a custom role with exactly
those two permissions, bound once under each name condition (no predefined role grants
update short of admin); the Dataloop credentials are readable as one secret, not by a project-wide
role; key administration is granted on each existing puller account, and project-wide
only in the projects where provisioning creates accounts at run time (IAM conditions do
not apply to service accounts, so nothing narrower exists for an account that does not
exist yet). The README's table is generated from this module (``deploy.py --roles``), so
the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploy.settings import FUNCTIONS, DeploySettings, FunctionSpec
from shared.model.integrations import SECRET_PREFIX
from shared.workflows.canary_lock import LOCK_PREFIX

SECRET_MANAGER_AGENT = "service-${project_number}@gcp-sa-secretmanager.iam.gserviceaccount.com"
PUBSUB_AGENT = "service-${project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"
PROJECT_RESOURCE_TYPE = "cloudresourcemanager.googleapis.com/Project"


@dataclass(frozen=True)
class Condition:
    title: str
    expression: str
    description: str

    def flag(self) -> str:
        return f"--condition=expression={self.expression},title={self.title},description={self.description}"


@dataclass(frozen=True)
class Grant:
    """One role for one principal on one resource, with the reason the README shows."""

    member: str
    role: str
    kind: str  # project | topic | subscription | secret | service-account | repository | function
    resource: str
    why: str
    condition: Condition | None = None
    location: str = ""  # repositories and functions
    project: str = ""  # the project of the resource, where the command needs it

    def where(self) -> str:
        """How the README names the resource the role is granted on."""
        label = {
            "project": f"project `{self.resource}`",
            "topic": f"topic `{self.resource}`",
            "subscription": f"subscription `{self.resource}`",
            "secret": f"secret `{self.resource}`",
            "service-account": f"service account `{self.resource}`",
            "repository": f"repository `{self.project}/{self.location}/{self.resource}`",
            "function": f"function `{self.resource}`",
        }[self.kind]
        return f"{label}, if {self.condition.title}" if self.condition else label

    def _target(self, verb: str) -> tuple[str, ...]:
        project = (f"--project={self.project}",) if self.project else ()
        if self.kind == "project":
            return ("projects", verb, self.resource)
        if self.kind == "topic":
            return ("pubsub", "topics", verb, self.resource, *project)
        if self.kind == "subscription":
            return ("pubsub", "subscriptions", verb, self.resource, *project)
        if self.kind == "secret":
            return ("secrets", verb, self.resource, *project)
        if self.kind == "service-account":
            return ("iam", "service-accounts", verb, self.resource, *project)
        if self.kind == "repository":
            return ("artifacts", "repositories", verb, self.resource, f"--location={self.location}", *project)
        if self.kind == "function":
            invoker_verb = verb.replace("iam-policy-binding", "invoker-policy-binding")
            return ("functions", invoker_verb, self.resource, f"--region={self.location}", *project)
        raise ValueError(self.kind)

    def add(self) -> tuple[str, ...]:
        argv = (*self._target("add-iam-policy-binding"), f"--member={self.member}")
        if self.kind != "function":
            argv += (f"--role={self.role}",)
        if self.kind == "project":
            # Without an explicit condition, gcloud refuses (non-interactively) to touch a
            # policy that already holds conditional bindings.
            argv += (self.condition.flag() if self.condition else "--condition=None",)
        elif self.condition:
            argv += (self.condition.flag(),)
        return (*argv, "--quiet")

    def remove(self) -> tuple[str, ...]:
        argv = (*self._target("remove-iam-policy-binding"), f"--member={self.member}")
        if self.kind != "function":
            argv += (f"--role={self.role}",)
        if self.kind == "project":
            argv += ("--all",)  # every condition this role was granted under
        return (*argv, "--quiet")


@dataclass(frozen=True)
class CustomRole:
    """A project-level custom role the deployment defines, for a grant no predefined role fits.

    Role ids are letters, digits, ``_`` and ``.``, at most 64 (IAM, "Create and manage
    custom roles"), so the deployment prefix's hyphens become underscores.
    """

    role_id: str
    title: str
    description: str
    permissions: tuple[str, ...]

    def name(self, project: str) -> str:
        return f"projects/{project}/roles/{self.role_id}"


def canary_lock_role(settings: DeploySettings) -> CustomRole:
    """Read and update a secret's metadata: GetSecret needs ``secretmanager.secrets.get``, UpdateSecret
    ``secretmanager.secrets.update`` (Secret Manager, "Access control with IAM").

    Named for its first use; ``on_push`` also holds it on the managed secrets, to record a
    changed push verdict. One role, bound twice under two name conditions, rather than a
    second role with the same permissions (a custom role's id outlives its deletion)."""
    return CustomRole(
        role_id=f"{settings.prefix.replace('-', '_')}_canary_lock",
        title=f"{settings.prefix} canary lock",
        description="on_push's metadata updates: a canary lock's lease, a managed integration's push verdict",
        permissions=("secretmanager.secrets.get", "secretmanager.secrets.update"),
    )


def custom_roles(settings: DeploySettings) -> list[CustomRole]:
    return [canary_lock_role(settings)]


def _sa(email: str) -> str:
    return f"serviceAccount:{email}"


def managed_secrets() -> Condition:
    """Secret Manager names resources by project *number* in IAM conditions (a fact, looked up)."""
    number = "${project_number}"
    return Condition(
        title="managed secrets only",
        expression=f'resource.name.startsWith("projects/{number}/secrets/{SECRET_PREFIX}")',
        description=f"secrets named {SECRET_PREFIX}* (one per managed integration)",
    )


def project_or_managed_secrets() -> Condition:
    """Secrets are created and listed through the project; the rest only on managed secrets."""
    number = "${project_number}"
    return Condition(
        title="project-level calls or managed secrets",
        expression=(
            f'resource.type == "{PROJECT_RESOURCE_TYPE}" || '
            f'resource.name.startsWith("projects/{number}/secrets/{SECRET_PREFIX}")'
        ),
        description=f"list/create are checked on the project; everything else only on {SECRET_PREFIX}* secrets",
    )


def canary_locks() -> Condition:
    return Condition(
        title="canary lock secrets only",
        expression=f'resource.name.startsWith("projects/${{project_number}}/secrets/{LOCK_PREFIX}")',
        description=f"secrets named {LOCK_PREFIX}* (one per canary service; created by provisioning)",
    )


def project_level_only() -> Condition:
    return Condition(
        title="project-level calls only",
        expression=f'resource.type == "{PROJECT_RESOURCE_TYPE}"',
        description="listing secrets is checked on the project; no per-secret access",
    )


def function_grants(settings: DeploySettings) -> dict[str, list[Grant]]:
    """Every role each function's service account receives, with the reason for it."""
    s = settings
    p = s.project
    grants: dict[str, list[Grant]] = {}
    credentials_why = "read the Dataloop API credentials (the latest version of this one secret)"

    def results(key: str) -> Grant:
        return Grant(
            _sa(s.account_email(key)),
            "roles/pubsub.publisher",
            "topic",
            s.topics.results,
            "publish one result per event",
            project=p,
        )

    def credentials(key: str, why: str = credentials_why) -> Grant:
        return Grant(
            _sa(s.account_email(key)),
            "roles/secretmanager.secretAccessor",
            "secret",
            s.dataloop_credentials_secret,
            why,
            project=p,
        )

    def key_admin(key: str, why_project: str) -> list[Grant]:
        member = _sa(s.account_email(key))
        out = [
            Grant(
                member,
                "roles/iam.serviceAccountKeyAdmin",
                "service-account",
                email,
                "create, list and delete the keys of this existing puller account",
                project=email.split("@", 1)[1].removesuffix(".iam.gserviceaccount.com"),
            )
            for email in s.exact_service_accounts
        ]
        out += [
            Grant(member, "roles/iam.serviceAccountKeyAdmin", "project", project, why_project)
            for project in s.key_admin_projects
        ]
        return out

    on_push = _sa(s.account_email("on_push"))
    grants["on_push"] = [
        Grant(
            on_push,
            "roles/secretmanager.secretAccessor",
            "project",
            p,
            "read the `current` key of a managed integration",
            managed_secrets(),
        ),
        Grant(
            on_push,
            "roles/secretmanager.viewer",
            "project",
            p,
            "list the managed integrations (labels and annotations come with the list)",
            project_or_managed_secrets(),
        ),
        Grant(
            on_push,
            canary_lock_role(s).name(p),
            "project",
            p,
            "canary tier only: hold a canary service's lease and record its original image (annotations of "
            "its lock secret), so two pushes never test on one service at once",
            canary_locks(),
        ),
        Grant(
            on_push,
            canary_lock_role(s).name(p),
            "project",
            p,
            "record an integration's push verdict (annotations of its secret), only when it changes",
            managed_secrets(),
        ),
        credentials("on_push", "canary tier only: the Dataloop API credentials"),
        results("on_push"),
    ]

    requests = _sa(s.account_email("requests"))
    grants["requests"] = [
        Grant(
            requests,
            "roles/secretmanager.admin",
            "project",
            p,
            "create, update, version, alias and delete the managed integrations' secrets "
            "(create and list are checked on the project, hence the project-level clause)",
            project_or_managed_secrets(),
        ),
        credentials("requests"),
        results("requests"),
    ]
    for project in s.account_projects:
        grants["requests"] += [
            Grant(
                requests,
                "roles/iam.serviceAccountCreator",
                "project",
                project,
                "create puller service accounts (`service_account: {create: …}`)",
            ),
            Grant(
                requests,
                "roles/iam.serviceAccountDeleter",
                "project",
                project,
                "delete, on deprovision, the accounts provisioning created",
            ),
        ]
    grants["requests"] += key_admin(
        "requests",
        "create the first key of an account made at run time (or of any account of a project whose every "
        "account is adoptable); IAM conditions cannot narrow roles on service accounts, so this is project-wide, "
        "and the access policy the function enforces is the boundary",
    )
    for repository in s.repositories:
        grants["requests"].append(
            Grant(
                requests,
                "roles/artifactregistry.admin",
                "repository",
                repository.repository,
                "read the repository and grant the puller `roles/artifactregistry.reader` on it "
                "(setIamPolicy on a repository is full control of it, whichever role carries it)",
                location=repository.location,
                project=repository.project,
            )
        )

    rotate = _sa(s.account_email("rotate"))
    grants["rotate"] = [
        Grant(
            rotate,
            "roles/secretmanager.admin",
            "project",
            p,
            "add, alias, disable and destroy key versions; take the rotation lease (annotations)",
            managed_secrets(),
        ),
        Grant(
            rotate,
            "roles/secretmanager.viewer",
            "project",
            p,
            "list the managed integrations for the sweep",
            project_level_only(),
        ),
        credentials("rotate", "put the new key into the Dataloop integration"),
        Grant(
            rotate,
            "roles/pubsub.publisher",
            "topic",
            s.topics.rotation,
            "the sweep publishes one `rotate` message per integration that is due",
            project=p,
        ),
        results("rotate"),
    ]
    grants["rotate"] += key_admin("rotate", "rotate the keys of accounts provisioning created at run time")
    return grants


def requester_grants(settings: DeploySettings) -> list[Grant]:
    """Who may publish requests: only the principals the settings name (``[access] requesters``).

    Publishing a request is what asks the system to mint a key and hand it to a Dataloop
    organisation, so this grant is the front door of the trust boundary; the access policy
    then bounds what even a legitimate requester may ask for.
    """
    return [
        Grant(
            member,
            "roles/pubsub.publisher",
            "topic",
            settings.topics.requests,
            "send provisioning requests (provision, deprovision, rotate, test, status) within the access policy",
            project=settings.project,
        )
        for member in settings.requesters
    ]


def trigger_grants(settings: DeploySettings) -> list[Grant]:
    trigger = _sa(settings.account_email(settings.trigger_account_key))
    why = "Eventarc pushes each Pub/Sub message to the function as this account"
    others = ", ".join(settings.other_gcr_projects)
    return [
        Grant(
            trigger,
            "roles/run.invoker",
            "function",
            settings.function_name(spec.key),
            f"{why}; so do the subscriptions to the gcr topics of {others}"
            if others and spec.key == "on_push"
            else why,
            location=settings.region,
            project=settings.project,
        )
        for spec in FUNCTIONS
    ]


def agent_grants(settings: DeploySettings) -> list[Grant]:
    p = settings.project
    return [
        Grant(
            _sa(SECRET_MANAGER_AGENT),
            "roles/pubsub.publisher",
            "topic",
            settings.topics.rotation,
            "Secret Manager sends SECRET_ROTATE of the managed secrets here",
            project=p,
        ),
        Grant(
            _sa(PUBSUB_AGENT),
            "roles/pubsub.publisher",
            "topic",
            settings.topics.dead_letter,
            "Pub/Sub forwards undeliverable events here",
            project=p,
        ),
    ]


def subscription_grant(spec: FunctionSpec) -> Grant:
    return Grant(
        _sa(PUBSUB_AGENT),
        "roles/pubsub.subscriber",
        "subscription",
        "${subscription_" + spec.key + "}",
        "Pub/Sub acknowledges what it dead-letters from the trigger's subscription",
    )


def gcr_subscription_grant(settings: DeploySettings, project: str) -> Grant:
    """Dead-lettering from the push subscription that brings ``project``'s pushes to on_push."""
    return Grant(
        _sa(PUBSUB_AGENT),
        "roles/pubsub.subscriber",
        "subscription",
        settings.gcr_subscription(project),
        f"Pub/Sub acknowledges what it dead-letters from the subscription to {project}'s gcr topic",
        project=settings.project,
    )


def roles_table(settings: DeploySettings) -> str:
    """Markdown: each service account, its roles, where each is granted, and why."""
    lines = [
        "| service account | role | granted on | why |",
        "|---|---|---|---|",
    ]
    for key, grants in function_grants(settings).items():
        for grant in grants:
            lines.append(f"| `{settings.account_id(key)}` | `{grant.role}` | {grant.where()} | {grant.why} |")
    for grant in trigger_grants(settings):
        lines.append(
            f"| `{settings.account_id(settings.trigger_account_key)}` | `{grant.role}` | {grant.where()} | {grant.why} |"
        )
    for grant in requester_grants(settings):
        lines.append(f"| `{grant.member}` (requester) | `{grant.role}` | {grant.where()} | {grant.why} |")
    for grant in agent_grants(settings):
        agent = grant.member.split(":", 1)[1].replace("${project_number}", "PROJECT_NUMBER")
        lines.append(f"| `{agent}` (service agent) | `{grant.role}` | {grant.where()} | {grant.why} |")
    lines.append(
        "| `service-PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com` (service agent) | `roles/pubsub.subscriber` "
        "| each trigger's Eventarc subscription | Pub/Sub acknowledges what it dead-letters |"
    )
    for project in settings.other_gcr_projects:
        grant = gcr_subscription_grant(settings, project)
        lines.append(
            "| `service-PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com` (service agent) | `roles/pubsub.subscriber` "
            f"| {grant.where()} | {grant.why} |"
        )
    return "\n".join(lines)
