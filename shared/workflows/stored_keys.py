"""The keys an integration's secret stores: how one is made, and how one is read back.

One path for provisioning's first key and every rotation's key, so that the rule of the
``created-keys`` ledger (:mod:`shared.model.key_ledger`) holds for every key the system
makes: its id is recorded before it is stored, and a failure leaves nothing unrecorded.
Reading a version back always parses it as a key file and names the version in any error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from shared.core.logs import log
from shared.model.keys import ServiceAccountKey
from shared.ports import KeyAccounts, SecretStore

logger = logging.getLogger(__name__)


def create_key(
    accounts: KeyAccounts,
    secrets: SecretStore,
    secret_id: str,
    email: str,
    record_created: Callable[[str], None],
) -> tuple[int, ServiceAccountKey]:
    """Create a key for ``email``, record its id with ``record_created``, store it as a version.

    ``record_created`` writes the ledger entry (each caller under its own concurrency rule:
    rotation's lease, provisioning's etag). When it or the store fails, the new key is
    deleted at once if possible, so a failure leaves nothing behind; if that deletion
    fails too, the ledger (when written) lets the next run clean up.

    Returns:
        The new version number and the key.
    """
    key = accounts.create_key(email)
    try:
        record_created(key.key_id)
        version = secrets.add_version(secret_id, key.json_text.encode("utf-8"))
    except BaseException:
        try:
            accounts.delete_key(email, key.key_id)
        except Exception as exc:  # the original failure is the one to report
            log(
                logger,
                logging.WARNING,
                f"could not delete new key {key.key_id} after a failed store; the next run deletes it",
                secret_id=secret_id,
                error=str(exc),
            )
        raise
    return version, key


def read_key(secrets: SecretStore, secret_id: str, version: int | str) -> ServiceAccountKey:
    """The key stored in ``version`` (a number or an alias) of ``secret_id``.

    Raises:
        PermanentError: the version is missing or does not hold a key file (``bad-key``).
    """
    number, payload = secrets.access(secret_id, version)
    return ServiceAccountKey.from_json(payload, source=f"secret {secret_id} version {number}")
