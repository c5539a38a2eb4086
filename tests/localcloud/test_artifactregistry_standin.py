"""The local Artifact Registry answers the real ``ArtifactRegistryClient`` (REST) like Google does.

Provisioning grants an account ``roles/artifactregistry.reader`` on one repository by a
read-modify-write of the repository's IAM policy; a concurrent writer must make the
write fail with 409 ABORTED rather than be overwritten. The registry's token endpoint
then asks :class:`GcpAuthority` whether that account may pull.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
import requests
from google.api_core import exceptions
from google.cloud.artifactregistry_v1 import Repository

from localcloud.artifactregistry import ArtifactRegistryStandIn
from localcloud.gcp_authority import GcpAuthority
from localcloud.iam import IamStandIn

pytestmark = pytest.mark.wire

PARENT = "projects/proj-1/locations/us-central1"
READER = "roles/artifactregistry.reader"


def create_repository(client: Any, repository_id: str = "images", parent: str = PARENT) -> Repository:
    operation = client.create_repository(
        request={
            "parent": parent,
            "repository_id": repository_id,
            "repository": {"format_": Repository.Format.DOCKER, "description": "pushed images"},
        }
    )
    return operation.result(timeout=10)


def create_account(iam: IamStandIn, account_id: str = "dlgar-puller") -> str:
    return iam.state.create_service_account("proj-1", account_id).email


# -- repositories ----------------------------------------------------------------------------


def test_create_get_list_and_delete_a_repository(artifact_registry_client: Any) -> None:
    created = create_repository(artifact_registry_client)

    assert created.name == f"{PARENT}/repositories/images"
    assert created.format_ == Repository.Format.DOCKER
    assert created.mode == Repository.Mode.STANDARD_REPOSITORY
    assert created.create_time.year >= 2024
    fetched = artifact_registry_client.get_repository(request={"name": created.name})
    assert (fetched.name, fetched.description) == (created.name, "pushed images")
    listed = artifact_registry_client.list_repositories(request={"parent": PARENT})
    assert [r.name for r in listed] == [created.name]

    artifact_registry_client.delete_repository(request={"name": created.name}).result(timeout=10)

    with pytest.raises(exceptions.NotFound, match=r"Requested entity was not found\."):
        artifact_registry_client.get_repository(request={"name": created.name})


def test_creating_an_existing_repository_conflicts(artifact_registry_client: Any) -> None:
    create_repository(artifact_registry_client)

    with pytest.raises(exceptions.Conflict, match="the repository already exists") as caught:
        create_repository(artifact_registry_client)

    assert caught.value.response.json()["error"]["status"] == "ALREADY_EXISTS"


def test_invalid_repository_id_is_rejected(artifact_registry_client: Any) -> None:
    with pytest.raises(exceptions.BadRequest):
        create_repository(artifact_registry_client, "Not_Valid")


def test_listing_pages_and_is_scoped_to_the_location(
    artifact_registry: ArtifactRegistryStandIn, artifact_registry_client: Any
) -> None:
    for repository_id in ("alpha", "beta", "gamma"):
        create_repository(artifact_registry_client, repository_id)
    create_repository(artifact_registry_client, "elsewhere", parent="projects/proj-1/locations/europe-west1")
    artifact_registry.app.reset()

    pager = artifact_registry_client.list_repositories(request={"parent": PARENT, "page_size": 2})

    assert [r.name.rsplit("/", 1)[1] for r in pager] == ["alpha", "beta", "gamma"]
    pages = [c for c in artifact_registry.app.call_log() if c["path"] == f"/v1/{PARENT}/repositories"]
    assert len(pages) == 2
    assert "pageToken=" in pages[1]["query"]


# -- IAM policy -----------------------------------------------------------------------------------


def test_a_repository_starts_with_an_empty_policy(artifact_registry_client: Any) -> None:
    repository = create_repository(artifact_registry_client)

    policy = artifact_registry_client.get_iam_policy(request={"resource": repository.name})

    assert list(policy.bindings) == []
    assert base64.b64encode(policy.etag) == b"ACAB"


def test_read_modify_write_grants_reader_and_changes_the_etag(iam: IamStandIn, artifact_registry_client: Any) -> None:
    email = create_account(iam)
    repository = create_repository(artifact_registry_client)
    policy = artifact_registry_client.get_iam_policy(request={"resource": repository.name})
    policy.bindings.add(role=READER, members=[f"serviceAccount:{email}"])

    written = artifact_registry_client.set_iam_policy(request={"resource": repository.name, "policy": policy})

    assert written.etag != policy.etag
    read_back = artifact_registry_client.get_iam_policy(request={"resource": repository.name})
    assert read_back.etag == written.etag
    assert [(b.role, list(b.members)) for b in read_back.bindings] == [(READER, [f"serviceAccount:{email}"])]


def test_a_stale_etag_is_aborted_with_409(iam: IamStandIn, artifact_registry_client: Any) -> None:
    first, second = create_account(iam, "first-puller"), create_account(iam, "second-puller")
    repository = create_repository(artifact_registry_client)
    mine = artifact_registry_client.get_iam_policy(request={"resource": repository.name})
    theirs = artifact_registry_client.get_iam_policy(request={"resource": repository.name})
    theirs.bindings.add(role=READER, members=[f"serviceAccount:{second}"])
    artifact_registry_client.set_iam_policy(request={"resource": repository.name, "policy": theirs})
    mine.bindings.add(role=READER, members=[f"serviceAccount:{first}"])

    with pytest.raises(exceptions.Conflict, match="There were concurrent policy changes") as caught:
        artifact_registry_client.set_iam_policy(request={"resource": repository.name, "policy": mine})

    assert caught.value.response.json()["error"] == {
        "code": 409,
        "message": "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff.",
        "status": "ABORTED",
    }
    kept = artifact_registry_client.get_iam_policy(request={"resource": repository.name})
    assert [list(b.members) for b in kept.bindings] == [[f"serviceAccount:{second}"]]


def test_a_policy_without_etag_overwrites_and_empty_bindings_are_dropped(
    iam: IamStandIn, artifact_registry_client: Any
) -> None:
    email = create_account(iam)
    repository = create_repository(artifact_registry_client)
    policy = {
        "bindings": [
            {"role": READER, "members": [f"serviceAccount:{email}"]},
            {"role": "roles/artifactregistry.writer", "members": []},
        ]
    }

    written = artifact_registry_client.set_iam_policy(request={"resource": repository.name, "policy": policy})

    assert [b.role for b in written.bindings] == [READER]


def test_binding_an_unknown_service_account_is_invalid(artifact_registry_client: Any) -> None:
    repository = create_repository(artifact_registry_client)
    ghost = "ghost-account@proj-1.iam.gserviceaccount.com"
    policy = {"bindings": [{"role": READER, "members": [f"serviceAccount:{ghost}"]}]}

    with pytest.raises(exceptions.BadRequest, match=re.escape(f"Service account {ghost} does not exist.")):
        artifact_registry_client.set_iam_policy(request={"resource": repository.name, "policy": policy})


def test_policy_of_a_missing_repository_is_not_found(artifact_registry_client: Any) -> None:
    with pytest.raises(exceptions.NotFound):
        artifact_registry_client.get_iam_policy(request={"resource": f"{PARENT}/repositories/missing"})


def test_test_iam_permissions_returns_what_the_caller_holds(
    artifact_registry: ArtifactRegistryStandIn, artifact_registry_client: Any
) -> None:
    repository = create_repository(artifact_registry_client)
    asked = ["artifactregistry.repositories.getIamPolicy", "artifactregistry.repositories.setIamPolicy"]

    everything = artifact_registry_client.test_iam_permissions(
        request={"resource": repository.name, "permissions": asked}
    )
    artifact_registry.state.caller_permissions = {"artifactregistry.repositories.getIamPolicy"}
    some = artifact_registry_client.test_iam_permissions(request={"resource": repository.name, "permissions": asked})
    artifact_registry.state.caller_permissions = set()
    none = artifact_registry_client.test_iam_permissions(request={"resource": repository.name, "permissions": asked})

    assert list(everything.permissions) == asked
    assert list(some.permissions) == ["artifactregistry.repositories.getIamPolicy"]
    assert list(none.permissions) == []


def test_errors_have_googles_json_shape(artifact_registry: ArtifactRegistryStandIn) -> None:
    response = requests.get(f"{artifact_registry.url}/v1/{PARENT}/repositories/missing", timeout=5)

    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}
    }


# -- the registry's view: who may pull -----------------------------------------------------------------


def test_only_readers_of_the_repository_may_pull(
    iam: IamStandIn,
    artifact_registry: ArtifactRegistryStandIn,
    artifact_registry_client: Any,
    gcp_authority: GcpAuthority,
) -> None:
    reader, stranger = create_account(iam, "granted-puller"), create_account(iam, "stranger-account")
    repository = create_repository(artifact_registry_client)
    create_repository(artifact_registry_client, "private")
    artifact_registry.state.add_binding(repository.name, READER, f"serviceAccount:{reader}")

    assert gcp_authority.can_pull(reader, "proj-1/images/app")
    assert not gcp_authority.can_pull(reader, "proj-1/private/app")
    assert not gcp_authority.can_pull(reader, "proj-2/images/app")
    assert not gcp_authority.can_pull(stranger, "proj-1/images/app")


@pytest.mark.parametrize(
    "role",
    ["roles/artifactregistry.writer", "roles/artifactregistry.repoAdmin", "roles/artifactregistry.admin"],
)
def test_stronger_repository_roles_include_pull(
    iam: IamStandIn,
    artifact_registry: ArtifactRegistryStandIn,
    artifact_registry_client: Any,
    gcp_authority: GcpAuthority,
    role: str,
) -> None:
    email = create_account(iam)
    repository = create_repository(artifact_registry_client)
    artifact_registry.state.add_binding(repository.name, role, f"serviceAccount:{email}")

    assert gcp_authority.can_pull(email, "proj-1/images/app")


def test_unrelated_roles_do_not_grant_pull(
    iam: IamStandIn,
    artifact_registry: ArtifactRegistryStandIn,
    artifact_registry_client: Any,
    gcp_authority: GcpAuthority,
) -> None:
    email = create_account(iam)
    repository = create_repository(artifact_registry_client)
    artifact_registry.state.add_binding(repository.name, "roles/logging.viewer", f"serviceAccount:{email}")

    assert not gcp_authority.can_pull(email, "proj-1/images/app")


def test_a_project_level_reader_may_pull_every_repository_of_the_project(
    iam: IamStandIn,
    artifact_registry: ArtifactRegistryStandIn,
    artifact_registry_client: Any,
    gcp_authority: GcpAuthority,
) -> None:
    email = create_account(iam)
    create_repository(artifact_registry_client)
    artifact_registry.state.grant_project_role("proj-1", READER, f"serviceAccount:{email}")

    assert gcp_authority.can_pull(email, "proj-1/images/app")
    assert not gcp_authority.can_pull(email, "proj-1/never-created/app")


def test_authority_follows_the_key_lifecycle(
    iam: IamStandIn, iam_client: Any, artifact_registry: ArtifactRegistryStandIn, gcp_authority: GcpAuthority
) -> None:
    email = create_account(iam)
    key = iam_client.create_service_account_key(request={"name": f"projects/-/serviceAccounts/{email}"})
    key_file = key.private_key_data.decode()
    iam.state.set_propagation_delay(30)

    assert gcp_authority.principal_for("_json_key", key_file) is None
    assert gcp_authority.last_refusal == "key not yet propagated"
    iam.state.advance(31)
    assert gcp_authority.principal_for("_json_key", key_file) == email
    iam_client.delete_service_account_key(request={"name": key.name})
    assert gcp_authority.principal_for("_json_key", key_file) is None
    assert gcp_authority.last_refusal == "key deleted"


def test_authority_pins_a_location_when_asked(
    iam: IamStandIn, artifact_registry: ArtifactRegistryStandIn, artifact_registry_client: Any
) -> None:
    email = create_account(iam)
    repository = create_repository(artifact_registry_client)
    artifact_registry.state.add_binding(repository.name, READER, f"serviceAccount:{email}")

    assert GcpAuthority(iam.state, artifact_registry.state, location="us-central1").can_pull(email, "proj-1/images/a")
    assert not GcpAuthority(iam.state, artifact_registry.state, location="europe-west1").can_pull(
        email, "proj-1/images/a"
    )
