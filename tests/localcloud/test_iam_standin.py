"""The local IAM answers the real ``IAMClient`` (gRPC) the way Google's IAM does.

Rotation depends on these behaviours (docs/external-apis.md §3.1-§3.4): the key file arrives once as
raw JSON bytes, the key id in its name is the file's ``private_key_id``, listing must be
filtered to user-managed keys, the 10-key limit and the key-creation org policy fail
with FAILED_PRECONDITION, and a fresh key is not usable until IAM has propagated it.
"""

from __future__ import annotations

import base64
import json
from typing import Any, cast

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import load_pem_x509_certificate
from google.api_core import exceptions
from google.cloud.iam_admin_v1 import types
from google.oauth2 import service_account
from google.rpc import error_details_pb2

from localcloud.artifactregistry import ArtifactRegistryState
from localcloud.gcp_authority import GcpAuthority
from localcloud.iam import IamStandIn

pytestmark = pytest.mark.wire

USER_MANAGED = types.ListServiceAccountKeysRequest.KeyType.USER_MANAGED
SYSTEM_MANAGED = types.ListServiceAccountKeysRequest.KeyType.SYSTEM_MANAGED
KEY_FILE_FIELDS = [
    "type",
    "project_id",
    "private_key_id",
    "private_key",
    "client_email",
    "client_id",
    "auth_uri",
    "token_uri",
    "auth_provider_x509_cert_url",
    "client_x509_cert_url",
    "universe_domain",
]


def create_account(client: Any, account_id: str = "dlgar-puller", project: str = "proj-1") -> Any:
    return client.create_service_account(
        request={"name": f"projects/{project}", "account_id": account_id, "service_account": {"display_name": "puller"}}
    )


def create_key(client: Any, email: str) -> Any:
    return client.create_service_account_key(request={"name": f"projects/-/serviceAccounts/{email}"})


def user_keys(client: Any, email: str) -> list[Any]:
    request = {"name": f"projects/-/serviceAccounts/{email}", "key_types": [USER_MANAGED]}
    return list(client.list_service_account_keys(request=request).keys)


# -- service accounts -------------------------------------------------------------------------


def test_created_account_is_addressable_by_email_unique_id_and_wildcard_project(iam_client: Any) -> None:
    account = create_account(iam_client)

    assert account.email == "dlgar-puller@proj-1.iam.gserviceaccount.com"
    assert account.name == f"projects/proj-1/serviceAccounts/{account.email}"
    assert account.project_id == "proj-1"
    assert account.unique_id.isdigit() and len(account.unique_id) == 21
    assert account.oauth2_client_id == account.unique_id
    assert account.display_name == "puller"
    for name in (
        account.name,
        f"projects/-/serviceAccounts/{account.email}",
        f"projects/proj-1/serviceAccounts/{account.unique_id}",
    ):
        assert iam_client.get_service_account(request={"name": name}).email == account.email
    listed = iam_client.list_service_accounts(request={"name": "projects/proj-1"})
    assert [a.email for a in listed] == [account.email]
    assert list(iam_client.list_service_accounts(request={"name": "projects/other-project"})) == []


def test_list_service_accounts_pages(iam_client: Any) -> None:
    for n in range(3):
        create_account(iam_client, f"account-{n}")

    pager = iam_client.list_service_accounts(request={"name": "projects/proj-1", "page_size": 2})

    assert [a.email.split("@")[0] for a in pager] == ["account-0", "account-1", "account-2"]


@pytest.mark.parametrize(
    ("account_id", "message"),
    [
        ("short", 'The account ID "short" does not have a length between 6 and 30.'),
        ("a" * 31, f'The account ID "{"a" * 31}" does not have a length between 6 and 30.'),
        ("Upper-case", r"Upper-case does not match [a-z][a-z\d\-]*[a-z\d]."),
        ("ends-with-", r"ends-with- does not match [a-z][a-z\d\-]*[a-z\d]."),
        ("1starts-with-digit", r"1starts-with-digit does not match [a-z][a-z\d\-]*[a-z\d]."),
    ],
)
def test_account_ids_are_validated_like_iam(iam_client: Any, account_id: str, message: str) -> None:
    with pytest.raises(exceptions.InvalidArgument) as caught:
        create_account(iam_client, account_id)
    assert caught.value.message == message


def test_account_ids_at_the_length_bounds_are_accepted(iam_client: Any) -> None:
    assert create_account(iam_client, "abcdef").email.startswith("abcdef@")
    assert create_account(iam_client, "a" * 30).email.startswith("a" * 30 + "@")


