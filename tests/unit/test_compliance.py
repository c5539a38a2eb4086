"""The compliance line: every managed account's user-managed keys against CIS 1.7, and keys nobody recorded."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import cli
from shared.core.errors import TransientError
from shared.model.integrations import Annotation
from shared.model.record import timestamp
from shared.model.request import StatusRequest, parse_request
from shared.workflows.status import StatusReport
from tests.fixtures.policy import policy_for
from tests.unit.fakes import FakeAccounts, FakeSecrets, integration_annotations
from tests.unit.test_status import FakeChannel, entry

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
PROJECT = "test-proj"
MADE = f"dlgar-team-a@{PROJECT}.iam.gserviceaccount.com"  # carries the mark of accounts this system creates
ADOPTED = f"puller@{PROJECT}.iam.gserviceaccount.com"
POLICY = policy_for(
    org_ids=["org-1"], project=PROJECT, location="us-central1", repositories=["images"], service_accounts=[ADOPTED]
)


class World:
    def __init__(self) -> None:
        self.secrets = FakeSecrets()
        self.accounts = FakeAccounts(clock=lambda: NOW, key_id="key-{}".format)
        self.built = 0

    def integration(self, name: str, account: str, *, keys_made: list[str]) -> None:
        """An integration whose ledger lists ``keys_made``."""
        self.secrets.put(
            f"dataloop-gar-{name}",
            integration_annotations(
                **{
                    Annotation.INTEGRATION_NAME: name,
                    Annotation.SERVICE_ACCOUNT: account,
                    Annotation.ROTATED_AT: timestamp(NOW - timedelta(days=2)),
                    Annotation.CREATED_KEYS: ",".join(keys_made),
                }
            ),
        )

    def key(self, account: str, *, age_days: float) -> str:
        self.accounts.add(account, at=NOW - timedelta(days=age_days))
        return self.accounts.live(account)[-1]

    def keys(self) -> FakeAccounts:
        self.built += 1
        return self.accounts

    def status(self, *, compliance: bool = True, name: str | None = None, policy: Any = POLICY) -> dict[str, Any]:
        report = StatusReport(
            self.secrets, default_rotation_period_days=30, keys=self.keys, policy=policy, clock=lambda: NOW
        )
        outcome = report.status(StatusRequest(name, compliance=compliance))
        assert outcome.status == "ok", outcome.reason
        return outcome.details


def test_keys_of_the_system_within_90_days_are_compliant_and_each_shared_account_is_listed_once():
    world = World()
    first, second = world.key(MADE, age_days=40), world.key(MADE, age_days=2)
    world.integration("team-a", MADE, keys_made=[first, second])
    world.integration("team-b", MADE, keys_made=[])  # shares the account; its ledger is empty

    found = world.status()["compliance"]

    assert world.accounts.calls.count("list_keys") == 1
    assert found["compliant"] is True and found["keys"] == 2 and found["keys_over_age"] == 0
    assert found["benchmark"].startswith("CIS GCP Foundations Benchmark") and found["max_key_age_days"] == 90
    (account,) = found["accounts"]
    assert account["account"] == MADE and account["integrations"] == ["team-a", "team-b"]
    assert [(k["key_id"], k["age_days"], k["created_by_system"]) for k in account["keys"]] == [
        (first, 40.0, True),
        (second, 2.0, True),
    ]
    assert account["not_created_by_system"] == [] and account["created_by_system"] is True


def test_a_key_older_than_90_days_breaks_compliance_and_one_made_by_hand_is_named():
    world = World()
    old, by_hand, ours = world.key(MADE, age_days=91), world.key(MADE, age_days=5), world.key(MADE, age_days=1)
    world.integration("team-a", MADE, keys_made=[old, ours])

    report = StatusReport(
        world.secrets, default_rotation_period_days=30, keys=world.keys, policy=POLICY, clock=lambda: NOW
    ).status(StatusRequest(compliance=True))
    found = report.details["compliance"]

    assert found["compliant"] is False and found["keys_over_age"] == 1 and found["keys_not_created_by_system"] == 1
    assert report.reason.endswith(
        "; keys NOT compliant with CIS 1.7 (3 key(s) on 1 account(s), 1 over 90 days, 1 not created by this system)"
    )
    (account,) = found["accounts"]
    assert account["over_age"] == [old] and account["not_created_by_system"] == [by_hand]


def test_a_90_day_old_key_is_still_within_the_benchmark():
    world = World()
    key = world.key(MADE, age_days=90)
    world.integration("team-a", MADE, keys_made=[key])
    assert world.status()["compliance"]["compliant"] is True


def test_an_account_outside_the_access_policy_is_reported_unchecked_and_never_listed():
    world = World()
    elsewhere = "dlgar-x@another-proj.iam.gserviceaccount.com"
    world.key(elsewhere, age_days=200)
    world.integration("team-x", elsewhere, keys_made=[])  # an annotation edited by hand to point elsewhere

    found = world.status()["compliance"]

    assert "list_keys" not in world.accounts.calls
    assert found["compliant"] is False and found["accounts_unchecked"] == 1
    (account,) = found["accounts"]
    assert account["keys"] == [] and "another-proj" in account["unchecked"]


def test_an_iam_error_leaves_that_account_unchecked_and_the_others_reported() -> None:
    world = World()
    world.integration("team-a", MADE, keys_made=[world.key(MADE, age_days=1)])
    world.integration("team-b", ADOPTED, keys_made=[world.key(ADOPTED, age_days=1)])
    listed = world.accounts.list_keys

    def flaky(email: str) -> Any:
        if email == ADOPTED:
            raise TransientError("IAM is unavailable (HTTP 503)")
        return listed(email)

    world.accounts.list_keys = flaky  # type: ignore[method-assign]

    found = world.status()["compliance"]

    by_account = {a["account"]: a for a in found["accounts"]}
    assert by_account[ADOPTED]["unchecked"] == "IAM is unavailable (HTTP 503)"
    assert by_account[MADE]["unchecked"] is None and len(by_account[MADE]["keys"]) == 1
    assert found["compliant"] is False and found["accounts_checked"] == 1


def test_without_compliance_iam_is_not_even_built():
    world = World()
    world.integration("team-a", MADE, keys_made=[world.key(MADE, age_days=1)])
    assert "compliance" not in world.status(compliance=False)
    assert world.built == 0 and "list_keys" not in world.accounts.calls


def test_a_deprovisioned_record_has_no_account_to_check():
    world = World()
    world.integration("team-a", MADE, keys_made=[])
    world.secrets.secrets["dataloop-gar-team-a"].labels.clear()  # no longer labelled managed
    found = world.status()["compliance"]
    assert found["accounts"] == [] and world.built == 0


def test_the_request_field_is_validated_like_every_other():
    assert parse_request(json.dumps({"version": 1, "action": "status", "compliance": True})) == StatusRequest(
        compliance=True
    )
    with pytest.raises(Exception, match="compliance"):
        parse_request(json.dumps({"version": 1, "action": "status", "compliance": "yes"}))


# -- the CLI ---------------------------------------------------------------------------------------------


def compliance(**accounts: dict[str, Any]) -> dict[str, Any]:
    return {
        "benchmark": "CIS GCP Foundations Benchmark, recommendation 1.7",
        "max_key_age_days": 90,
        "compliant": not any(a.get("over_age") or a.get("unchecked") for a in accounts.values()),
        "accounts_checked": sum(1 for a in accounts.values() if not a.get("unchecked")),
        "accounts_unchecked": sum(1 for a in accounts.values() if a.get("unchecked")),
        "keys": sum(len(a.get("keys", [])) for a in accounts.values()),
        "keys_over_age": sum(len(a.get("over_age", [])) for a in accounts.values()),
        "keys_not_created_by_system": sum(len(a.get("not_created_by_system", [])) for a in accounts.values()),
        "accounts": [{"account": email, **a} for email, a in accounts.items()],
    }


def key(key_id: str, age: float, *, ours: bool = True) -> dict[str, Any]:
    return {
        "key_id": key_id,
        "created_at": timestamp(NOW - timedelta(days=age)),
        "age_days": age,
        "expires_at": None,
        "disabled": False,
        "created_by_system": ours,
        "over_age": age > 90,
    }


def run(monkeypatch: pytest.MonkeyPatch, found: dict[str, Any], *extra: str) -> tuple[int, str, str]:
    monkeypatch.setattr(cli, "RequestChannel", FakeChannel)
    reply = {"status": "ok", "reason": "…", "details": {"integrations": [entry()], "compliance": found}}
    monkeypatch.setattr(FakeChannel, "reply", reply)
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["status", "--wait", "--pubsub-project", "p", *extra], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_the_cli_asks_for_compliance_and_prints_one_line_under_the_table(monkeypatch):
    found = compliance(**{MADE: {"created_by_system": True, "keys": [key("k1", 3)], "over_age": []}})
    code, out, _ = run(monkeypatch, found)
    assert FakeChannel.sent["compliance"] is True
    assert code == 0
    last = out.splitlines()[-1]
    assert last.startswith("CIS GCP Foundations Benchmark, recommendation 1.7") and "compliant; 1 account(s)" in last


def test_an_old_key_or_one_nobody_recorded_is_a_line_of_its_own_and_exit_5(monkeypatch):
    found = compliance(
        **{
            MADE: {"created_by_system": True, "keys": [key("old", 120), key("hand", 1, ours=False)],
                   "over_age": ["old"], "not_created_by_system": ["hand"]},
        }
    )  # fmt: skip
    code, out, err = run(monkeypatch, found)
    assert code == cli.EXIT_ATTENTION
    assert "NOT COMPLIANT" in out
    assert f"{MADE}: key old (created " in out and "120 d): older than 90 days" in out
    assert f"{MADE}: key hand" in out and "not created by this system" in out
    assert (
        f"{MADE}: key(s) older than 90 days: old" in err and f"{MADE}: key(s) this system did not create: hand" in err
    )


def test_an_adopted_accounts_other_keys_are_listed_but_do_not_page(monkeypatch):
    found = compliance(
        **{
            ADOPTED: {
                "created_by_system": False,
                "keys": [key("tool", 10, ours=False)],
                "not_created_by_system": ["tool"],
            }
        }
    )
    code, out, _ = run(monkeypatch, found)
    assert code == 0 and f"{ADOPTED}: key tool" in out


def test_an_unchecked_account_needs_someone(monkeypatch):
    found = compliance(**{ADOPTED: {"created_by_system": False, "keys": [], "unchecked": "IAM is unavailable"}})
    code, out, err = run(monkeypatch, found)
    assert code == 5 and "1 NOT checked" in out and f"{ADOPTED}: not checked: IAM is unavailable" in out
    assert "keys not checked" in err


def test_no_account_no_compliance_line(monkeypatch):
    code, out, _ = run(monkeypatch, compliance())
    assert code == 0 and "CIS" not in out


def test_no_compliance_leaves_the_field_out_of_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(monkeypatch, None, "--no-compliance")  # type: ignore[arg-type]
    assert "compliance" not in FakeChannel.sent and code == 0 and "CIS" not in out
