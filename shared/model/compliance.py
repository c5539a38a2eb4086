"""Key compliance: the managed accounts' user-managed keys, their age, and who made them.

The CIS Google Cloud Platform Foundations Benchmark, recommendation 1.7 ("Ensure
user-managed/external keys for service accounts are rotated every 90 days or less"), audits
every user-managed key's ``validAfterTime`` (its creation) against 90 days; the audit does not
set disabled or expired keys apart, so neither does this (docs/external-apis.md §3.7). This
system rotates well inside that, so a key older than 90 days on a managed account means a
rotation has not happened, or a key was made by hand.

A key the system did not create (absent from every sharing integration's ``created-keys``
ledger, shared.model.key_ledger) is reported, never acted on: on an account this system created,
it means someone minted a credential for Dataloop's puller and needs a person; on an adopted
account it may be another tool's, and is listed for the reviewer to judge.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass

from shared.model.keys import KeyInfo
from shared.model.record import timestamp

BENCHMARK = "CIS GCP Foundations Benchmark, recommendation 1.7"
MAX_KEY_AGE_DAYS = 90


@dataclass(frozen=True)
class KeyAge:
    """One user-managed key as the compliance report lists it (identity and dates, no material)."""

    key_id: str
    created_at: str | None
    age_days: float | None  # None: IAM gave no creation time
    expires_at: str | None
    disabled: bool
    created_by_system: bool

    @property
    def over_age(self) -> bool:
        return self.age_days is not None and self.age_days > MAX_KEY_AGE_DAYS


@dataclass(frozen=True)
class AccountKeys:
    """A managed service account's keys, or why they could not be read."""

    account: str
    integrations: tuple[str, ...]
    created_by_system: bool  # the account's id carries the mark of accounts this system creates
    keys: tuple[KeyAge, ...] = ()
    unchecked: str | None = None  # why the keys were not listed (refused by the policy, IAM error)

    @property
    def over_age(self) -> list[KeyAge]:
        return [k for k in self.keys if k.over_age]

    @property
    def foreign(self) -> list[KeyAge]:
        return [k for k in self.keys if not k.created_by_system]

    def to_json(self) -> dict[str, object]:
        return {
            "account": self.account,
            "integrations": list(self.integrations),
            "created_by_system": self.created_by_system,
            "keys": [asdict(k) | {"over_age": k.over_age} for k in self.keys],
            "over_age": [k.key_id for k in self.over_age],
            "not_created_by_system": [k.key_id for k in self.foreign],
            "unchecked": self.unchecked,
        }


def account_keys(
    account: str,
    integrations: Sequence[str],
    keys: Sequence[KeyInfo],
    created: Collection[str],
    now: dt.datetime,
    *,
    created_by_system: bool,
) -> AccountKeys:
    """The report of one account from IAM's listing and the ledgers of the integrations sharing it."""
    listed = tuple(
        KeyAge(
            key_id=key.key_id,
            created_at=timestamp(key.valid_after) if key.valid_after else None,
            age_days=round((now - key.valid_after).total_seconds() / 86400, 2) if key.valid_after else None,
            expires_at=timestamp(key.expires_at) if key.expires_at else None,
            disabled=key.disabled,
            created_by_system=key.key_id in created,
        )
        for key in keys
    )
    return AccountKeys(account, tuple(sorted(integrations)), created_by_system, listed)


def compliance_summary(accounts: Sequence[AccountKeys]) -> dict[str, object]:
    """The reply's ``compliance`` document: one line's worth of verdict, then every account."""
    checked = [a for a in accounts if a.unchecked is None]
    keys = sum(len(a.keys) for a in checked)
    over_age = sum(len(a.over_age) for a in checked)
    foreign = sum(len(a.foreign) for a in checked)
    unchecked = len(accounts) - len(checked)
    return {
        "benchmark": BENCHMARK,
        "max_key_age_days": MAX_KEY_AGE_DAYS,
        "compliant": over_age == 0 and unchecked == 0,
        "accounts_checked": len(checked),
        "accounts_unchecked": unchecked,
        "keys": keys,
        "keys_over_age": over_age,
        "keys_not_created_by_system": foreign,
        "accounts": [a.to_json() for a in accounts],
    }


def compliance_reason(summary: dict[str, object]) -> str:
    """The clause a status reply's reason gets: the verdict and what breaks it, in counts."""
    verdict = "keys compliant with CIS 1.7" if summary["compliant"] else "keys NOT compliant with CIS 1.7"
    found = [
        f"{summary[field]} {what}"
        for field, what in (
            ("keys_over_age", "over 90 days"),
            ("keys_not_created_by_system", "not created by this system"),
            ("accounts_unchecked", "account(s) not checked"),
        )
        if summary[field]
    ]
    return (
        f"{verdict} ({summary['keys']} key(s) on {summary['accounts_checked']} account(s)"
        + "".join(f", {f}" for f in found)
        + ")"
    )