def test_creating_an_existing_account_is_already_exists_with_resource_info(iam_client: Any) -> None:
    account = create_account(iam_client)

    with pytest.raises(exceptions.AlreadyExists) as caught:
        create_account(iam_client)

    assert caught.value.message == "Service account dlgar-puller already exists within project projects/proj-1."
    assert [d.resource_name for d in caught.value.details if isinstance(d, error_details_pb2.ResourceInfo)] == [
        account.name
    ]


def test_missing_account_is_not_found_but_permission_denied_through_the_wildcard(iam_client: Any) -> None:
    email = "nobody-here@proj-1.iam.gserviceaccount.com"

    with pytest.raises(exceptions.NotFound, match="Unknown service account"):
        iam_client.get_service_account(request={"name": f"projects/proj-1/serviceAccounts/{email}"})
    with pytest.raises(exceptions.PermissionDenied, match=r"iam\.serviceAccounts\.get is required"):
        iam_client.get_service_account(request={"name": f"projects/-/serviceAccounts/{email}"})


def test_an_account_is_not_found_under_another_project(iam_client: Any) -> None:
    account = create_account(iam_client)

    with pytest.raises(exceptions.NotFound):
        iam_client.get_service_account(request={"name": f"projects/proj-2/serviceAccounts/{account.email}"})


def test_deleted_account_is_gone_with_its_keys(iam: IamStandIn, iam_client: Any) -> None:
    account = create_account(iam_client)
    key = create_key(iam_client, account.email)

    iam_client.delete_service_account(request={"name": account.name})

    with pytest.raises(exceptions.NotFound):
        iam_client.get_service_account(request={"name": account.name})
    with pytest.raises(exceptions.NotFound, match="Gaia id not found"):
        user_keys(iam_client, account.email)
    assert iam.state.check_key_file(key.private_key_data.decode()).reason == "service account deleted"
    assert create_account(iam_client).unique_id != account.unique_id  # the email is free again, the id is new


def test_disabled_account_shows_disabled_and_its_keys_stop_working(iam: IamStandIn, iam_client: Any) -> None:
    account = create_account(iam_client)
    key_file = create_key(iam_client, account.email).private_key_data.decode()

    iam_client.disable_service_account(request={"name": account.name})

    assert iam_client.get_service_account(request={"name": account.name}).disabled is True
    assert iam.state.check_key_file(key_file).reason == "service account disabled"
    iam_client.enable_service_account(request={"name": account.name})
    assert iam.state.check_key_file(key_file).accepted


# -- keys ------------------------------------------------------------------------------------


def test_created_key_carries_the_key_file_as_raw_json_bytes(iam_client: Any) -> None:
    account = create_account(iam_client)

    key = create_key(iam_client, account.email)

    document = json.loads(key.private_key_data)  # raw bytes over gRPC: no base64 layer
    assert list(document) == KEY_FILE_FIELDS
    key_id = key.name.rsplit("/", 1)[1]
    assert key.name == f"projects/proj-1/serviceAccounts/{account.email}/keys/{key_id}"
    assert document["private_key_id"] == key_id and len(key_id) == 40
    assert document["type"] == "service_account"
    assert document["client_email"] == account.email
    assert document["client_id"] == account.unique_id
    assert document["project_id"] == "proj-1"
    private_key = serialization.load_pem_private_key(document["private_key"].encode(), password=None)
    assert isinstance(private_key, rsa.RSAPrivateKey) and private_key.key_size == 2048
    assert document["private_key"].startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert key.private_key_type == types.ServiceAccountPrivateKeyType.TYPE_GOOGLE_CREDENTIALS_FILE
    assert key.key_algorithm == types.ServiceAccountKeyAlgorithm.KEY_ALG_RSA_2048
    assert key.key_origin == types.ServiceAccountKeyOrigin.GOOGLE_PROVIDED
    assert key.key_type == USER_MANAGED
    assert key.disabled is False
    assert key.valid_before_time.year == 9999
    assert key.valid_after_time.year >= 2024
    # google-auth accepts it as a service-account credential, as production code will.
    credentials = service_account.Credentials.from_service_account_info(document)
    assert credentials.service_account_email == account.email


def test_listing_shows_system_managed_keys_unless_filtered(iam_client: Any) -> None:
    account = create_account(iam_client)
    key = create_key(iam_client, account.email)

    everything = iam_client.list_service_account_keys(request={"name": account.name}).keys
    filtered = user_keys(iam_client, account.email)

    assert sorted(k.key_type for k in everything) == [USER_MANAGED, SYSTEM_MANAGED]
    assert [k.name for k in filtered] == [key.name]
    assert all(k.private_key_data == b"" for k in everything)  # the private key is returned once, at creation


