"""``shared.adapters.artifact_registry.RepositoryAccess`` against the local Artifact Registry (REST).

The repository policy belongs to its administrators as much as to us: a grant or revoke
must change one member of one binding and nothing else, must not write when there is
nothing to change, and must survive another writer changing the policy between our read
and our write (409 ABORTED on the stale etag) by redoing the whole read-modify-write.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from localcloud.artifactregistry import CONCURRENT_CHANGE, ArtifactRegistryStandIn, Policy
from localcloud.iam import IamStandIn
from localcloud.wsgi import Fault
from shared.adapters.artifact_registry import READER_ROLE, RepositoryAccess
from shared.core.errors import PermanentError, ServiceUnavailable, TransientError
from shared.model.images import repository_path

pytestmark = pytest.mark.wire

PROJECT = "proj-1"
LOCATION = "us-central1"
WRITER = "roles/artifactregistry.writer"
CONDITION = {"title": "until-2030", "expression": "request.time < timestamp('2030-01-01T00:00:00Z')"}
ABORTED = {"error": {"code": 409, "message": CONCURRENT_CHANGE, "status": "ABORTED"}}


@pytest.fixture
def access(artifact_registry: ArtifactRegistryStandIn) -> Iterator[RepositoryAccess]:
    with RepositoryAccess(endpoint=artifact_registry.url, timeout=2.0, conflict_backoff=0.01) as adapter:
        yield adapter


@pytest.fixture
def repository(artifact_registry: ArtifactRegistryStandIn) -> str:
    return artifact_registry.state.create_repository(PROJECT, LOCATION, "images")["name"]


def account(iam: IamStandIn, account_id: str) -> str:
    return "serviceAccount:" + iam.state.create_service_account(PROJECT, account_id).email


def writes(artifact_registry: ArtifactRegistryStandIn) -> list[dict[str, Any]]:
    return [c for c in artifact_registry.app.call_log() if c["path"].endswith(":setIamPolicy")]


def reads(artifact_registry: ArtifactRegistryStandIn) -> list[dict[str, Any]]:
    return [c for c in artifact_registry.app.call_log() if c["path"].endswith(":getIamPolicy")]


def bindings(artifact_registry: ArtifactRegistryStandIn, repository: str) -> list[dict[str, Any]]:
    return artifact_registry.state.get_policy(repository).bindings


# -- repositories -----------------------------------------------------------------------------------


def test_get_repository_reports_a_docker_repository(access: RepositoryAccess, repository: str) -> None:
    found = access.get_repository(repository_path(PROJECT, LOCATION, "images"))

    assert (found.name, found.format, found.mode) == (repository, "DOCKER", "STANDARD_REPOSITORY")


def test_a_repository_in_another_location_is_not_found(access: RepositoryAccess, repository: str) -> None:
    with pytest.raises(PermanentError) as caught:
        access.get_repository(repository_path(PROJECT, "europe-west1", "images"))

    assert caught.value.code == "repository-not-found"
    assert "repository not found (check the location and id)" in caught.value.reason


# -- grants -------------------------------------------------------------------------------------------


def test_granting_twice_makes_one_binding_and_writes_once(
    iam: IamStandIn, artifact_registry: ArtifactRegistryStandIn, access: RepositoryAccess, repository: str
) -> None:
    member = account(iam, "dlgar-puller")

    assert access.grant_reader(repository, member) is True
    assert len(writes(artifact_registry)) == 1
    artifact_registry.app.reset()

    assert access.grant_reader(repository, member) is False

    assert bindings(artifact_registry, repository) == [{"role": READER_ROLE, "members": [member]}]
    assert len(reads(artifact_registry)) == 1
    assert writes(artifact_registry) == []
    assert access.readers(repository) == {member}
    assert member in artifact_registry.state.readers(repository)  # the registry's token endpoint agrees


def test_granting_leaves_every_other_binding_and_member_alone(
    iam: IamStandIn, artifact_registry: ArtifactRegistryStandIn, access: RepositoryAccess, repository: str
) -> None:
    ours, theirs, conditional = account(iam, "dlgar-puller"), account(iam, "ci-puller"), account(iam, "temp-puller")
    before: list[dict[str, Any]] = [
        {"role": WRITER, "members": ["user:admin@example.com", "group:ci@example.com"]},
        {"role": READER_ROLE, "members": [conditional], "condition": CONDITION},
        {"role": READER_ROLE, "members": [theirs]},
    ]
    artifact_registry.state.set_policy(repository, before)

    assert access.grant_reader(repository, ours) is True

    assert bindings(artifact_registry, repository) == [
        before[0],
        before[1],
        {"role": READER_ROLE, "members": [theirs, ours]},
    ]
    assert access.readers(repository) == {theirs, ours}  # a conditional grant is not a plain reader


def test_revoking_leaves_other_members_and_conditional_grants(
    iam: IamStandIn, artifact_registry: ArtifactRegistryStandIn, access: RepositoryAccess, repository: str
) -> None:
    ours, theirs = account(iam, "dlgar-puller"), account(iam, "ci-puller")
    artifact_registry.state.set_policy(
        repository,
        [
            {"role": READER_ROLE, "members": [ours], "condition": CONDITION},
            {"role": READER_ROLE, "members": [theirs, ours]},
            {"role": WRITER, "members": [ours]},
        ],
    )

    assert access.revoke_reader(repository, ours) is True
    artifact_registry.app.reset()
    assert access.revoke_reader(repository, ours) is False

    assert writes(artifact_registry) == []
    assert bindings(artifact_registry, repository) == [
        {"role": READER_ROLE, "members": [ours], "condition": CONDITION},
        {"role": READER_ROLE, "members": [theirs]},
        {"role": WRITER, "members": [ours]},
    ]


def test_revoking_the_last_reader_drops_the_binding_and_the_deleted_form(
    artifact_registry: ArtifactRegistryStandIn, access: RepositoryAccess, repository: str
) -> None:
    # IAM rewrites a deleted account's grants as deleted:serviceAccount:EMAIL?uid=ID.
    email = f"dlgar-puller@{PROJECT}.iam.gserviceaccount.com"
    artifact_registry.state.set_policy(
        repository,
        [
            {"role": READER_ROLE, "members": [f"deleted:serviceAccount:{email}?uid=123456789012345678901"]},
            {"role": WRITER, "members": ["user:admin@example.com"]},
        ],
    )

    assert access.revoke_reader(repository, f"serviceAccount:{email}") is True

    assert bindings(artifact_registry, repository) == [{"role": WRITER, "members": ["user:admin@example.com"]}]


def test_an_injected_concurrent_change_is_retried_whole(
    iam: IamStandIn, artifact_registry: ArtifactRegistryStandIn, access: RepositoryAccess, repository: str
) -> None:
    member = account(iam, "dlgar-puller")
    artifact_registry.app.inject(Fault(path=r":setIamPolicy$", method="POST", status=409, body=ABORTED))

    assert access.grant_reader(repository, member) is True

    calls = [(c["method"], c["path"].rsplit(":", 1)[1]) for c in artifact_registry.app.call_log()]
    assert calls == [("GET", "getIamPolicy"), ("POST", "setIamPolicy")] * 2
    assert access.readers(repository) == {member}


def test_a_real_concurrent_writer_is_not_overwritten(
    iam: IamStandIn,
    artifact_registry: ArtifactRegistryStandIn,
    access: RepositoryAccess,
    repository: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ours, theirs = account(iam, "dlgar-puller"), account(iam, "ci-puller")
    real = access.client.get_iam_policy
    interleaved: list[Policy] = []

    def read_then_someone_else_writes(**kwargs: Any) -> Any:
        policy = real(**kwargs)
        if not interleaved:
            interleaved.append(artifact_registry.state.add_binding(repository, READER_ROLE, theirs))
        return policy

    monkeypatch.setattr(access.client, "get_iam_policy", read_then_someone_else_writes)

    assert access.grant_reader(repository, ours) is True

    assert len(writes(artifact_registry)) == 2  # the first carried the stale etag
    assert bindings(artifact_registry, repository) == [{"role": READER_ROLE, "members": [theirs, ours]}]


def test_endless_conflicts_give_up_as_transient(
    iam: IamStandIn, artifact_registry: ArtifactRegistryStandIn, repository: str
) -> None:
    member = account(iam, "dlgar-puller")
    artifact_registry.app.inject(Fault(path=r":setIamPolicy$", method="POST", status=409, body=ABORTED, count=100))

    with (
        RepositoryAccess(endpoint=artifact_registry.url, conflict_attempts=3, conflict_backoff=0.01) as access,
        pytest.raises(ServiceUnavailable) as caught,
    ):
        access.grant_reader(repository, member)

    assert "kept changing concurrently (3 attempts)" in caught.value.reason
    assert len(writes(artifact_registry)) == 3


def test_a_member_iam_does_not_know_yet_is_transient(access: RepositoryAccess, repository: str) -> None:
    with pytest.raises(TransientError) as caught:
        access.grant_reader(repository, f"serviceAccount:just-created@{PROJECT}.iam.gserviceaccount.com")

    assert caught.value.code == "member-not-visible"
    assert "does not exist" in caught.value.reason


def test_granting_on_a_missing_repository_is_not_found(iam: IamStandIn, access: RepositoryAccess) -> None:
    with pytest.raises(PermanentError) as caught:
        access.grant_reader(repository_path(PROJECT, LOCATION, "missing"), account(iam, "dlgar-puller"))

    assert caught.value.code == "repository-not-found"


def test_members_and_paths_are_checked_before_any_call(
    artifact_registry: ArtifactRegistryStandIn, access: RepositoryAccess, repository: str
) -> None:
    with pytest.raises(ValueError, match="serviceAccount:EMAIL"):
        access.grant_reader(repository, "dlgar-puller@proj-1.iam.gserviceaccount.com")
    with pytest.raises(ValueError, match="not a repository path"):
        access.readers("proj-1/images")

    assert artifact_registry.app.call_log() == []


# -- failures -----------------------------------------------------------------------------------------


def test_a_passing_503_is_retried(
    iam: IamStandIn, artifact_registry: ArtifactRegistryStandIn, access: RepositoryAccess, repository: str
) -> None:
    member = account(iam, "dlgar-puller")
    artifact_registry.app.inject(Fault(path=r":getIamPolicy$", status=503))

    assert access.grant_reader(repository, member) is True

    assert len(reads(artifact_registry)) == 2
    assert access.readers(repository) == {member}


def test_permission_denied_names_the_role_to_grant(
    iam: IamStandIn, artifact_registry: ArtifactRegistryStandIn, access: RepositoryAccess, repository: str
) -> None:
    member = account(iam, "dlgar-puller")
    denied = {"error": {"code": 403, "message": "Permission denied on resource", "status": "PERMISSION_DENIED"}}
    artifact_registry.app.inject(Fault(path=r":setIamPolicy$", status=403, body=denied))

    with pytest.raises(PermanentError) as caught:
        access.grant_reader(repository, member)

    assert caught.value.code == "permission-denied"
    assert f"roles/artifactregistry.repoAdmin (or roles/artifactregistry.admin) on {repository}" in caught.value.reason
    assert len(writes(artifact_registry)) == 1


def test_an_unreachable_api_is_transient(repository: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    with (
        RepositoryAccess(endpoint=f"http://127.0.0.1:{closed_port}", timeout=0.2) as access,
        pytest.raises(ServiceUnavailable),
    ):
        access.readers(repository)
