"""Who may call which Secret Manager method, as the deployment's role bindings decide it.

Apart from the service because tests and fixtures build these rules from the
deployment's grants without needing a running stand-in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

LIST_PERMISSION = "secretmanager.secrets.list"
CREATE_PERMISSION = "secretmanager.secrets.create"

#: The permission each method checks and what it is checked on: the project (``parent``),
#: the secret, or the version the path names (the REST reference's "Authorization requires
#: the following IAM permission on the specified resource" line of each method).
PERMISSIONS: dict[str, tuple[str, str]] = {
    "create_secret": (CREATE_PERMISSION, "project"),
    "list_secrets": (LIST_PERMISSION, "project"),
    "get_secret": ("secretmanager.secrets.get", "secret"),
    "update_secret": ("secretmanager.secrets.update", "secret"),
    "delete_secret": ("secretmanager.secrets.delete", "secret"),
    "add_secret_version": ("secretmanager.versions.add", "secret"),
    "list_secret_versions": ("secretmanager.versions.list", "secret"),
    "get_secret_version": ("secretmanager.versions.get", "version"),
    "access_secret_version": ("secretmanager.versions.access", "version"),
    "disable_secret_version": ("secretmanager.versions.disable", "version"),
    "enable_secret_version": ("secretmanager.versions.enable", "version"),
    "destroy_secret_version": ("secretmanager.versions.destroy", "version"),
}

TokenResolver = Callable[[str], str | None]


@dataclass(frozen=True)
class CallerAccess:
    """Where one caller's Secret Manager roles reach, as conditional role bindings define it.

    The deployment (deploy/access.py) grants each function its Secret Manager roles on the
    project under ``resource.name.startsWith("projects/NUMBER/secrets/dataloop-gar-")``, plus
    one secret's own binding for the Dataloop credentials, plus (for listing and creating) a
    ``resource.type == "cloudresourcemanager.googleapis.com/Project"`` clause. This is that,
    and only that: *where* the roles reach, not *which* roles; inside its reach a caller may
    call every method.

    - ``prefixes``: full resource-name prefixes, matched against the name IAM evaluates,
      which names the project by *number* whatever form the request used (Secret Manager's
      IAM conditions documentation). A prefix written with the project id matches nothing,
      as it would on Google. Version calls match on the version's name, which starts with
      its secret's.
    - ``secrets``: secret ids whose own IAM policy grants the caller a role (a binding on
      the secret, no condition): the secret and all its versions.
    - ``project_permissions``: what the caller may do on the project itself, i.e. list
      secrets and create them. Google checks both on the parent project (the REST reference
      of ``secrets.list`` and ``secrets.create``), so a condition on ``resource.name`` of a
      secret neither grants them nor filters what a granted list returns: a caller allowed
      to list sees every secret of the project, names and metadata, even ones it could not
      read. The default grants both, as the deployment's project-level clause does for the
      functions that list or create.
    """

    prefixes: tuple[str, ...] = ()
    secrets: frozenset[str] = frozenset()
    project_permissions: frozenset[str] = frozenset({LIST_PERMISSION, CREATE_PERMISSION})

    def allows(self, permission: str, scope: str, resource: str, secret_id: str) -> bool:
        if scope == "project":
            return permission in self.project_permissions
        return secret_id in self.secrets or any(resource.startswith(prefix) for prefix in self.prefixes)