def test_unspecified_key_type_filter_is_rejected(iam_client: Any) -> None:
    account = create_account(iam_client)

    with pytest.raises(exceptions.InvalidArgument):
        iam_client.list_service_account_keys(request={"name": account.name, "key_types": [0]})


def test_get_key_returns_the_public_certificate_of_the_key_file(iam_client: Any) -> None:
    account = create_account(iam_client)
    key = create_key(iam_client, account.email)
    private_pem = json.loads(key.private_key_data)["private_key"].encode()

    found = iam_client.get_service_account_key(
        request={"name": key.name, "public_key_type": types.ServiceAccountPublicKeyType.TYPE_X509_PEM_FILE}
    )

    certificate = load_pem_x509_certificate(found.public_key_data)
    private_key = cast(rsa.RSAPrivateKey, serialization.load_pem_private_key(private_pem, password=None))
    public_key = cast(rsa.RSAPublicKey, certificate.public_key())
    assert public_key.public_numbers() == private_key.public_key().public_numbers()
    assert found.private_key_data == b""
    plain = iam_client.get_service_account_key(request={"name": key.name})
    assert plain.public_key_data == b"" and plain.key_type == USER_MANAGED


def test_deleted_key_does_not_list_and_is_not_found(iam: IamStandIn, iam_client: Any) -> None:
    account = create_account(iam_client)
    doomed, kept = create_key(iam_client, account.email), create_key(iam_client, account.email)
    doomed_id = doomed.name.rsplit("/", 1)[1]

    iam_client.delete_service_account_key(request={"name": doomed.name})

    assert [k.name for k in user_keys(iam_client, account.email)] == [kept.name]
    with pytest.raises(exceptions.NotFound) as caught:
        iam_client.get_service_account_key(request={"name": doomed.name})
    assert caught.value.message == f"Service account key {doomed_id} does not exist."
    with pytest.raises(exceptions.NotFound):
        iam_client.delete_service_account_key(request={"name": doomed.name})
    assert iam.state.check_key_file(doomed.private_key_data.decode()).reason == "key deleted"
    assert [k.deleted for k in iam.state.keys_of(account.email, include_deleted=True)] == [True, False]


GONE_KEY_ANSWERS = [
    (grpc.StatusCode.NOT_FOUND, exceptions.NotFound, r"does not exist|Gaia id not found"),
    (
        grpc.StatusCode.PERMISSION_DENIED,
        exceptions.PermissionDenied,
        r"Permission iam\.serviceAccountKeys\.\w+ is required to perform this operation on service account key ",
    ),
    (grpc.StatusCode.FAILED_PRECONDITION, exceptions.FailedPrecondition, r"Precondition check failed\.$"),
]


@pytest.mark.parametrize(("status", "error", "message"), GONE_KEY_ANSWERS, ids=[a[0].name for a in GONE_KEY_ANSWERS])
def test_a_gone_key_answers_the_selected_status_to_every_key_call(
    iam: IamStandIn,
    iam_client: Any,
    status: grpc.StatusCode,
    error: type[exceptions.GoogleAPICallError],
    message: str,
) -> None:
    """§3.5: IAM is not reliably NOT_FOUND for a deleted key, nor for the keys of a deleted account."""
    iam.state.gone_key_status = status
    account = create_account(iam_client)
    deleted = create_key(iam_client, account.email)
    iam_client.delete_service_account_key(request={"name": deleted.name})
    doomed = create_account(iam_client, "dlgar-doomed")
    orphaned = create_key(iam_client, doomed.email)
    iam_client.delete_service_account(request={"name": doomed.name})

    for gone in (deleted.name, orphaned.name, f"{account.name}/keys/{'0' * 40}"):
        for call in ("get", "delete", "disable", "enable"):
            with pytest.raises(error, match=message) as caught:
                getattr(iam_client, f"{call}_service_account_key")(request={"name": gone})
            if status == grpc.StatusCode.PERMISSION_DENIED:
                assert caught.value.message == (
                    f"Permission iam.serviceAccountKeys.{call} is required to perform this operation "
                    f"on service account key {gone}."
                )
    live = create_key(iam_client, account.email)
    iam_client.disable_service_account_key(request={"name": live.name})  # a live key still answers normally
    iam_client.delete_service_account_key(request={"name": live.name})
    iam.reset()
    assert iam.state.gone_key_status == grpc.StatusCode.NOT_FOUND


