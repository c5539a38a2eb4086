"""The ``created-keys`` ledger: the only keys this system ever cleans up as orphans."""

from __future__ import annotations

from typing import Any, cast

import pytest

from shared.core.errors import ServiceUnavailable
from shared.model import key_ledger
from shared.model.integrations import Annotation
from shared.model.keys import ServiceAccountKey
from shared.ports import KeyAccounts, SecretStore
from shared.workflows.stored_keys import create_key
from tests.unit.fakes import key_json

EMAIL = "dlgar-team-a@test-project.iam.gserviceaccount.com"


def test_malformed_entries_of_a_hand_edited_ledger_are_ignored() -> None:
    notes = {Annotation.CREATED_KEYS: " abc123 ,, ../x,k e y," + "a" * 65 + ",def456"}

    assert key_ledger.created_keys(notes) == {"abc123", "def456"}
    assert key_ledger.created_keys({}) == frozenset()


def test_adding_a_key_forgets_ids_that_are_no_longer_on_the_account() -> None:
    notes = {Annotation.CREATED_KEYS: "gone,kept", "other": "x"}

    updated = key_ledger.with_created_key(notes, "new", live={"kept", "unrelated"})

    assert updated[Annotation.CREATED_KEYS] == "kept,new" and updated["other"] == "x"


def test_only_listed_live_unstored_keys_are_orphans() -> None:
    notes = {Annotation.CREATED_KEYS: "stored,orphan,deleted-already"}

    assert key_ledger.unstored(notes, live={"stored", "orphan", "someone-elses"}, stored={"stored"}) == ["orphan"]


class _Accounts:
    def __init__(self) -> None:
        self.live: set[str] = set()
        self.delete_fails = False

    def create_key(self, email: str) -> ServiceAccountKey:
        key = ServiceAccountKey.from_json(key_json(f"k{len(self.live) + 1}", email))
        self.live.add(key.key_id)
        return key

    def delete_key(self, email: str, key_id: str) -> bool:
        if self.delete_fails:
            raise ServiceUnavailable("IAM unavailable")
        self.live.discard(key_id)
        return True


class _Versions:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.stored: list[bytes] = []

    def add_version(self, secret_id: str, payload: bytes) -> int:
        if self.error is not None:
            raise self.error
        self.stored.append(payload)
        return len(self.stored)


def test_a_key_is_recorded_before_it_is_stored() -> None:
    accounts, versions, order = _Accounts(), _Versions(), []

    def record(key_id: str) -> None:
        order.append(("recorded", key_id, len(versions.stored)))

    version, key = create_key(cast(KeyAccounts, accounts), cast(SecretStore, versions), "s", EMAIL, record)

    assert order == [("recorded", key.key_id, 0)] and version == 1 and accounts.live == {key.key_id}


@pytest.mark.parametrize("failing", ["record", "store"])
def test_a_key_that_cannot_be_recorded_or_stored_is_deleted_at_once(failing: str) -> None:
    accounts = _Accounts()
    versions = _Versions(ServiceUnavailable("Secret Manager unavailable") if failing == "store" else None)

    def record(key_id: str) -> Any:
        if failing == "record":
            raise ServiceUnavailable("Secret Manager unavailable")

    with pytest.raises(ServiceUnavailable):
        create_key(cast(KeyAccounts, accounts), cast(SecretStore, versions), "s", EMAIL, record)

    assert accounts.live == set()


def test_a_failed_clean_up_keeps_the_original_error() -> None:
    accounts = _Accounts()
    accounts.delete_fails = True

    with pytest.raises(ServiceUnavailable, match="Secret Manager"):
        create_key(
            cast(KeyAccounts, accounts),
            cast(SecretStore, _Versions(ServiceUnavailable("Secret Manager unavailable"))),
            "s",
            EMAIL,
            lambda _: None,
        )

    assert len(accounts.live) == 1  # left for the next run, which finds it in the ledger
