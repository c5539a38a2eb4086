"""Service accounts and their keys (docs/external-apis.md §3), through google-cloud-iam's ``IAMClient``.

``IAMClient`` speaks only gRPC, so this adapter does too; against the local cloud it is
given an insecure channel, so the tests run the very code production runs. API errors are
translated (``shared.adapters.gcp_errors``) into the project's transient/permanent taxonomy, and
the two refusals a rotation will meet sooner or later (the 10-key limit and the
key-creation org policy) get reasons that tell an operator exactly what to change.

Accounts are named ``projects/PROJECT/serviceAccounts/EMAIL`` with the project taken from
the email where it can be (``ID@PROJECT.iam.gserviceaccount.com``): under the ``-``
wildcard IAM answers PERMISSION_DENIED for an account that does not exist, which would
make a missing account indistinguishable from a missing role.

A key that is gone is not reliably NOT_FOUND either: deleting or disabling it may be
answered PERMISSION_DENIED or FAILED_PRECONDITION (docs/external-apis.md §3.5). Such an
answer is taken for "gone" only when a listing of the account's keys agrees.

The key file is secret: it is registered with the redactor as it is parsed, and it never
enters an exception message or a log line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from shared.adapters.gcp_errors import api_message, translated
from shared.adapters.google_clients import LazyClient
from shared.core.errors import PermanentError, TransientError
from shared.model.keys import USER_MANAGED_KEY_LIMIT, KeyInfo, ServiceAccountKey

logger = logging.getLogger(__name__)

KEY_CREATION_CONSTRAINT = "constraints/iam.disableServiceAccountKeyCreation"
KEY_ADMIN_ROLE = "roles/iam.serviceAccountKeyAdmin"
ACCOUNT_ADMIN_ROLE = "roles/iam.serviceAccountAdmin"
_USER_CREATED_DOMAIN = ".iam.gserviceaccount.com"


def account_name(email: str) -> str:
    """The resource name of an account, with its project when the email reveals it."""
    local, _, domain = email.partition("@")
    project = domain.removesuffix(_USER_CREATED_DOMAIN) if local and domain.endswith(_USER_CREATED_DOMAIN) else "-"
    return f"projects/{project or '-'}/serviceAccounts/{email}"


def key_id_of(name: str) -> str:
    """The key id at the end of ``projects/P/serviceAccounts/EMAIL/keys/KEY_ID``."""
    return name.rsplit("/keys/", 1)[-1]


def _needs_key_admin(email: str) -> str:
    return (
        f"Grant this function's service account {KEY_ADMIN_ROLE} on the service account {email} "
        f"(if it is granted, the account may not exist: IAM answers PERMISSION_DENIED for unknown accounts)."
    )


def _needs_account_admin(project: str) -> str:
    where = f"project {project}" if project != "-" else "the account's project"
    return (
        f"Grant this function's service account {ACCOUNT_ADMIN_ROLE} on {where} "
        f"(if it is granted, the account may not exist: IAM answers PERMISSION_DENIED for unknown accounts)."
    )


#: IAM's refusals are coded ``iam`` except the two its callers tell apart.
_CODES = {"NOT_FOUND": "not-found", "FAILED_PRECONDITION": "failed-precondition"}


def _translated(action: str, *, needs: str) -> AbstractContextManager[None]:
    """:func:`shared.adapters.gcp_errors.translated` for IAM; ``needs`` is what to grant on PERMISSION_DENIED."""
    return translated(
        "IAM",
        action,
        permission_hint=needs,
        code="iam",
        codes=_CODES,
        conflict_statuses=(),
    )


def _is_key_limit(exc: BaseException) -> bool:
    """IAM's answers to an 11th user-managed key: today's and the one before ~2022."""
    from google.api_core import exceptions as gexc

    text = api_message(exc).lower()
    if isinstance(exc, gexc.ResourceExhausted):
        return "maximum number of keys" in text
    return isinstance(exc, gexc.FailedPrecondition) and not _is_org_policy(exc) and "precondition check failed" in text


def _is_org_policy(exc: BaseException) -> bool:
    """Whether key creation was refused by ``iam.disableServiceAccountKeyCreation`` (legacy or managed)."""
    texts = [api_message(exc)]
    for detail in getattr(exc, "details", None) or []:
        for violation in getattr(detail, "violations", []):
            texts += [getattr(violation, "type", ""), getattr(violation, "description", "")]
    return any("disableServiceAccountKeyCreation" in t or "Key creation is not allowed" in t for t in texts)


def _retryable(exc: BaseException) -> bool:
    """Transient for idempotent calls; the key limit also arrives as RESOURCE_EXHAUSTED and is not."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.ResourceExhausted):
        return not _is_key_limit(exc)
    return isinstance(exc, (gexc.ServiceUnavailable, gexc.InternalServerError, gexc.DeadlineExceeded))


