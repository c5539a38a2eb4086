"""Who may pull from a GAR repository: its IAM policy, through google-cloud-artifact-registry.

Provisioning grants the integration's service account ``roles/artifactregistry.reader`` on
the repository (never on the project: Dataloop should see one repository, not all of
them). The repository policy is shared with whoever else administers it, so every change
is a read-modify-write guarded by the policy's etag, retried whole when another writer got
there first, and surgical: one member of one binding, never a rewrite of bindings we did
not make. A change that is already in place writes nothing, because a redelivered request
should cost one read, not a write that bumps the etag under a concurrent admin.

Always the REST transport: it is what the local stand-in speaks (so tests run production's
code path), and it spares a function the gRPC channel setup at cold start.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from shared.adapters.gcp_errors import api_message, translated
from shared.adapters.google_clients import LazyClient, rest_client_kwargs
from shared.core.errors import ServiceUnavailable, TransientError
from shared.model.images import RepositoryInfo

logger = logging.getLogger(__name__)

READER_ROLE = "roles/artifactregistry.reader"
#: Conditional bindings are only returned whole (and only kept on write) at policy version 3.
POLICY_VERSION = 3
_REPOSITORY_PATH = re.compile(r"projects/[^/]+/locations/[^/]+/repositories/[^/]+")


def _translated(action: str, resource: str) -> AbstractContextManager[None]:
    """:func:`shared.adapters.gcp_errors.translated` for Artifact Registry, with what to do about ``resource``.

    Refusals are coded ``artifact-registry``, except a missing repository, which
    provisioning tells apart (a revoke on a repository that is gone has nothing to do).
    """
    return translated(
        "Artifact Registry",
        action,
        permission_hint="Grant this function's service account roles/artifactregistry.repoAdmin "
        f"(or roles/artifactregistry.admin) on {resource}.",
        not_found=f"{resource}: repository not found (check the location and id)",
        code="artifact-registry",
        codes={"NOT_FOUND": "repository-not-found"},
        conflict_statuses=(),
    )


class ConcurrentPolicyChange(Exception):
    """setIamPolicy lost the race for the etag: the whole read-modify-write must run again."""


class RepositoryAccess:
    """Adapter over ``ArtifactRegistryClient``: reader grants on repositories."""

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        timeout: float = 10.0,
        conflict_attempts: int = 5,
        conflict_backoff: float = 0.2,
    ) -> None:
        """``endpoint`` ("http://HOST:PORT") selects the local cloud, anonymously.

        ``conflict_attempts``/``conflict_backoff`` bound the read-modify-write retries on a
        concurrent policy change (first wait ``conflict_backoff`` seconds, doubling, jittered).
        """
        self.endpoint = endpoint
        self.timeout = timeout
        self.conflict_attempts = max(1, conflict_attempts)
        self.conflict_backoff = conflict_backoff
        self._client = LazyClient(self._build_client)

    def _build_client(self) -> Any:
        from google.cloud import artifactregistry_v1

        return artifactregistry_v1.ArtifactRegistryClient(**rest_client_kwargs(self.endpoint))

    @property
    def client(self) -> Any:
        """The generated client, built on first use and reused (it pools connections)."""
        return self._client.get()

    def close(self) -> None:
        """Release the connection pool (a long-lived function never needs to; tests do)."""
        self._client.close()

    def __enter__(self) -> RepositoryAccess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retry(self) -> Any:
        from google.api_core import retry as gretry

        return gretry.Retry(
            predicate=gretry.if_transient_error, initial=0.2, maximum=2.0, multiplier=2.0, timeout=self.timeout * 3
        )

    # -- repositories ------------------------------------------------------------------
    def get_repository(self, repository_path: str) -> RepositoryInfo:
        """The repository, so provisioning fails early and clearly on a wrong location or id.

        Raises:
            PermanentError: ``repository-not-found`` or ``permission-denied``.
        """
        _check_path(repository_path)
        with _translated(f"read {repository_path}", repository_path):
            repository = self.client.get_repository(
                request={"name": repository_path}, timeout=self.timeout, retry=self._retry()
            )
        return RepositoryInfo(
            name=repository.name,
            format=repository.format_.name,
            mode=repository.mode.name,
            description=repository.description,
        )

    # -- reader grants -----------------------------------------------------------------
    def readers(self, repository_path: str) -> set[str]:
        """Members holding the reader role on the repository itself, unconditionally.

        Not everyone who can pull (project grants and broader roles also allow it): these
        are the grants this adapter manages.
        """
        _check_path(repository_path)
        policy = self._read_policy(repository_path)
        return {m for b in policy.bindings if _is_plain_reader(b) for m in b.members}

    def grant_reader(self, repository_path: str, member: str) -> bool:
        """Give ``member`` (e.g. ``serviceAccount:EMAIL``) read access; True when the policy changed."""
        _check_member(member)
        return self._modify(repository_path, f"grant {READER_ROLE} to {member} on", lambda p: _add_reader(p, member))

    def revoke_reader(self, repository_path: str, member: str) -> bool:
        """Take read access away from ``member`` only; True when the policy changed."""
        _check_member(member)
        return self._modify(
            repository_path, f"revoke {READER_ROLE} from {member} on", lambda p: _remove_reader(p, member)
        )

    def _modify(self, repository_path: str, action: str, change: Callable[[Any], bool]) -> bool:
        """Read, change in place, write with the etag read; again from the top on a conflict."""
        _check_path(repository_path)
        for attempt in range(1, self.conflict_attempts + 1):
            policy = self._read_policy(repository_path)
            if not change(policy):
                return False
            if any(b.HasField("condition") for b in policy.bindings):
                policy.version = POLICY_VERSION  # IAM refuses conditional bindings in an older version
            try:
                self._write_policy(repository_path, policy, action)
            except ConcurrentPolicyChange:
                if attempt == self.conflict_attempts:
                    break
                delay = self.conflict_backoff * 2 ** (attempt - 1)
                logger.info("concurrent IAM policy change on %s; retrying (attempt %d)", repository_path, attempt + 1)
                time.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter, not cryptography
                continue
            logger.info("%s %s", action, repository_path)
            return True
        raise ServiceUnavailable(
            f"could not {action} {repository_path}: its IAM policy kept changing concurrently "
            f"({self.conflict_attempts} attempts); will try again later"
        )

    def _read_policy(self, repository_path: str) -> Any:
        with _translated(f"read the IAM policy of {repository_path}", repository_path):
            return self.client.get_iam_policy(
                request={"resource": repository_path, "options": {"requested_policy_version": POLICY_VERSION}},
                timeout=self.timeout,
                retry=self._retry(),
            )

    def _write_policy(self, repository_path: str, policy: Any, action: str) -> None:
        from google.api_core import exceptions as gexc

        with _translated(f"{action} {repository_path}", repository_path):
            try:
                self.client.set_iam_policy(
                    request={"resource": repository_path, "policy": policy},
                    timeout=self.timeout,
                    retry=self._retry(),
                )
            except gexc.Conflict:  # 409 ABORTED: the etag is stale (REST does not say Aborted)
                raise ConcurrentPolicyChange() from None
            except gexc.BadRequest as exc:
                if "does not exist" not in api_message(exc):
                    raise
                # IAM is eventually consistent: an account created moments ago may not be
                # visible to setIamPolicy yet. If it really is gone, recreate it.
                raise TransientError(
                    f"could not {action} {repository_path}: {api_message(exc)} A service account created moments "
                    f"ago takes up to a minute to become visible; try again later.",
                    code="member-not-visible",
                ) from None


def _is_plain_reader(binding: Any) -> bool:
    return binding.role == READER_ROLE and not binding.HasField("condition")


def _add_reader(policy: Any, member: str) -> bool:
    plain = [b for b in policy.bindings if _is_plain_reader(b)]
    if any(member in b.members for b in plain):
        return False
    if plain:
        plain[0].members.append(member)
    else:
        policy.bindings.add(role=READER_ROLE, members=[member])
    return True


def _remove_reader(policy: Any, member: str) -> bool:
    """Drop ``member`` from unconditional reader bindings, and the ``deleted:`` form IAM
    gives a service account deleted before it was revoked; conditional grants are someone
    else's and stay."""
    gone = {member}
    gone_prefix = f"deleted:{member}?uid=" if member.startswith("serviceAccount:") else None
    changed = False
    for index in reversed(range(len(policy.bindings))):
        binding = policy.bindings[index]
        if not _is_plain_reader(binding):
            continue
        kept = [m for m in binding.members if m not in gone and not (gone_prefix and m.startswith(gone_prefix))]
        if len(kept) == len(binding.members):
            continue
        changed = True
        if kept:
            del binding.members[:]
            binding.members.extend(kept)
        else:
            del policy.bindings[index]  # IAM drops empty bindings anyway; do not send one
    return changed


def _check_member(member: str) -> None:
    kind, _, who = member.partition(":")
    if not kind or not who or kind not in ("serviceAccount", "user", "group", "domain", "principal", "principalSet"):
        raise ValueError(f"IAM member must look like serviceAccount:EMAIL, got {member!r}")


def _check_path(repository_path: str) -> None:
    if not _REPOSITORY_PATH.fullmatch(repository_path or ""):
        raise ValueError(
            f"not a repository path (projects/PROJECT/locations/LOCATION/repositories/REPOSITORY): {repository_path!r}"
        )
