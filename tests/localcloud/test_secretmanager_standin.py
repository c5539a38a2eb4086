"""Conformance of the local Secret Manager, driven through the real generated REST client.

These tests pin the behaviours the project relies on (docs/external-apis.md §4) to what the real
service documents, so that code passing against the stand-in passes against Google. One
fact worth knowing when reading them: the REST transport picks the exception class from the
HTTP status only, so the canonical status (ALREADY_EXISTS, FAILED_PRECONDITION, ...) is read
from the error body, and ``Conflict``/``BadRequest`` are what callers really catch.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import requests
from google.api_core import exceptions as gexc

from deploy.access import function_grants
from deploy.settings import DeploySettings
from localcloud.secretmanager.access import CREATE_PERMISSION, LIST_PERMISSION, CallerAccess
from localcloud.secretmanager.wire import crc32c
from localcloud.wsgi import Fault
from tests.fixtures.secretmanager import (
    PROJECT_ID,
    PROJECT_NUMBER,
    TIMEOUT,
    SecretManagerHandle,
    deployed_access,
    make_client,
)

if TYPE_CHECKING:
    from google.cloud.secretmanager import SecretManagerServiceClient

pytestmark = pytest.mark.wire

TOPIC = f"projects/{PROJECT_ID}/topics/secret-events"
AUTOMATIC: dict[str, Any] = {"automatic": {}}


def api_status(error: BaseException) -> str:
    """The canonical status Google put in the JSON error body."""
    assert isinstance(error, gexc.GoogleAPICallError)
    return error.response.json()["error"]["status"]


def expect_error(
    excinfo: pytest.ExceptionInfo[gexc.GoogleAPICallError], cls: type[gexc.GoogleAPICallError], status: str
) -> None:
    """Exactly the class the REST client raises for this HTTP status, and the canonical status in the body."""
    assert type(excinfo.value) is cls, f"expected {cls.__name__}, got {type(excinfo.value).__name__}: {excinfo.value}"
    assert api_status(excinfo.value) == status


def create(sm: SecretManagerHandle, secret_id: str, **fields: Any) -> Any:
    secret = {"replication": AUTOMATIC} | fields
    return sm.client.create_secret(
        request={"parent": sm.parent, "secret_id": secret_id, "secret": secret}, timeout=TIMEOUT
    )


def add_version(sm: SecretManagerHandle, secret_id: str, data: bytes, **payload: Any) -> Any:
    return sm.client.add_secret_version(
        request={"parent": sm.secret_path(secret_id), "payload": {"data": data} | payload}, timeout=TIMEOUT
    )


def update(sm: SecretManagerHandle, secret: dict[str, Any], *paths: str) -> Any:
    return sm.client.update_secret(request={"secret": secret, "update_mask": {"paths": list(paths)}}, timeout=TIMEOUT)


def access(sm: SecretManagerHandle, secret_id: str, version: str | int) -> Any:
    return sm.client.access_secret_version(name=f"{sm.secret_path(secret_id)}/versions/{version}", timeout=TIMEOUT)


def version_path(sm: SecretManagerHandle, secret_id: str, number: int) -> str:
    return f"{sm.secret_path(secret_id)}/versions/{number}"


# -- secrets -----------------------------------------------------------------------------


def test_create_and_get_round_trip_the_secret(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    created = create(sm, "dataloop-gar-a", labels={"managed-by": "dataloop-gar"}, annotations={"org.id": "o-1"})
    fetched = sm.client.get_secret(name=sm.secret_path("dataloop-gar-a"), timeout=TIMEOUT)

    assert created.name == fetched.name == f"projects/{PROJECT_ID}/secrets/dataloop-gar-a"
    assert dict(fetched.labels) == {"managed-by": "dataloop-gar"}
    assert dict(fetched.annotations) == {"org.id": "o-1"}
    assert "automatic" in fetched.replication
    assert fetched.etag == created.etag and fetched.etag.startswith('"') and fetched.etag.endswith('"')
    assert abs(fetched.create_time - datetime.now(UTC)) < timedelta(seconds=10)


def test_wire_shapes_follow_the_json_mapping(secretmanager: SecretManagerHandle) -> None:
    """int64 as strings, RFC 3339 'Z' timestamps, and enums as names unless the client asks for ints."""
    sm = secretmanager
    create(sm, "shapes")
    add_version(sm, "shapes", b"key")
    update(sm, {"name": sm.secret_path("shapes"), "version_aliases": {"current": 1}}, "version_aliases")

    secret = requests.get(f"{sm.url}/v1/{sm.secret_path('shapes')}", timeout=TIMEOUT).json()
    assert secret["versionAliases"] == {"current": "1"}
    assert secret["createTime"].endswith("Z")
    assert "labels" not in secret  # empty fields are omitted, as proto3 JSON does

    version = requests.get(f"{sm.url}/v1/{version_path(sm, 'shapes', 1)}", timeout=TIMEOUT).json()
    assert version["state"] == "ENABLED"
    numeric = requests.get(
        f"{sm.url}/v1/{version_path(sm, 'shapes', 1)}", params={"$alt": "json;enum-encoding=int"}, timeout=TIMEOUT
    ).json()
    assert numeric["state"] == 1

    accessed = requests.get(f"{sm.url}/v1/{version_path(sm, 'shapes', 1)}:access", timeout=TIMEOUT).json()
    assert base64.b64decode(accessed["payload"]["data"]) == b"key"
    assert accessed["payload"]["dataCrc32c"] == str(crc32c(b"key"))


def test_creating_an_existing_secret_is_a_conflict(secretmanager: SecretManagerHandle) -> None:
    create(secretmanager, "twice")
    with pytest.raises(gexc.Conflict) as excinfo:
        create(secretmanager, "twice")
    expect_error(excinfo, gexc.Conflict, "ALREADY_EXISTS")


def test_replication_is_required(secretmanager: SecretManagerHandle) -> None:
    with pytest.raises(gexc.BadRequest) as excinfo:
        secretmanager.client.create_secret(
            request={"parent": secretmanager.parent, "secret_id": "no-replication", "secret": {}}, timeout=TIMEOUT
        )
    expect_error(excinfo, gexc.BadRequest, "INVALID_ARGUMENT")


@pytest.mark.parametrize("secret_id", ["has.dot", "x" * 256, "sp ace"])
def test_secret_ids_are_validated(secretmanager: SecretManagerHandle, secret_id: str) -> None:
    with pytest.raises(gexc.BadRequest) as excinfo:
        create(secretmanager, secret_id)
    expect_error(excinfo, gexc.BadRequest, "INVALID_ARGUMENT")


@pytest.mark.parametrize(
    "fields",
    [
        {"labels": {"Upper": "v"}},
        {"labels": {"1starts-with-digit": "v"}},
        {"labels": {"k": "Upper"}},
        {"labels": {"k" * 64: "v"}},
        {"labels": {"k": "v" * 64}},
        {"labels": {f"k{i}": "v" for i in range(65)}},
        {"annotations": {"-bad-start": "v"}},
        {"annotations": {"a": "x" * (16 * 1024)}},
        {"topics": [{"name": "not-a-topic"}]},
        {"topics": [{"name": f"projects/p/topics/t{i}"} for i in range(11)]},
    ],
    ids=[
        "label-key-upper",
        "label-key-digit",
        "label-value-upper",
        "label-key-64",
        "label-value-64",
        "65-labels",
        "annotation-key",
        "annotations-16k",
        "topic-name",
        "11-topics",
    ],
)
def test_metadata_is_validated(secretmanager: SecretManagerHandle, fields: dict[str, Any]) -> None:
    with pytest.raises(gexc.BadRequest) as excinfo:
        create(secretmanager, "meta", **fields)
    expect_error(excinfo, gexc.BadRequest, "INVALID_ARGUMENT")


def test_metadata_at_the_limits_is_accepted(secretmanager: SecretManagerHandle) -> None:
    annotations = {"state": "x" * (16 * 1024 - len("state") - 1)}  # total one byte under 16 KiB
    labels = {"k" * 63: "v" * 63, "ключ": "значение", "k-2_": ""}
    created = create(secretmanager, "limits", labels=labels, annotations=annotations)
    assert dict(created.labels) == labels
    assert dict(created.annotations) == annotations


def test_a_missing_secret_is_not_found(secretmanager: SecretManagerHandle) -> None:
    with pytest.raises(gexc.NotFound) as excinfo:
        secretmanager.client.get_secret(name=secretmanager.secret_path("absent"), timeout=TIMEOUT)
    expect_error(excinfo, gexc.NotFound, "NOT_FOUND")


def test_the_project_number_reaches_the_same_secrets(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    create(sm, "by-number")
    fetched = sm.client.get_secret(name=f"projects/{PROJECT_NUMBER}/secrets/by-number", timeout=TIMEOUT)
    assert fetched.name == f"projects/{PROJECT_NUMBER}/secrets/by-number"


# -- listing -----------------------------------------------------------------------------


def test_list_pages_newest_first(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    for i in range(5):
        create(sm, f"s{i}")
    pager = sm.client.list_secrets(request={"parent": sm.parent, "page_size": 2}, timeout=TIMEOUT)
    pages = list(pager.pages)

    assert [len(page.secrets) for page in pages] == [2, 2, 1]
    assert [s.name.rsplit("/", 1)[-1] for page in pages for s in page.secrets] == ["s4", "s3", "s2", "s1", "s0"]
    assert pages[0].total_size == 5
    assert pages[0].next_page_token and not pages[-1].next_page_token


def test_list_pages_stay_stable_while_secrets_are_added(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    for i in range(3):
        create(sm, f"s{i}")
    first = sm.client.list_secrets(request={"parent": sm.parent, "page_size": 2}, timeout=TIMEOUT)
    token = next(iter(first.pages)).next_page_token
    create(sm, "newer")
    rest = sm.client.list_secrets(request={"parent": sm.parent, "page_size": 2, "page_token": token}, timeout=TIMEOUT)
    assert [s.name.rsplit("/", 1)[-1] for s in rest] == ["s0"]


def test_a_page_token_belongs_to_its_query(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    for i in range(3):
        create(sm, f"s{i}", labels={"env": "prod"})
    first = sm.client.list_secrets(request={"parent": sm.parent, "page_size": 1}, timeout=TIMEOUT)
    token = next(iter(first.pages)).next_page_token
    with pytest.raises(gexc.BadRequest) as excinfo:
        next(
            iter(
                sm.client.list_secrets(
                    request={"parent": sm.parent, "page_token": token, "filter": "labels.env=prod"}, timeout=TIMEOUT
                ).pages
            )
        )
    expect_error(excinfo, gexc.BadRequest, "INVALID_ARGUMENT")


@pytest.mark.parametrize(
    ("filter_text", "expected"),
    [
        ("labels.managed-by=dataloop-gar", {"gar-a", "gar-b"}),
        ("labels.location:*", {"gar-a", "other"}),
        ("name:gar-", {"gar-a", "gar-b"}),
        ("name:gar-*b", {"gar-b"}),
        ("labels.managed-by=dataloop-gar AND labels.location=us-central1", {"gar-a"}),
        ("labels.managed-by=dataloop-gar labels.location:*", {"gar-a"}),
        ("name:gar-b OR name:other", {"gar-b", "other"}),
        ("NOT labels.location:*", {"gar-b"}),
        ("-labels.location:*", {"gar-b"}),
        ('labels.location="us-central1"', {"gar-a"}),
        ("labels.managed-by=dataloop-gar AND (name:gar-a OR name:other)", {"gar-a"}),
        ("create_time>2000-01-01T00:00:00Z", {"gar-a", "gar-b", "other"}),
        ("labels.location=europe-west1", set()),
    ],
)
def test_list_filters(secretmanager: SecretManagerHandle, filter_text: str, expected: set[str]) -> None:
    sm = secretmanager
    create(sm, "gar-a", labels={"managed-by": "dataloop-gar", "location": "us-central1"})
    create(sm, "gar-b", labels={"managed-by": "dataloop-gar"})
    create(sm, "other", labels={"location": "us-east1"})
    pager = sm.client.list_secrets(request={"parent": sm.parent, "filter": filter_text}, timeout=TIMEOUT)
    assert {s.name.rsplit("/", 1)[-1] for s in pager} == expected


@pytest.mark.parametrize(
    "filter_text",
    ["annotations.org=1", "dataloop", "labels.env>prod", "name:(", "labels.env=prod AND", "state:ENABLED"],
)
def test_unsupported_filters_are_invalid(secretmanager: SecretManagerHandle, filter_text: str) -> None:
    sm = secretmanager
    with pytest.raises(gexc.BadRequest) as excinfo:
        list(sm.client.list_secrets(request={"parent": sm.parent, "filter": filter_text}, timeout=TIMEOUT))
    expect_error(excinfo, gexc.BadRequest, "INVALID_ARGUMENT")


# -- updates and etags -------------------------------------------------------------------


def test_update_changes_only_masked_fields_and_renews_the_etag(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    created = create(sm, "upd", labels={"a": "1"}, annotations={"keep": "me"})
    updated = update(sm, {"name": created.name, "labels": {"b": "2"}, "annotations": {}}, "labels")

    assert dict(updated.labels) == {"b": "2"}
    assert dict(updated.annotations) == {"keep": "me"}
    assert updated.etag != created.etag


def test_a_no_op_update_still_renews_the_etag(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    created = create(sm, "noop", labels={"a": "1"})
    updated = update(sm, {"name": created.name, "labels": {"a": "1"}, "etag": created.etag}, "labels")
    assert updated.etag != created.etag


def test_a_stale_etag_fails_the_update_with_failed_precondition(secretmanager: SecretManagerHandle) -> None:
    """The lease protocol (docs/external-apis.md §4.2) rests on this: the loser of a race must fail, not overwrite."""
    sm = secretmanager
    created = create(sm, "race", annotations={"lease": ""})
    update(sm, {"name": created.name, "annotations": {"lease": "run-1"}, "etag": created.etag}, "annotations")

    with pytest.raises(gexc.BadRequest) as excinfo:
        update(sm, {"name": created.name, "annotations": {"lease": "run-2"}, "etag": created.etag}, "annotations")
    expect_error(excinfo, gexc.BadRequest, "FAILED_PRECONDITION")
    current = sm.client.get_secret(name=created.name, timeout=TIMEOUT)
    assert current.annotations["lease"] == "run-1"


def test_adding_a_version_leaves_the_secret_etag_alone(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    created = create(sm, "etag-stable")
    add_version(sm, "etag-stable", b"v1")
    assert sm.client.get_secret(name=created.name, timeout=TIMEOUT).etag == created.etag


@pytest.mark.parametrize("paths", [[], ["replication"], ["name"], ["labels.a"], ["nonsense"]])
def test_update_masks_are_validated(secretmanager: SecretManagerHandle, paths: list[str]) -> None:
    sm = secretmanager
    created = create(sm, "mask")
    with pytest.raises(gexc.BadRequest) as excinfo:
        update(sm, {"name": created.name, "labels": {"a": "1"}}, *paths)
    expect_error(excinfo, gexc.BadRequest, "INVALID_ARGUMENT")


def test_update_of_a_missing_secret_is_not_found(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    with pytest.raises(gexc.NotFound):
        update(sm, {"name": sm.secret_path("absent"), "labels": {"a": "1"}}, "labels")


def test_delete_honours_the_etag(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    created = create(sm, "doomed")
    updated = update(sm, {"name": created.name, "labels": {"a": "1"}}, "labels")

    with pytest.raises(gexc.BadRequest) as excinfo:
        sm.client.delete_secret(request={"name": created.name, "etag": created.etag}, timeout=TIMEOUT)
    expect_error(excinfo, gexc.BadRequest, "FAILED_PRECONDITION")

    sm.client.delete_secret(request={"name": created.name, "etag": updated.etag}, timeout=TIMEOUT)
    with pytest.raises(gexc.NotFound):
        sm.client.get_secret(name=created.name, timeout=TIMEOUT)


def test_delete_removes_the_versions_too(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    create(sm, "gone")
    add_version(sm, "gone", b"x")
    sm.client.delete_secret(name=sm.secret_path("gone"), timeout=TIMEOUT)
    create(sm, "gone")
    with pytest.raises(gexc.NotFound):
        access(sm, "gone", "latest")


# -- versions ----------------------------------------------------------------------------


def test_versions_are_numbered_and_accessible_by_number_latest_and_alias(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    create(sm, "keys")
    numbers = [int(add_version(sm, "keys", f"key-{i}".encode()).name.rsplit("/", 1)[-1]) for i in (1, 2, 3)]
    assert numbers == [1, 2, 3]
    update(sm, {"name": sm.secret_path("keys"), "version_aliases": {"current": 2, "previous": 1}}, "version_aliases")

    assert access(sm, "keys", 1).payload.data == b"key-1"
    latest = access(sm, "keys", "latest")
    assert (latest.name, latest.payload.data) == (version_path(sm, "keys", 3), b"key-3")
    current = access(sm, "keys", "current")
    assert (current.name, current.payload.data) == (version_path(sm, "keys", 2), b"key-2")
    by_alias = sm.client.get_secret_version(name=f"{sm.secret_path('keys')}/versions/previous", timeout=TIMEOUT)
    assert by_alias.name == version_path(sm, "keys", 1)
    assert dict(sm.client.get_secret(name=sm.secret_path("keys"), timeout=TIMEOUT).version_aliases) == {
        "current": 2,
        "previous": 1,
    }


def test_unknown_versions_and_aliases_are_not_found(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    create(sm, "sparse")
    with pytest.raises(gexc.NotFound):
        access(sm, "sparse", "latest")
    add_version(sm, "sparse", b"x")
    for ref in ("7", "pending"):
        with pytest.raises(gexc.NotFound) as excinfo:
            access(sm, "sparse", ref)
        expect_error(excinfo, gexc.NotFound, "NOT_FOUND")
    with pytest.raises(gexc.NotFound):
        access(sm, "no-such-secret", 1)


def test_crc32c_is_checked_stored_and_returned(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    create(sm, "crc")
    with pytest.raises(gexc.BadRequest) as excinfo:
        add_version(sm, "crc", b"payload", data_crc32c=crc32c(b"payload") ^ 1)
    expect_error(excinfo, gexc.BadRequest, "INVALID_ARGUMENT")

    checked = add_version(sm, "crc", b"payload", data_crc32c=crc32c(b"payload"))
    unchecked = add_version(sm, "crc", b"other")
    assert checked.client_specified_payload_checksum and not unchecked.client_specified_payload_checksum
    assert checked.name == version_path(sm, "crc", 1)  # the refused add did not take a number
    assert access(sm, "crc", 2).payload.data_crc32c == crc32c(b"other")


def test_payload_size_limit_and_empty_payload(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    create(sm, "big")
    assert add_version(sm, "big", b"x" * 65536).name.endswith("/versions/1")
    for data in (b"x" * 65537, b""):
        with pytest.raises(gexc.BadRequest) as excinfo:
            add_version(sm, "big", data)
        expect_error(excinfo, gexc.BadRequest, "INVALID_ARGUMENT")


def test_disabled_versions_refuse_access_until_enabled(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    create(sm, "toggle")
    add_version(sm, "toggle", b"old")
    add_version(sm, "toggle", b"new")
    disabled = sm.client.disable_secret_version(name=version_path(sm, "toggle", 2), timeout=TIMEOUT)
    assert disabled.state.name == "DISABLED"

    for ref in (2, "latest"):  # latest is the newest version whatever its state; no fallback to 1
        with pytest.raises(gexc.BadRequest) as excinfo:
            access(sm, "toggle", ref)
        expect_error(excinfo, gexc.BadRequest, "FAILED_PRECONDITION")
        assert "DISABLED" in str(excinfo.value)
    assert access(sm, "toggle", 1).payload.data == b"old"

    sm.client.enable_secret_version(name=version_path(sm, "toggle", 2), timeout=TIMEOUT)
    assert access(sm, "toggle", "latest").payload.data == b"new"


def test_destroy_discards_the_payload_for_good(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    create(sm, "burn")
    add_version(sm, "burn", b"secret")
    destroyed = sm.client.destroy_secret_version(name=version_path(sm, "burn", 1), timeout=TIMEOUT)
    assert destroyed.state.name == "DESTROYED" and destroyed.destroy_time

    with pytest.raises(gexc.BadRequest) as excinfo:
        access(sm, "burn", 1)
    expect_error(excinfo, gexc.BadRequest, "FAILED_PRECONDITION")
    assert "DESTROYED" in str(excinfo.value)
    for method in (sm.client.enable_secret_version, sm.client.disable_secret_version):
        with pytest.raises(gexc.BadRequest) as excinfo:
            method(name=version_path(sm, "burn", 1), timeout=TIMEOUT)
        expect_error(excinfo, gexc.BadRequest, "FAILED_PRECONDITION")
    assert sm.client.get_secret_version(name=version_path(sm, "burn", 1), timeout=TIMEOUT).state.name == "DESTROYED"


def test_version_etags_guard_state_changes(secretmanager: SecretManagerHandle) -> None:
    """The documented scenario: a no-op enable renews the etag, so a disable with the old one fails."""
    sm = secretmanager
    create(sm, "guarded")
    added = add_version(sm, "guarded", b"x")
    name = version_path(sm, "guarded", 1)
    enabled = sm.client.enable_secret_version(request={"name": name, "etag": added.etag}, timeout=TIMEOUT)
    assert enabled.etag != added.etag

    for method in (sm.client.disable_secret_version, sm.client.destroy_secret_version):
        with pytest.raises(gexc.BadRequest) as excinfo:
            method(request={"name": name, "etag": added.etag}, timeout=TIMEOUT)
        expect_error(excinfo, gexc.BadRequest, "FAILED_PRECONDITION")
    disabled = sm.client.disable_secret_version(request={"name": name, "etag": enabled.etag}, timeout=TIMEOUT)
    assert disabled.state.name == "DISABLED"


def test_state_changes_take_version_numbers_only(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    create(sm, "numbers-only")
    add_version(sm, "numbers-only", b"x")
    with pytest.raises(gexc.BadRequest):
        sm.client.disable_secret_version(name=f"{sm.secret_path('numbers-only')}/versions/latest", timeout=TIMEOUT)


def test_list_versions_newest_first_with_state_filter_and_paging(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    create(sm, "many")
    for i in range(1, 6):
        add_version(sm, "many", f"v{i}".encode())
    sm.client.disable_secret_version(name=version_path(sm, "many", 2), timeout=TIMEOUT)
    sm.client.destroy_secret_version(name=version_path(sm, "many", 4), timeout=TIMEOUT)

    def listed(**request: Any) -> list[int]:
        pager = sm.client.list_secret_versions(request={"parent": sm.secret_path("many")} | request, timeout=TIMEOUT)
        return [int(v.name.rsplit("/", 1)[-1]) for v in pager]

    assert listed(page_size=2) == [5, 4, 3, 2, 1]
    assert listed(filter="state:ENABLED") == [5, 3, 1]
    assert listed(filter="state=DISABLED OR state=DESTROYED") == [4, 2]
    assert listed(filter="NOT state:DESTROYED", page_size=1) == [5, 3, 2, 1]
    with pytest.raises(gexc.BadRequest):
        listed(filter="state:GONE")


# -- aliases -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "aliases",
    [{"current": 9}, {"latest": 1}, {"NEW": 1}, {"1st": 1}, {"has space": 1}, {f"a{i}": 1 for i in range(51)}],
    ids=["missing-version", "latest", "NEW", "digit-start", "space", "51-aliases"],
)
def test_aliases_are_validated(secretmanager: SecretManagerHandle, aliases: dict[str, int]) -> None:
    sm = secretmanager
    create(sm, "aliased")
    add_version(sm, "aliased", b"x")
    with pytest.raises(gexc.BadRequest) as excinfo:
        update(sm, {"name": sm.secret_path("aliased"), "version_aliases": aliases}, "version_aliases")
    expect_error(excinfo, gexc.BadRequest, "INVALID_ARGUMENT")


def test_aliases_never_name_destroyed_versions(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    create(sm, "aliased")
    add_version(sm, "aliased", b"1")
    add_version(sm, "aliased", b"2")
    update(sm, {"name": sm.secret_path("aliased"), "version_aliases": {"previous": 1}}, "version_aliases")

    with pytest.raises(gexc.BadRequest) as excinfo:
        sm.client.destroy_secret_version(name=version_path(sm, "aliased", 1), timeout=TIMEOUT)
    expect_error(excinfo, gexc.BadRequest, "FAILED_PRECONDITION")

    sm.client.destroy_secret_version(name=version_path(sm, "aliased", 2), timeout=TIMEOUT)
    with pytest.raises(gexc.BadRequest) as excinfo:
        update(sm, {"name": sm.secret_path("aliased"), "version_aliases": {"current": 2}}, "version_aliases")
    expect_error(excinfo, gexc.BadRequest, "INVALID_ARGUMENT")

    fifty = {f"a{i}": 1 for i in range(50)}
    accepted = update(sm, {"name": sm.secret_path("aliased"), "version_aliases": fifty}, "version_aliases")
    assert len(accepted.version_aliases) == 50


# -- rotation ----------------------------------------------------------------------------


def rotation(lead_seconds: float, period_seconds: float | None = 3600) -> dict[str, Any]:
    policy: dict[str, Any] = {"next_rotation_time": datetime.now(UTC) + timedelta(seconds=lead_seconds)}
    if period_seconds is not None:
        policy["rotation_period"] = timedelta(seconds=period_seconds)
    return policy


def test_a_valid_rotation_policy_round_trips(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    policy = rotation(600, 7 * 24 * 3600)
    created = create(sm, "rotating", topics=[{"name": TOPIC}], rotation=policy)
    assert created.rotation.rotation_period == timedelta(days=7)
    assert abs(created.rotation.next_rotation_time - policy["next_rotation_time"]) < timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"rotation": rotation(600)}, "rotation needs topics"),
        ({"topics": [{"name": TOPIC}], "rotation": rotation(200)}, "next_rotation_time under 300 s ahead"),
        ({"topics": [{"name": TOPIC}], "rotation": rotation(600, 3599)}, "rotation_period under 3600 s"),
        ({"topics": [{"name": TOPIC}], "rotation": rotation(600, 3600.5)}, "rotation_period not whole seconds"),
        ({"topics": [{"name": TOPIC}], "rotation": {"rotation_period": timedelta(hours=2)}}, "period without time"),
        ({"topics": [{"name": TOPIC}], "rotation": rotation(3153600000 + 3600)}, "over 100 years ahead"),
    ],
)
def test_rotation_rules(secretmanager: SecretManagerHandle, fields: dict[str, Any], why: str) -> None:
    with pytest.raises(gexc.BadRequest) as excinfo:
        create(secretmanager, "rotating", **fields)
    expect_error(excinfo, gexc.BadRequest, "INVALID_ARGUMENT")


def test_topics_cannot_be_dropped_while_rotation_is_set(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    created = create(sm, "rotating", topics=[{"name": TOPIC}], rotation=rotation(600))
    with pytest.raises(gexc.BadRequest):
        update(sm, {"name": created.name, "topics": []}, "topics")
    cleared = update(sm, {"name": created.name, "topics": [], "rotation": {}}, "topics", "rotation")
    assert not cleared.topics and "rotation" not in cleared


def test_rotation_can_be_updated_by_sub_field(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    created = create(sm, "rotating", topics=[{"name": TOPIC}], rotation=rotation(600))
    updated = update(
        sm, {"name": created.name, "rotation": {"rotation_period": timedelta(hours=5)}}, "rotation.rotation_period"
    )
    assert updated.rotation.rotation_period == timedelta(hours=5)
    assert updated.rotation.next_rotation_time == created.rotation.next_rotation_time


# -- notifications -----------------------------------------------------------------------


def test_every_change_notifies_the_secret_topics_through_the_hook(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    received: list[tuple[str, dict[str, str], bytes]] = []
    sm.standin.publish_hook = lambda topic, attributes, data: received.append((topic, attributes, data))
    other = f"projects/{PROJECT_ID}/topics/audit"

    created = create(sm, "watched", topics=[{"name": TOPIC}, {"name": other}])
    add_version(sm, "watched", b"k1")
    sm.client.disable_secret_version(name=version_path(sm, "watched", 1), timeout=TIMEOUT)
    sm.client.enable_secret_version(name=version_path(sm, "watched", 1), timeout=TIMEOUT)
    add_version(sm, "watched", b"k2")
    sm.client.destroy_secret_version(name=version_path(sm, "watched", 1), timeout=TIMEOUT)
    update(sm, {"name": created.name, "labels": {"a": "b"}}, "labels")
    sm.client.get_secret(name=created.name, timeout=TIMEOUT)  # reads publish nothing
    access(sm, "watched", 2)
    sm.client.delete_secret(name=created.name, timeout=TIMEOUT)

    on_topic = [(attrs["eventType"], attrs.get("versionId", "")) for topic, attrs, _ in received if topic == TOPIC]
    version = f"projects/{PROJECT_NUMBER}/secrets/watched/versions/"
    assert on_topic == [
        ("TOPIC_CONFIGURED", ""),
        ("SECRET_CREATE", ""),
        ("SECRET_VERSION_ADD", version + "1"),
        ("SECRET_VERSION_DISABLE", version + "1"),
        ("SECRET_VERSION_ENABLE", version + "1"),
        ("SECRET_VERSION_ADD", version + "2"),
        ("SECRET_VERSION_DESTROY", version + "1"),
        ("SECRET_UPDATE", ""),
        ("SECRET_DELETE", ""),
    ]
    assert [a["eventType"] for t, a, _ in received if t == other] == [e for e, _ in on_topic]

    by_type = {attrs["eventType"]: (attrs, data) for topic, attrs, data in received if topic == TOPIC}
    attrs, data = by_type["SECRET_CREATE"]
    assert attrs["secretId"] == f"projects/{PROJECT_NUMBER}/secrets/watched"
    assert attrs["dataFormat"] == "JSON_API_V1"
    assert datetime.fromisoformat(attrs["timestamp"]).tzinfo is not None
    assert json.loads(data)["name"] == f"projects/{PROJECT_NUMBER}/secrets/watched"
    assert json.loads(by_type["SECRET_UPDATE"][1])["labels"] == {"a": "b"}
    version_data = json.loads(by_type["SECRET_VERSION_DESTROY"][1])
    assert version_data["state"] == "DESTROYED" and "payload" not in version_data
    assert by_type["SECRET_DELETE"][0]["deleteType"] == "REQUESTED"
    assert by_type["TOPIC_CONFIGURED"] == ({"eventType": "TOPIC_CONFIGURED"}, b"")
    assert len(sm.notifications()) == len(received)  # the stand-in records what it sent


def test_a_failing_hook_does_not_fail_the_operation(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager

    def broken(topic: str, attributes: dict[str, str], data: bytes) -> None:
        raise RuntimeError("topic unavailable")

    sm.standin.publish_hook = broken
    create(sm, "resilient", topics=[{"name": TOPIC}])
    assert add_version(sm, "resilient", b"x").name.endswith("/versions/1")


def test_a_hook_may_call_back_into_the_stand_in(secretmanager: SecretManagerHandle) -> None:
    """The rotator reacts to events by calling Secret Manager; that must not deadlock."""
    sm = secretmanager
    seen: list[int] = []

    def reentrant(topic: str, attributes: dict[str, str], data: bytes) -> None:
        if attributes["eventType"] == "SECRET_VERSION_ADD":
            seen.append(len(list(sm.client.list_secret_versions(parent=sm.secret_path("loop"), timeout=TIMEOUT))))

    sm.standin.publish_hook = reentrant
    create(sm, "loop", topics=[{"name": TOPIC}])
    add_version(sm, "loop", b"x")
    assert seen == [1]


def test_due_rotations_fire_once_and_advance_by_the_period(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    create(sm, "due", topics=[{"name": TOPIC}], rotation=rotation(400, 3600), labels={"a": "b"})
    create(sm, "later", topics=[{"name": TOPIC}], rotation=rotation(7200, 3600))
    create(sm, "never", topics=[{"name": TOPIC}])
    before = sm.client.get_secret(name=sm.secret_path("due"), timeout=TIMEOUT)
    now = datetime.now(UTC) + timedelta(seconds=401)

    assert sm.standin.fire_due_rotations(now=now) == [f"projects/{PROJECT_NUMBER}/secrets/due"]
    assert sm.standin.fire_due_rotations(now=now) == []

    rotated = sm.notifications("SECRET_ROTATE")
    assert len(rotated) == 1
    assert rotated[0].attributes["secretId"] == f"projects/{PROJECT_NUMBER}/secrets/due"
    assert rotated[0].json()["labels"] == {"a": "b"}
    after = sm.client.get_secret(name=sm.secret_path("due"), timeout=TIMEOUT)
    assert after.rotation.next_rotation_time - before.rotation.next_rotation_time == timedelta(hours=1)


def test_rotation_can_be_fired_over_http(secretmanager: SecretManagerHandle) -> None:
    """For a local cloud whose tests run in another process than the stand-in."""
    sm = secretmanager
    create(sm, "remote", topics=[{"name": TOPIC}], rotation=rotation(400, None))
    at = (datetime.now(UTC) + timedelta(seconds=500)).isoformat().replace("+00:00", "Z")
    response = requests.post(f"{sm.url}/_standin/fire-due-rotations", json={"now": at}, timeout=TIMEOUT)
    assert response.json() == {"fired": [f"projects/{PROJECT_NUMBER}/secrets/remote"]}
    # without a period the schedule is spent
    assert "rotation" not in sm.client.get_secret(name=sm.secret_path("remote"), timeout=TIMEOUT)


def test_the_background_ticker_fires_rotations(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    create(sm, "ticking", topics=[{"name": TOPIC}], rotation=rotation(400, 3600))
    sm.standin.clock = lambda: datetime.now(UTC) + timedelta(seconds=500)
    sm.standin.start_ticker(interval_seconds=0.02)
    try:
        deadline = time.monotonic() + 3
        while not sm.notifications("SECRET_ROTATE") and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sm.standin.stop_ticker()
    assert len(sm.notifications("SECRET_ROTATE")) == 1


def test_expiring_secrets_are_deleted_with_an_expiration_event(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    created = create(sm, "ephemeral", topics=[{"name": TOPIC}], ttl=timedelta(hours=1))
    assert abs(created.expire_time - (datetime.now(UTC) + timedelta(hours=1))) < timedelta(seconds=10)
    sm.standin.tick(now=datetime.now(UTC) + timedelta(hours=2))
    with pytest.raises(gexc.NotFound):
        sm.client.get_secret(name=created.name, timeout=TIMEOUT)
    assert sm.notifications("SECRET_DELETE")[0].attributes["deleteType"] == "EXPIRATION"


def test_delayed_destroy_disables_first_then_destroys(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    create(sm, "delayed", topics=[{"name": TOPIC}], version_destroy_ttl=timedelta(days=1))
    add_version(sm, "delayed", b"x")
    scheduled = sm.client.destroy_secret_version(name=version_path(sm, "delayed", 1), timeout=TIMEOUT)
    assert scheduled.state.name == "DISABLED" and scheduled.scheduled_destroy_time
    sm.standin.tick(now=datetime.now(UTC) + timedelta(days=2))
    assert sm.client.get_secret_version(name=version_path(sm, "delayed", 1), timeout=TIMEOUT).state.name == "DESTROYED"
    assert [n.event_type for n in sm.notifications() if n.event_type.startswith("SECRET_VERSION_DESTROY")] == [
        "SECRET_VERSION_DESTROY_SCHEDULED",
        "SECRET_VERSION_DESTROY",
    ]


# -- access: conditional role bindings ---------------------------------------------------
# As the deployment grants a function its Secret Manager roles: under the condition
# resource.name.startsWith("projects/NUMBER/secrets/dataloop-gar-"), NUMBER the project number.

CALLER = "dataloop-gar-rotate@test-project.iam.gserviceaccount.com"
CALLER_TOKEN = "ya29.local.confined-caller"  # a stand-in token, not a credential
MANAGED = f"projects/{PROJECT_NUMBER}/secrets/dataloop-gar-"


@pytest.fixture
def confined(secretmanager: SecretManagerHandle) -> Iterator[SecretManagerServiceClient]:
    """The generated client of CALLER, whose roles reach only the secrets named dataloop-gar-*."""
    secretmanager.standin.authenticate = {CALLER_TOKEN: CALLER}.get
    secretmanager.standin.restrict(CALLER, CallerAccess(prefixes=(MANAGED,)))
    client = make_client(secretmanager.url, CALLER_TOKEN)
    try:
        yield client
    finally:
        client.transport.close()


def denial(permission: str, resource: str) -> str:
    return f"Permission '{permission}' denied for resource '{resource}' (or it may not exist)."


def raw_get(sm: SecretManagerHandle, path: str, token: str) -> tuple[int, bytes]:
    response = requests.get(f"{sm.url}/v1/{path}", headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
    return response.status_code, response.content


def test_outside_its_prefix_a_confined_caller_is_denied(
    secretmanager: SecretManagerHandle, confined: SecretManagerServiceClient
) -> None:
    sm = secretmanager
    create(sm, "team-a")
    add_version(sm, "team-a", b"not for this caller")
    calls = {
        "secretmanager.secrets.get": (
            sm.secret_path("team-a"),
            lambda: confined.get_secret(name=sm.secret_path("team-a"), timeout=TIMEOUT),
        ),
        "secretmanager.versions.access": (
            sm.secret_path("team-a") + "/versions/latest",
            lambda: confined.access_secret_version(name=sm.secret_path("team-a") + "/versions/latest", timeout=TIMEOUT),
        ),
        "secretmanager.versions.add": (
            sm.secret_path("team-a"),
            lambda: confined.add_secret_version(
                request={"parent": sm.secret_path("team-a"), "payload": {"data": b"x"}}, timeout=TIMEOUT
            ),
        ),
        "secretmanager.secrets.update": (
            sm.secret_path("team-a"),
            lambda: confined.update_secret(
                request={
                    "secret": {"name": sm.secret_path("team-a"), "labels": {"a": "b"}},
                    "update_mask": {"paths": ["labels"]},
                },
                timeout=TIMEOUT,
            ),
        ),
        "secretmanager.secrets.delete": (
            sm.secret_path("team-a"),
            lambda: confined.delete_secret(name=sm.secret_path("team-a"), timeout=TIMEOUT),
        ),
    }
    for permission, (resource, call) in calls.items():
        with pytest.raises(gexc.GoogleAPICallError) as excinfo:
            call()
        assert excinfo.value.code == 403 and api_status(excinfo.value) == "PERMISSION_DENIED", permission
        assert excinfo.value.response.json()["error"]["message"] == denial(permission, resource)
    secret = sm.client.get_secret(name=sm.secret_path("team-a"), timeout=TIMEOUT)  # nothing changed
    assert not secret.labels and len(list(sm.client.list_secret_versions(parent=secret.name, timeout=TIMEOUT))) == 1


def test_a_denial_is_the_same_whether_or_not_the_secret_exists(
    secretmanager: SecretManagerHandle, confined: SecretManagerServiceClient
) -> None:
    sm = secretmanager
    path = f"projects/{PROJECT_ID}/secrets/team-b"
    before = raw_get(sm, path, CALLER_TOKEN)
    create(sm, "team-b")
    after = raw_get(sm, path, CALLER_TOKEN)
    assert before == after
    assert before[0] == 403 and json.loads(before[1])["error"]["message"] == denial("secretmanager.secrets.get", path)
    with pytest.raises(gexc.GoogleAPICallError) as excinfo:
        confined.access_secret_version(name=f"{path}/versions/7", timeout=TIMEOUT)  # no such version either
    assert api_status(excinfo.value) == "PERMISSION_DENIED"


def test_inside_its_prefix_a_confined_caller_may_do_everything(
    secretmanager: SecretManagerHandle, confined: SecretManagerServiceClient
) -> None:
    sm = secretmanager
    created = confined.create_secret(
        request={"parent": sm.parent, "secret_id": "dataloop-gar-team-a", "secret": {"replication": AUTOMATIC}},
        timeout=TIMEOUT,
    )
    version = confined.add_secret_version(request={"parent": created.name, "payload": {"data": b"k"}}, timeout=TIMEOUT)
    number = int(version.name.rsplit("/", 1)[-1])
    confined.update_secret(
        request={
            "secret": {"name": created.name, "version_aliases": {"current": number}},
            "update_mask": {"paths": ["version_aliases"]},
        },
        timeout=TIMEOUT,
    )
    by_number = f"projects/{PROJECT_NUMBER}/secrets/dataloop-gar-team-a"  # the project named either way
    assert confined.access_secret_version(name=f"{by_number}/versions/current", timeout=TIMEOUT).payload.data == b"k"
    assert confined.get_secret(name=created.name, timeout=TIMEOUT).version_aliases == {"current": number}
    # Within its reach the caller is told what does not exist, as any reader is.
    with pytest.raises(gexc.NotFound) as excinfo:
        confined.get_secret(name=sm.secret_path("dataloop-gar-nope"), timeout=TIMEOUT)
    expect_error(excinfo, gexc.NotFound, "NOT_FOUND")


def test_a_condition_naming_the_project_by_id_matches_nothing(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    create(sm, "dataloop-gar-team-a")
    sm.standin.authenticate = {CALLER_TOKEN: CALLER}.get
    sm.standin.restrict(CALLER, CallerAccess(prefixes=(f"projects/{PROJECT_ID}/secrets/dataloop-gar-",)))
    status, body = raw_get(sm, sm.secret_path("dataloop-gar-team-a"), CALLER_TOKEN)
    assert status == 403 and json.loads(body)["error"]["status"] == "PERMISSION_DENIED"


def test_a_secret_of_its_own_grant_is_reachable_and_no_other(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    for secret_id in ("dataloop-api-credentials", "dataloop-api-credentials-old"):
        create(sm, secret_id)
        add_version(sm, secret_id, b"{}")
    sm.standin.authenticate = {CALLER_TOKEN: CALLER}.get
    sm.standin.restrict(CALLER, CallerAccess(prefixes=(MANAGED,), secrets=frozenset({"dataloop-api-credentials"})))
    assert raw_get(sm, sm.secret_path("dataloop-api-credentials") + "/versions/latest:access", CALLER_TOKEN)[0] == 200
    assert (
        raw_get(sm, sm.secret_path("dataloop-api-credentials-old") + "/versions/latest:access", CALLER_TOKEN)[0] == 403
    )


def test_listing_is_checked_on_the_project_and_is_never_narrowed_by_the_condition(
    secretmanager: SecretManagerHandle, confined: SecretManagerServiceClient
) -> None:
    sm = secretmanager
    for secret_id in ("team-a", "dataloop-gar-team-a"):
        create(sm, secret_id)
    listed = {s.name.rsplit("/", 1)[-1] for s in confined.list_secrets(parent=sm.parent, timeout=TIMEOUT)}
    assert listed == {"team-a", "dataloop-gar-team-a"}  # granted on the project: every secret, unfiltered
    sm.standin.restrict(CALLER, CallerAccess(prefixes=(MANAGED,), project_permissions=frozenset()))
    with pytest.raises(gexc.GoogleAPICallError) as excinfo:
        list(confined.list_secrets(parent=sm.parent, timeout=TIMEOUT))
    assert excinfo.value.code == 403
    assert excinfo.value.response.json()["error"]["message"] == denial("secretmanager.secrets.list", sm.parent)
    with pytest.raises(gexc.GoogleAPICallError) as excinfo:
        confined.create_secret(
            request={"parent": sm.parent, "secret_id": "dataloop-gar-new", "secret": {"replication": AUTOMATIC}},
            timeout=TIMEOUT,
        )
    assert excinfo.value.response.json()["error"]["message"] == denial("secretmanager.secrets.create", sm.parent)


def test_the_deployments_grants_read_as_the_access_they_give() -> None:
    grants = function_grants(DeploySettings(project=PROJECT_ID, region="us-central1"))
    assert deployed_access(grants["rotate"], PROJECT_NUMBER) == CallerAccess(
        prefixes=(MANAGED,),
        secrets=frozenset({"dataloop-api-credentials"}),
        project_permissions=frozenset({LIST_PERMISSION}),  # the viewer's project-level clause: list, never create
    )
    requests_access = deployed_access(grants["requests"], PROJECT_NUMBER)
    assert requests_access.prefixes == (MANAGED,)
    assert requests_access.project_permissions == {LIST_PERMISSION, CREATE_PERMISSION}


def test_an_unknown_token_is_unauthenticated_and_an_anonymous_caller_is_unconfined(
    secretmanager: SecretManagerHandle, confined: SecretManagerServiceClient
) -> None:
    sm = secretmanager
    create(sm, "team-a")
    stranger = make_client(sm.url, "ya29.local.unknown")
    try:
        with pytest.raises(gexc.Unauthorized) as excinfo:
            stranger.get_secret(name=sm.secret_path("dataloop-gar-team-a"), timeout=TIMEOUT)
        expect_error(excinfo, gexc.Unauthorized, "UNAUTHENTICATED")
    finally:
        stranger.transport.close()
    assert sm.client.get_secret(name=sm.secret_path("team-a"), timeout=TIMEOUT).name  # the harness's client


# -- the wire harness --------------------------------------------------------------------


def test_injected_faults_reach_the_client_and_calls_are_logged(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    create(sm, "faulty")
    sm.wire.inject(Fault(path=r"/secrets/faulty$", method="GET", status=503, count=1))
    with pytest.raises(gexc.ServiceUnavailable):
        sm.client.get_secret(name=sm.secret_path("faulty"), timeout=TIMEOUT, retry=None)
    assert sm.client.get_secret(name=sm.secret_path("faulty"), timeout=TIMEOUT, retry=None).name
    gets = [c for c in sm.wire.call_log() if c["method"] == "GET" and c["path"].endswith("/secrets/faulty")]
    assert len(gets) == 2


def test_location_scoped_paths_are_not_implemented(secretmanager: SecretManagerHandle) -> None:
    sm = secretmanager
    with pytest.raises(gexc.MethodNotImplemented) as excinfo:
        sm.client.get_secret(name=f"projects/{PROJECT_ID}/locations/us-central1/secrets/x", timeout=TIMEOUT)
    expect_error(excinfo, gexc.MethodNotImplemented, "UNIMPLEMENTED")