def test_a_deleted_key_can_go_on_being_listed_for_a_while(iam: IamStandIn, iam_client: Any) -> None:
    """§3.5: IAM reads are eventually consistent, so a key just deleted may still be listed."""
    iam.state.deleted_key_listings = 2
    account = create_account(iam_client)
    doomed, kept = create_key(iam_client, account.email), create_key(iam_client, account.email)

    iam_client.delete_service_account_key(request={"name": doomed.name})

    assert [k.name for k in user_keys(iam_client, account.email)] == [doomed.name, kept.name]
    assert [k.name for k in user_keys(iam_client, account.email)] == [doomed.name, kept.name]
    assert [k.name for k in user_keys(iam_client, account.email)] == [kept.name]
    with pytest.raises(exceptions.NotFound):  # listed or not, the key itself is gone
        iam_client.get_service_account_key(request={"name": doomed.name})
    assert iam.state.check_key_file(doomed.private_key_data.decode()).reason == "key deleted"
    iam.reset()
    assert iam.state.deleted_key_listings == 0


def test_disabled_key_lists_as_disabled_and_is_refused_until_enabled(iam: IamStandIn, iam_client: Any) -> None:
    account = create_account(iam_client)
    key = create_key(iam_client, account.email)
    key_file = key.private_key_data.decode()

    iam_client.disable_service_account_key(request={"name": key.name})

    assert [k.disabled for k in user_keys(iam_client, account.email)] == [True]
    assert iam.state.check_key_file(key_file).reason == "key disabled"
    iam_client.enable_service_account_key(request={"name": key.name})
    assert iam_client.get_service_account_key(request={"name": key.name}).disabled is False
    assert iam.state.check_key_file(key_file).email == account.email


def test_google_managed_keys_cannot_be_deleted(iam_client: Any) -> None:
    account = create_account(iam_client)
    system_key = iam_client.list_service_account_keys(request={"name": account.name}).keys[0]
    assert system_key.key_type == SYSTEM_MANAGED

    with pytest.raises(exceptions.FailedPrecondition):
        iam_client.delete_service_account_key(request={"name": system_key.name})


def test_the_eleventh_user_managed_key_fails_precondition(iam: IamStandIn, iam_client: Any) -> None:
    account = create_account(iam_client)
    keys = [create_key(iam_client, account.email) for _ in range(10)]
    iam_client.disable_service_account_key(request={"name": keys[0].name})  # disabled keys still count

    with pytest.raises(exceptions.FailedPrecondition) as caught:
        create_key(iam_client, account.email)
    assert caught.value.message == "Precondition check failed."

    iam.state.key_limit_status = grpc.StatusCode.RESOURCE_EXHAUSTED  # what IAM answered before 2022
    with pytest.raises(exceptions.ResourceExhausted, match=r"Maximum number of keys on account reached\."):
        create_key(iam_client, account.email)

    iam_client.delete_service_account_key(request={"name": keys[0].name})
    assert create_key(iam_client, account.email).name not in {k.name for k in keys}
    assert len(user_keys(iam_client, account.email)) == 10


def test_org_policy_refuses_key_creation_with_a_precondition_failure(iam: IamStandIn, iam_client: Any) -> None:
    account = create_account(iam_client)
    iam.state.set_key_creation_disabled(True)

    with pytest.raises(exceptions.FailedPrecondition) as caught:
        create_key(iam_client, account.email)

    assert caught.value.message == "Key creation is not allowed on this service account."
    violations = [
        v for d in caught.value.details if isinstance(d, error_details_pb2.PreconditionFailure) for v in d.violations
    ]
    assert [v.type for v in violations] == ["constraints/iam.disableServiceAccountKeyCreation"]
    assert violations[0].subject.startswith(account.name + "?configvalue=")
    assert user_keys(iam_client, account.email) == []
    iam.state.set_key_creation_disabled(False)
    assert create_key(iam_client, account.email).name


def test_the_key_expiry_org_policy_gives_new_keys_a_valid_before_time_and_spares_older_ones(
    iam: IamStandIn, iam_client: Any
) -> None:
    account = create_account(iam_client)
    older = create_key(iam_client, account.email)
    iam.state.set_key_expiry(8 * 3600)  # the constraint's smallest value, 8 hours

    key = create_key(iam_client, account.email)

    lifetime = key.valid_before_time.timestamp() - key.valid_after_time.timestamp()
    assert 8 * 3600 <= lifetime < 8 * 3600 + 2  # valid_after is whole seconds, valid_before not
    listed = {k.name: k for k in user_keys(iam_client, account.email)}
    assert listed[key.name].valid_before_time == key.valid_before_time
    assert listed[older.name].valid_before_time.year == 9999  # not retroactive
    key_file = key.private_key_data.decode()
    assert iam.state.check_key_file(key_file).accepted
    iam.state.advance(8 * 3600 - 5)
    assert iam.state.check_key_file(key_file).accepted
    iam.state.advance(10)
    assert iam.state.check_key_file(key_file).reason == "key expired"
    assert iam.state.check_key_file(older.private_key_data.decode()).accepted
    iam.state.set_key_expiry(None)
    assert create_key(iam_client, account.email).valid_before_time.year == 9999


