"""Who may ask for what: the access policy a deployment sets and every function enforces.

The functions hold real power: ``requests`` and ``rotate`` may create service-account keys
and hand them to a Dataloop organisation. IAM grants alone cannot bound that power (key
administration on accounts created at run time has to be project-wide, and IAM conditions
do not apply to service accounts), so the boundary is drawn here, in code, from settings
the operator wrote at deploy time (``[access]`` in the deploy settings, passed to every
function as the JSON of ``ACCESS_POLICY``).

Two layers:

- **The policy**: the Dataloop organisations keys may go to, the repositories readers may
  be granted on, the projects where accounts may be created (with the account-id prefix
  that marks them as made by this system), and the existing accounts that may be adopted
  (exact emails, or ``*@PROJECT.iam.gserviceaccount.com`` for every user-managed account of
  a project). A request outside it is rejected with code ``not-allowed`` before any
  remote call; a record read back from Secret Manager whose account or organisation falls
  outside it is refused the same way, because annotations are editable by anyone with
  write access to the secret.
- **Rules no policy can lift**: the deployment's own accounts, Google's default compute and
  App Engine accounts, Google-managed service agents (any account not of the form
  ``ID@PROJECT.iam.gserviceaccount.com``), and accounts in projects the policy does not
  list are never adopted, keyed or deleted.

An empty policy (no ``ACCESS_POLICY``) allows nothing that mints or sends a key: a function
deployed without one fails closed, with a message saying which setting is missing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from shared.core import json_text
from shared.core.errors import ConfigError, RejectedMessage
from shared.model.request import INTEGRATION_NAME, SERVICE_ID

#: Accounts created by provisioning must have an id starting with this, and the deployment
#: refuses it for its own accounts: with the account's description (``account_description``)
#: it is the mark of "made by this system for that integration", which nobody can give an
#: account of the deployment by choosing a display name.
DEFAULT_CREATED_ACCOUNT_PREFIX = "dlgar-"
#: The one shape of a user-managed service account; everything else is Google's.
USER_MANAGED_ACCOUNT = re.compile(
    r"(?P<id>[a-z][a-z0-9-]{4,28}[a-z0-9])@(?P<project>[a-z][a-z0-9-]{4,28}[a-z0-9])\.iam\.gserviceaccount\.com"
)
#: Service agents look user-managed (``service-NUMBER@gcp-sa-SERVICE.iam.gserviceaccount.com``);
#: their "project" is Google's per-service domain, never a project of the customer's.
_SERVICE_AGENT = re.compile(r"(?:service-[0-9]+@.*|.*@gcp-sa-[a-z0-9-]+\.iam\.gserviceaccount\.com)")
_PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
ORG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_REPOSITORY = re.compile(
    r"projects/(?P<project>[a-z][a-z0-9-]{4,28}[a-z0-9])/locations/(?P<location>[a-z][a-z0-9-]*[a-z0-9])"
    r"/repositories/(?P<repository>[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?)"
)
#: An adoptable-account pattern: an exact email, or every user-managed account of one project.
ADOPTABLE_ACCOUNT = re.compile(
    r"(?:[a-z][a-z0-9-]{4,28}[a-z0-9]|\*)@(?P<project>[a-z][a-z0-9-]{4,28}[a-z0-9])\.iam\.gserviceaccount\.com"
)
CREATED_ACCOUNT_PREFIX = re.compile(r"[a-z][a-z0-9-]{1,14}-")

NOT_ALLOWED = "not-allowed"
PROJECT_NOT_WIRED = "project-not-wired"


class NotAllowed(RejectedMessage):
    """A request (or a record) asks for something the access policy does not allow."""

    code = NOT_ALLOWED

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        super().__init__(f"{field}: {reason}")


class ProjectNotWired(NotAllowed):
    """A repository whose project's ``gcr`` topic the deployment does not deliver to ``on_push``.

    Artifact Registry notifies only its own project's ``gcr`` topic (docs/external-apis.md
    §1.1): an integration there would be provisioned and rotated while none of its pushes is
    ever tested, so it is refused with a code of its own, which says what to change.
    """

    code = PROJECT_NOT_WIRED


def account_description(integration_name: str) -> str:
    """The description marking an account provisioning created for ``integration_name``.

    Read back before an account is reused or deleted: together with the id prefix it
    says the account was made by this system for this very integration.
    """
    return f"{_DESCRIPTION_HEAD}{integration_name}{_DESCRIPTION_TAIL}"


_DESCRIPTION_HEAD = "Created by dataloop-gar for Dataloop integration "
_DESCRIPTION_TAIL = "; deleted when it is deprovisioned."


def created_for(description: str | None) -> str | None:
    """The integration an account was created for, read from its description (None: not ours).

    The description is read back from IAM, so it is parsed strictly: only the exact text
    :func:`account_description` writes counts.
    """
    text = description or ""
    if not (text.startswith(_DESCRIPTION_HEAD) and text.endswith(_DESCRIPTION_TAIL)):
        return None
    name = text[len(_DESCRIPTION_HEAD) : len(text) - len(_DESCRIPTION_TAIL)]
    return name if INTEGRATION_NAME.fullmatch(name) else None


@dataclass(frozen=True)
class AccessPolicy:
    """What requests may target. Build it with :meth:`from_json`; see the module docstring."""

    org_ids: frozenset[str] = frozenset()
    repositories: frozenset[str] = frozenset()  # projects/P/locations/L/repositories/R
    account_projects: frozenset[str] = frozenset()
    service_accounts: tuple[str, ...] = ()  # exact emails or *@PROJECT.iam.gserviceaccount.com
    created_account_prefix: str = DEFAULT_CREATED_ACCOUNT_PREFIX
    deployment_accounts: frozenset[str] = frozenset()
    canary_services: frozenset[str] = frozenset()  # Dataloop service ids set aside as canaries
    #: Projects whose ``gcr`` topic reaches ``on_push``; None (a hand-written policy): those of ``repositories``.
    gcr_projects: frozenset[str] | None = None
    configured: bool = True

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_json(cls, text: str) -> AccessPolicy:
        """Parse ``ACCESS_POLICY``; empty text is the closed policy (nothing allowed).

        Raises:
            ConfigError: listing every problem, so a function with a bad policy refuses to
                start with one message instead of misjudging requests.
        """
        if not text.strip():
            return cls(configured=False)
        try:
            data = json_text.loads(text)
        except ValueError as exc:
            raise ConfigError([f"ACCESS_POLICY: not valid JSON ({exc})"]) from None
        if not isinstance(data, Mapping):
            raise ConfigError(["ACCESS_POLICY: must be a JSON object"])
        problems: list[str] = []
        known = {
            "org_ids",
            "repositories",
            "account_projects",
            "service_accounts",
            "created_account_prefix",
            "deployment_accounts",
            "canary_services",
            "gcr_projects",
        }
        problems += [f"ACCESS_POLICY.{key}: unknown setting" for key in sorted(set(data) - known)]

        def texts(key: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problems.append(f"ACCESS_POLICY.{key}: must be a list of strings")
                return ()
            bad = [v for v in value if not pattern.fullmatch(v)]
            problems.extend(f"ACCESS_POLICY.{key}: {v[:80]!r} does not match {pattern.pattern}" for v in bad)
            return tuple(dict.fromkeys(v for v in value if v not in bad))

        prefix = data.get("created_account_prefix", DEFAULT_CREATED_ACCOUNT_PREFIX)
        if not isinstance(prefix, str) or not CREATED_ACCOUNT_PREFIX.fullmatch(prefix):
            problems.append(f"ACCESS_POLICY.created_account_prefix: must match {CREATED_ACCOUNT_PREFIX.pattern}")
            prefix = DEFAULT_CREATED_ACCOUNT_PREFIX
        policy = cls(
            org_ids=frozenset(texts("org_ids", ORG_ID)),
            repositories=frozenset(texts("repositories", _REPOSITORY)),
            account_projects=frozenset(texts("account_projects", _PROJECT)),
            service_accounts=texts("service_accounts", ADOPTABLE_ACCOUNT),
            created_account_prefix=prefix,
            deployment_accounts=frozenset(texts("deployment_accounts", USER_MANAGED_ACCOUNT)),
            canary_services=frozenset(texts("canary_services", SERVICE_ID)),
            gcr_projects=frozenset(texts("gcr_projects", _PROJECT)) if "gcr_projects" in data else None,
        )
        clash = sorted(a for a in policy.deployment_accounts if a.startswith(prefix))
        if clash:
            problems.append(
                f"ACCESS_POLICY.deployment_accounts: {', '.join(clash)} start with the created-account prefix {prefix!r}"
            )
        if problems:
            raise ConfigError(problems)
        return policy

    def to_json(self) -> str:
        """The ``ACCESS_POLICY`` text for this policy (what deploy writes)."""
        document: dict[str, Any] = {
            "org_ids": sorted(self.org_ids),
            "repositories": sorted(self.repositories),
            "account_projects": sorted(self.account_projects),
            "service_accounts": list(self.service_accounts),
            "created_account_prefix": self.created_account_prefix,
            "deployment_accounts": sorted(self.deployment_accounts),
            "canary_services": sorted(self.canary_services),
        }
        if self.gcr_projects is not None:
            document["gcr_projects"] = sorted(self.gcr_projects)
        return json.dumps(document, separators=(",", ":"))

    # -- the projects the policy lists ----------------------------------------------------------
    @property
    def projects(self) -> frozenset[str]:
        """Every project the policy names: accounts outside these are never touched."""
        found = set(self.account_projects)
        found |= {_project_of_pattern(p) for p in self.service_accounts}
        found |= {m["project"] for r in self.repositories if (m := _REPOSITORY.fullmatch(r))}
        return frozenset(found)

    @property
    def wired_projects(self) -> frozenset[str]:
        """Projects whose pushes reach ``on_push``: where an integration's pushes are tested."""
        if self.gcr_projects is not None:
            return self.gcr_projects
        return frozenset(m["project"] for r in self.repositories if (m := _REPOSITORY.fullmatch(r)))

    # -- checks -----------------------------------------------------------------------------
    def _closed(self, field: str) -> NotAllowed | None:
        if self.configured:
            return None
        return NotAllowed(
            field,
            "no access policy is configured (ACCESS_POLICY is empty), so nothing may be provisioned or keyed; "
            "set [access] in the deploy settings and deploy again",
        )

    def check_org(self, org_id: str, field: str = "/org_id") -> None:
        """Keys may be handed only to the Dataloop organisations the policy names."""
        closed = self._closed(field)
        if closed:
            raise closed
        if org_id not in self.org_ids:
            raise NotAllowed(
                field,
                "this Dataloop organization is not in the deployment's access policy "
                "([access] dataloop_org_ids); ask the operator to add it",
            )

    def check_repository(self, project: str, location: str, repository: str, field: str = "/repositories") -> None:
        closed = self._closed(field)
        if closed:
            raise closed
        path = f"projects/{project}/locations/{location}/repositories/{repository}"
        if project not in self.wired_projects:
            raise ProjectNotWired(
                field,
                f"repository {path} is in project {project}, whose gcr topic this deployment does not deliver to "
                "on_push, so no push there would ever be tested; ask the operator to add a repository of that "
                "project to [access] repositories and deploy again (deploy wires each repository's project)",
            )
        if path not in self.repositories:
            raise NotAllowed(
                field,
                f"repository {path} is not in the deployment's access policy ([access] repositories); "
                "ask the operator to add it",
            )

    def check_account(self, email: str, *, create: bool, field: str = "/service_account") -> None:
        """Whether ``email`` may be created (``create``) or adopted, keyed and deleted.

        Raises:
            NotAllowed: naming the rule that refuses it.
        """
        closed = self._closed(field)
        if closed:
            raise closed
        refusal = self.refusal_of_account(email, create=create)
        if refusal:
            raise NotAllowed(field, refusal)

    def refusal_of_account(self, email: str, *, create: bool) -> str | None:
        """Why ``email`` may not be used (None when it may): the fixed rules, then the policy."""
        fixed = never_touched(email, self.deployment_accounts)
        if fixed:
            return fixed
        match = USER_MANAGED_ACCOUNT.fullmatch(email)
        assert match is not None  # never_touched refuses every other shape
        account_id, project = match["id"], match["project"]
        if project not in self.projects:
            return f"service account {email} is in project {project}, which the access policy does not list"
        if create:
            if project not in self.account_projects:
                return f"accounts may not be created in project {project} ([access] account_projects does not list it)"
            if not account_id.startswith(self.created_account_prefix):
                return (
                    f"an account to create must have an id starting with {self.created_account_prefix!r} "
                    "(the mark of accounts this system made)"
                )
            return None
        if self.may_adopt(email):
            return None
        if account_id.startswith(self.created_account_prefix) and project in self.account_projects:
            return None  # an account this system creates, named by email (a second integration sharing it)
        return (
            f"service account {email} is not in the access policy's adoptable accounts "
            "([access] service_accounts); ask the operator to add it"
        )

    def may_adopt(self, email: str) -> bool:
        return any(fnmatchcase(email, pattern) for pattern in self.service_accounts)

    def is_created_account_id(self, account_id: str) -> bool:
        return account_id.startswith(self.created_account_prefix)

    def check_provision(self, request: Any) -> None:
        """Every target of a provision request, before anything is called.

        Raises:
            NotAllowed: for the first field the policy refuses.
        """
        self.check_org(request.org_id)
        for index, repository in enumerate(request.repositories):
            self.check_repository(request.project, request.location, repository, field=f"/repositories/{index}")
        choice = request.service_account
        field = "/service_account/create" if choice.create else "/service_account/email"
        self.check_account(choice.email_in(request.project), create=bool(choice.create), field=field)
        canary = getattr(request, "canary", None)
        if canary is not None and canary.service_id:
            self.check_canary_service(canary.service_id)

    def check_canary_service(self, service_id: str, field: str = "/canary/service_id") -> None:
        """The platform tier points a service at a test image and restarts it, so only
        services the operator set aside for it may be named.

        Raises:
            NotAllowed: the service is not one of ``canary_services``.
        """
        if service_id not in self.canary_services:
            raise NotAllowed(
                field,
                f"Dataloop service {service_id} is not one of the access policy's canary services "
                "([access] canary_services): the platform-tier test replaces a canary's image and restarts it",
            )

    def check_record(self, *, org_id: str | None, service_account: str | None, secret_id: str) -> None:
        """A managed record's targets, as read back from Secret Manager (untrusted).

        Raises:
            NotAllowed: the record names an organisation or account outside the policy.
        """
        where = f"secret {secret_id}"
        closed = self._closed(where)
        if closed:
            raise closed
        if not org_id or org_id not in self.org_ids:
            raise NotAllowed(
                f"{where} annotation dataloop-org",
                "names a Dataloop organization outside the access policy; nothing is sent there",
            )
        refusal = self.refusal_of_account(service_account or "", create=False)
        if refusal:
            raise NotAllowed(f"{where} annotation service-account", refusal)


def _project_of_pattern(pattern: str) -> str:
    match = ADOPTABLE_ACCOUNT.fullmatch(pattern)
    assert match is not None  # the policy holds only patterns that match
    return match["project"]


def never_touched(email: str, deployment_accounts: Iterable[str] = ()) -> str | None:
    """Why no policy may let this system adopt, key or delete ``email`` (None if none applies).

    Google's own accounts do not have the user-managed shape: default compute
    (``NUMBER-compute@developer.gserviceaccount.com``), App Engine (``PROJECT@appspot…``),
    service agents (``service-NUMBER@gcp-sa-….iam…``, ``NUMBER@cloudservices…``, …).
    """
    match = USER_MANAGED_ACCOUNT.fullmatch(email or "")
    if match is None or _SERVICE_AGENT.fullmatch(email):
        return (
            "only user-managed service accounts (ID@PROJECT.iam.gserviceaccount.com) may be used; "
            "default compute and App Engine accounts and Google's service agents never are"
        )
    if email in set(deployment_accounts):
        return "this is one of the deployment's own service accounts, which are never adopted, keyed or deleted"
    return None