def _retryable_create(exc: BaseException) -> bool:
    """Only failures that mean the request was not acted on: a retried creation that had
    succeeded would leave an orphan key (the rotator deletes orphans, but they count
    towards the limit)."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.ResourceExhausted):
        return not _is_key_limit(exc)
    return isinstance(exc, gexc.ServiceUnavailable)


class ServiceAccounts:
    """Adapter over ``IAMClient``: service accounts and their user-managed keys."""

    def __init__(
        self, *, endpoint: str | None = None, timeout: float = 10.0, relist_pauses: tuple[float, ...] = (1.0, 2.0)
    ) -> None:
        """``endpoint`` ("HOST:PORT") selects an insecure channel to the local IAM.

        ``relist_pauses``: IAM's listing lags a deletion (docs/external-apis.md §3.5), so a
        key refused 403/400 but still listed is looked for again after each pause before
        the refusal is believed.
        """
        self.endpoint = endpoint
        self.timeout = timeout
        self.relist_pauses = relist_pauses
        self._client = LazyClient(self._build_client)

    def _build_client(self) -> Any:
        from google.cloud.iam_admin_v1 import IAMClient

        if not self.endpoint:
            return IAMClient()
        import grpc
        from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport

        return IAMClient(transport=IAMGrpcTransport(channel=grpc.insecure_channel(self.endpoint)))

    @property
    def client(self) -> Any:
        """The generated client, built on first use and reused (one gRPC channel)."""
        return self._client.get()

    def close(self) -> None:
        """Close the channel (a long-lived function never needs to; tests do)."""
        self._client.close()

    def __enter__(self) -> ServiceAccounts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retry(self, predicate: Callable[[BaseException], bool] = _retryable) -> Any:
        from google.api_core import retry as gretry

        return gretry.Retry(predicate=predicate, initial=0.2, maximum=2.0, multiplier=2.0, timeout=self.timeout * 3)

    def _call(self, method: str, request: dict[str, Any], **retry: Any) -> Any:
        return getattr(self.client, method)(request=request, timeout=self.timeout, retry=self._retry(**retry))

    # -- accounts ---------------------------------------------------------------------
    def ensure_account(
        self, project: str, account_id: str, display_name: str = "", description: str = ""
    ) -> tuple[str, bool]:
        """The account's email, and whether this call created it.

        Idempotent, because a redelivered provisioning request must not fail on the
        account its first delivery created.
        """
        from google.api_core import exceptions as gexc

        request = {
            "name": f"projects/{project}",
            "account_id": account_id,
            "service_account": {"display_name": display_name, "description": description},
        }
        with _translated(
            f"create service account {account_id} in project {project}", needs=_needs_account_admin(project)
        ):
            try:
                created = self._call("create_service_account", request)
            except gexc.AlreadyExists:
                created = None
        if created is not None:
            logger.info("created service account %s", created.email)
            return created.email, True
        email = f"{account_id}@{project}{_USER_CREATED_DOMAIN}"
        found = self.get_account(email)
        if found is None:
            # Deleted between the two calls, or IAM's eventual consistency: either way, later.
            raise TransientError(
                f"service account {email} exists according to IAM but could not be read yet; try again",
                code="account-not-visible",
            )
        return found["email"], False

    def get_account(self, email: str) -> dict[str, Any] | None:
        """The account as a plain dict, or None when IAM says it does not exist."""
        from google.api_core import exceptions as gexc

        with _translated(f"read service account {email}", needs=_needs_account_admin(_project_of(email))):
            try:
                account = self._call("get_service_account", {"name": account_name(email)})
            except gexc.NotFound:
                return None
        return {
            "name": account.name,
            "email": account.email,
            "project_id": account.project_id,
            "unique_id": account.unique_id,
            "display_name": account.display_name,
            "description": account.description,
            "disabled": account.disabled,
        }

    def delete_account(self, email: str) -> bool:
        """Delete an account; False when it was already gone (deprovisioning is redelivered too)."""
        from google.api_core import exceptions as gexc

        with _translated(f"delete service account {email}", needs=_needs_account_admin(_project_of(email))):
            try:
                self._call("delete_service_account", {"name": account_name(email)})
            except gexc.NotFound:
                return False
        logger.info("deleted service account %s", email)
        return True

    # -- keys -----------------------------------------------------------------------------
    def create_key(self, email: str) -> ServiceAccountKey:
        """A new user-managed key file for ``email`` (IAM hands it out only this once).

        Raises:
            PermanentError: ``key-creation-disabled`` (org policy), ``key-limit`` (10 keys),
                ``permission-denied``, ``bad-key`` (IAM's answer is not a consistent key file).
            ServiceUnavailable: IAM could not be reached after retries.
        """
        from google.api_core import exceptions as gexc
        from google.cloud.iam_admin_v1 import types

        request = {
            "name": account_name(email),
            "private_key_type": types.ServiceAccountPrivateKeyType.TYPE_GOOGLE_CREDENTIALS_FILE,
            "key_algorithm": types.ServiceAccountKeyAlgorithm.KEY_ALG_RSA_2048,
        }
        with _translated(f"create a key for {email}", needs=_needs_key_admin(email)):
            try:
                created = self._call("create_service_account_key", request, predicate=_retryable_create)
            except (gexc.FailedPrecondition, gexc.ResourceExhausted) as exc:
                refusal = self._key_creation_refused(email, exc)
                if refusal is None:
                    raise
                raise refusal from None
        iam_key_id = key_id_of(created.name)
        try:
            key = ServiceAccountKey.from_json(_key_file_bytes(created.private_key_data), source=f"new key of {email}")
        except PermanentError:
            self._discard(created.name)
            raise
        if key.key_id != iam_key_id or key.client_email != email:
            self._discard(created.name)
            raise PermanentError(
                f"IAM created key {iam_key_id} for {email} but its key file names key {key.key_id} of "
                f"{key.client_email}; refusing to store an inconsistent key (it was deleted)",
                code="bad-key",
            )
        logger.info("created key %s for %s", key.key_id, email)
        # Under the key-expiry org policy this is the key's end (docs/external-apis.md §3.3).
        return dataclasses.replace(key, valid_before=_datetime(created.valid_before_time))

    def list_keys(self, email: str) -> list[KeyInfo]:
        """User-managed keys only, oldest first: Google-managed keys are not ours to rotate."""
        from google.cloud.iam_admin_v1 import types

        request = {
            "name": account_name(email),
            "key_types": [types.ListServiceAccountKeysRequest.KeyType.USER_MANAGED],
        }
        with _translated(f"list the keys of {email}", needs=_needs_key_admin(email)):
            response = self._call("list_service_account_keys", request)
        keys = [
            KeyInfo(
                key_id=key_id_of(k.name),
                name=k.name,
                valid_after=_datetime(k.valid_after_time),
                valid_before=_datetime(k.valid_before_time),
                disabled=bool(k.disabled),
            )
            for k in response.keys
        ]
        return sorted(keys, key=lambda k: k.valid_after or dt.datetime.min.replace(tzinfo=dt.UTC))

    def delete_key(self, email: str, key_id: str) -> bool:
        """Delete a key; False when it was already gone (a resumed rotation or a redelivered
        deprovision deletes again, and must not fail on what the first attempt did)."""
        return self._key_call("delete_service_account_key", "delete", email, key_id)

    def disable_key(self, email: str, key_id: str) -> bool:
        """Disable a key (reversible, unlike delete); False when it no longer exists."""
        return self._key_call("disable_service_account_key", "disable", email, key_id)

    def _key_call(self, method: str, verb: str, email: str, key_id: str) -> bool:
        from google.api_core import exceptions as gexc

        with _translated(f"{verb} key {key_id} of {email}", needs=_needs_key_admin(email)):
            try:
                self._call(method, {"name": f"{account_name(email)}/keys/{key_id}"})
            except gexc.NotFound:
                return False
            except (gexc.PermissionDenied, gexc.FailedPrecondition):
                # IAM answers some gone keys this way too (docs/external-apis.md §3.5).
                if not self._listing_shows_gone(email, key_id):
                    raise
                logger.info(
                    "key %s of %s is already gone (IAM refused to %s it, and no longer lists it)", key_id, email, verb
                )
                return False
        logger.info("%s key %s of %s", "deleted" if verb == "delete" else "disabled", key_id, email)
        return True

    def _listing_shows_gone(self, email: str, key_id: str) -> bool:
        """Whether IAM's listing says the key (or its whole account) is gone.

        A 403 or 400 alone cannot tell a gone key from a real refusal, and treating a real
        refusal as "gone" would leave a key behind believed deleted; the listing can. Every
        key type is listed, so a refused Google-managed key is not mistaken for a gone one.
        When the listing itself is refused, nothing is known and the refusal stands; when
        IAM is unreachable, the RetryError becomes ServiceUnavailable, so the caller retries.
        """
        from google.api_core import exceptions as gexc

        for pause in (*self.relist_pauses, None):
            try:
                listed = self._call("list_service_account_keys", {"name": account_name(email)})
            except gexc.NotFound:
                return True  # the account is gone, and its keys with it
            except gexc.GoogleAPICallError:
                return False
            if all(key_id_of(k.name) != key_id for k in listed.keys):
                return True
            if pause is None:
                return False
            time.sleep(pause)
        return False

    def _key_creation_refused(self, email: str, exc: BaseException) -> PermanentError | None:
        """The PermanentError for a refused key creation, or None when it is not one we know."""
        if _is_org_policy(exc):
            project = _project_of(email)
            return PermanentError(
                f"IAM refused to create a key for {email}: the organization policy {KEY_CREATION_CONSTRAINT} "
                f"(or its managed form iam.managed.disableServiceAccountKeyCreation) is enforced on project {project}. "
                f"An organization policy administrator (roles/orgpolicy.policyAdmin) must exempt this project: "
                f"override the constraint on projects/{project} with enforcement off, or exempt it through a "
                f"tag-conditioned rule; Dataloop's registry integration needs a key file, so there is no keyless way.",
                code="key-creation-disabled",
            )
        if not _is_key_limit(exc):
            return None
        try:
            count: int | None = len(self.list_keys(email))
        except (PermanentError, TransientError):
            count = None
        held = f"has {count} user-managed keys" if count is not None else "has reached its user-managed keys"
        return PermanentError(
            f"IAM refused to create a key for {email}: the account {held}, the limit is {USER_MANAGED_KEY_LIMIT}; "
            f"delete unused keys (gcloud iam service-accounts keys list --iam-account={email} --managed-by=user)",
            code="key-limit",
        )

    def _discard(self, key_name: str) -> None:
        """Best effort: a key we refuse to hand out must not stay behind counting to the limit."""
        from google.api_core import exceptions as gexc

        try:
            self._call("delete_service_account_key", {"name": key_name})
        except gexc.GoogleAPIError:
            logger.warning("could not delete refused key %s; the next rotation removes orphans", key_id_of(key_name))


def _project_of(email: str) -> str:
    return account_name(email).split("/")[1]


def _key_file_bytes(data: bytes) -> bytes:
    """gRPC carries the key file's raw JSON; tolerate the REST form (base64 of it) too."""
    raw = bytes(data)
    if raw.lstrip()[:1] == b"{":
        return raw
    import base64
    import binascii

    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return raw  # from_json will refuse it without quoting it


def _datetime(value: Any) -> dt.datetime | None:
    """proto-plus hands Timestamps out as datetimes; an unset one is the epoch."""
    if not value:
        return None
    moment = dt.datetime.fromtimestamp(value.timestamp(), dt.UTC)
    return None if moment.timestamp() == 0 else moment