def test_a_key_expiry_is_forgotten_on_reset(iam: IamStandIn) -> None:
    iam.state.set_key_expiry(3600)
    iam.reset()
    assert iam.state.key_expiry_seconds is None
    with pytest.raises(ValueError, match="positive"):
        iam.state.set_key_expiry(0)


def test_key_creation_for_a_missing_account_is_not_found(iam_client: Any) -> None:
    with pytest.raises(exceptions.NotFound, match="Gaia id not found for email ghost-account@proj-1"):
        create_key(iam_client, "ghost-account@proj-1.iam.gserviceaccount.com")


def test_malformed_names_are_invalid_arguments(iam_client: Any) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="should be in the form"):
        iam_client.get_service_account(request={"name": "serviceAccounts/someone@proj-1.iam.gserviceaccount.com"})


# -- what the registry sees ---------------------------------------------------------------------


def test_a_new_key_is_refused_until_iam_has_propagated_it(iam: IamStandIn, iam_client: Any) -> None:
    iam.state.set_propagation_delay(90)
    account = create_account(iam_client)
    key_file = create_key(iam_client, account.email).private_key_data.decode()

    assert iam.state.check_key_file(key_file).reason == "key not yet propagated"
    iam.state.advance(89)
    assert not iam.state.check_key_file(key_file).accepted
    iam.state.advance(2)
    assert iam.state.check_key_file(key_file).email == account.email


def test_a_key_file_with_someone_elses_private_key_is_refused(iam: IamStandIn, iam_client: Any) -> None:
    account = create_account(iam_client)
    genuine = json.loads(create_key(iam_client, account.email).private_key_data)
    other = json.loads(create_key(iam_client, account.email).private_key_data)

    forged = json.dumps({**genuine, "private_key": other["private_key"]})

    assert iam.state.check_key_file(forged).reason == "private key does not match"
    assert iam.state.check_key_file(json.dumps(genuine)).accepted
    assert iam.state.check_key_file("not json").reason == "not a service-account key file"


def test_authority_accepts_json_key_base64_and_access_tokens(iam: IamStandIn, iam_client: Any) -> None:
    authority = GcpAuthority(iam.state, ArtifactRegistryState())
    account = create_account(iam_client)
    key_file = create_key(iam_client, account.email).private_key_data.decode()
    token = iam.state.mint_access_token(account.email, lifetime_seconds=60)

    assert authority.principal_for("_json_key", key_file) == account.email
    assert authority.principal_for("_json_key_base64", base64.b64encode(key_file.encode()).decode()) == account.email
    assert authority.principal_for("oauth2accesstoken", token) == account.email
    assert authority.principal_for("_json_key_base64", "%%%") is None
    assert authority.principal_for("admin", key_file) is None
    assert authority.last_refusal == "unsupported username 'admin'"
    iam.state.advance(61)
    assert authority.principal_for("oauth2accesstoken", token) is None
    assert authority.principal_for("oauth2accesstoken", "ya29.made-up") is None


# -- the stand-in's own controls -------------------------------------------------------------------


def test_injected_unavailable_is_retried_by_the_client_on_idempotent_reads(iam: IamStandIn, iam_client: Any) -> None:
    account = create_account(iam_client)
    iam.inject("GetServiceAccount", grpc.StatusCode.UNAVAILABLE)

    assert iam_client.get_service_account(request={"name": account.name}).email == account.email
    assert iam.calls().count("GetServiceAccount") == 2


def test_injected_fault_surfaces_on_key_creation_which_the_client_does_not_retry(
    iam: IamStandIn, iam_client: Any
) -> None:
    account = create_account(iam_client)
    iam.inject("CreateServiceAccountKey", grpc.StatusCode.UNAVAILABLE, count=1)

    with pytest.raises(exceptions.ServiceUnavailable):
        create_key(iam_client, account.email)
    assert iam.state.keys_of(account.email) == []
    assert create_key(iam_client, account.email).name
