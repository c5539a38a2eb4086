"""A local IAM Admin API: service accounts and their keys, over gRPC.

``google-cloud-iam``'s ``IAMClient`` speaks only gRPC, so the stand-in is a gRPC server
for ``google.iam.admin.v1.IAM`` that the real client reaches through
``IAMGrpcTransport(channel=grpc.insecure_channel(target))``. The installed packages carry
only proto-plus types for this API (no generated servicer), so the methods are
registered as generic handlers using the types' own ``serialize``/``deserialize``.

What it reproduces, because the rotation protocol depends on it (docs/external-apis.md §3):

- key files are real RSA 2048 keys in Google's key-file JSON (``localcloud.keyfiles``),
  returned once, as raw bytes, in ``private_key_data``;
- at most 10 user-managed keys per account → ``FAILED_PRECONDITION`` "Precondition check
  failed." (what IAM has answered since ~2022; it used to be ``RESOURCE_EXHAUSTED``
  "Maximum number of keys on account reached.", selectable with ``key_limit_status``);
- the ``iam.disableServiceAccountKeyCreation`` org policy → ``FAILED_PRECONDITION``
  "Key creation is not allowed on this service account." with a ``PreconditionFailure``;
- ``projects/-/serviceAccounts/EMAIL`` names; with ``-`` a missing account answers
  ``PERMISSION_DENIED`` to get/delete, as the API reference warns;
- every account also has a system-managed key, so listing without
  ``key_types=[USER_MANAGED]`` shows keys a rotation must never touch;
- a new key only authenticates after a configurable propagation delay (checked by
  :meth:`IamState.check_key_file`, which the local registry's token endpoint uses);
- a key that is gone, or whose account is gone, is not reliably ``NOT_FOUND`` to get,
  delete, disable or enable: ``PERMISSION_DENIED`` and ``FAILED_PRECONDITION`` are
  selectable with ``gone_key_status`` (§3.5), and a deleted key can go on being listed
  for ``deleted_key_listings`` listings (the listing lags the deletion).
- the ``iam.serviceAccountKeyExpiryHours`` org policy (docs/external-apis.md §3.3): with
  :meth:`IamState.set_key_expiry`, every key created afterwards carries a
  ``valid_before_time`` that far in the future and stops authenticating then; keys made
  before are untouched, as the policy is not retroactive.

Error texts come from real responses quoted in public issue threads; the ones that could
not be confirmed are marked *unconfirmed* where they are raised.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import load_pem_x509_certificate
from google.cloud.iam_admin_v1.types import iam as iam_types
from google.protobuf import empty_pb2, timestamp_pb2
from google.rpc import error_details_pb2

from localcloud.google_errors import GoogleApiError
from localcloud.keyfiles import generate_key_file, service_account_email

SERVICE = "google.iam.admin.v1.IAM"
USER_MANAGED_KEY_LIMIT = 10
KEY_CREATION_CONSTRAINT = "constraints/iam.disableServiceAccountKeyCreation"
#: What IAM reports as the end of validity for a user-managed key with no expiry policy.
NEVER_EXPIRES = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
SYSTEM_KEY_LIFETIME = dt.timedelta(days=14)

_ACCOUNT_ID = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])")
_PROJECT_NAME = re.compile(r"projects/(?P<project>[^/]+)")
_ACCOUNT_NAME = re.compile(r"projects/(?P<project>[^/]+)/serviceAccounts/(?P<account>[^/]+)")
_KEY_NAME = re.compile(r"projects/(?P<project>[^/]+)/serviceAccounts/(?P<account>[^/]+)/keys/(?P<key>[^/]+)")

KeyType = iam_types.ListServiceAccountKeysRequest.KeyType


@dataclass
class ServiceAccountRecord:
    project_id: str
    account_id: str
    email: str
    unique_id: str
    display_name: str = ""
    description: str = ""
    disabled: bool = False

    @property
    def name(self) -> str:
        return f"projects/{self.project_id}/serviceAccounts/{self.email}"


@dataclass
class KeyRecord:
    """One key as IAM remembers it: the public half and lifecycle, never the private key."""

    email: str
    project_id: str
    key_id: str
    key_type: int  # a KeyType value (proto-plus enums are ints, and typed as such)
    created_at: float
    valid_after: dt.datetime
    valid_before: dt.datetime
    public_certificate_pem: bytes = field(repr=False)
    disabled: bool = False
    deleted: bool = False
    #: Listings that still show this key although it is deleted (IAM's lagging listing).
    stale_listings: int = 0

    @property
    def name(self) -> str:
        return f"projects/{self.project_id}/serviceAccounts/{self.email}/keys/{self.key_id}"


@dataclass(frozen=True)
class KeyCheck:
    """Why a presented key file was accepted or refused; never carries key material."""

    email: str | None
    reason: str

    @property
    def accepted(self) -> bool:
        return self.email is not None


class IamState:
    """Service accounts, keys, access tokens and the switches tests flip. Thread-safe.

    Time is ``time.time() + offset`` so tests can move past the propagation delay or a
    token's expiry with :meth:`advance` instead of sleeping.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._accounts: dict[str, ServiceAccountRecord] = {}  # email -> account
        self._keys: dict[str, KeyRecord] = {}  # key id -> key (deleted ones kept, flagged)
        self._tokens: dict[str, tuple[str, float]] = {}  # access token -> (email, expires at)
        self._verified: set[tuple[str, str]] = set()  # (key id, sha256 of presented private key)
        self._offset = 0.0
        self.propagation_delay_seconds = 0.0
        self.key_creation_disabled = False
        #: FAILED_PRECONDITION today; RESOURCE_EXHAUSTED to replay what IAM answered before ~2022.
        self.key_limit_status = grpc.StatusCode.FAILED_PRECONDITION
        #: What a call on a gone key (or a key of a gone account) answers: NOT_FOUND,
        #: PERMISSION_DENIED or FAILED_PRECONDITION, all met in practice (§3.5).
        self.gone_key_status = grpc.StatusCode.NOT_FOUND
        #: How many listings of its account still show a key after it is deleted.
        self.deleted_key_listings = 0
        #: The key-expiry org policy, in seconds (None: keys never expire).
        self.key_expiry_seconds: float | None = None

    def reset(self) -> None:
        """Forget everything and restore the defaults (no delay, no org policy)."""
        with self._lock:
            self._accounts.clear()
            self._keys.clear()
            self._tokens.clear()
            self._verified.clear()
            self._offset = 0.0
            self.propagation_delay_seconds = 0.0
            self.key_creation_disabled = False
            self.key_limit_status = grpc.StatusCode.FAILED_PRECONDITION
            self.gone_key_status = grpc.StatusCode.NOT_FOUND
            self.deleted_key_listings = 0
            self.key_expiry_seconds = None

    # -- test helpers ----------------------------------------------------------------
    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move this stand-in's clock forward (key ages, token expiry)."""
        with self._lock:
            self._offset += seconds

    def set_propagation_delay(self, seconds: float) -> None:
        """New keys are refused at the registry for this long, like IAM's eventual consistency."""
        with self._lock:
            self.propagation_delay_seconds = seconds

    def set_key_creation_disabled(self, enforced: bool = True) -> None:
        """Enforce (or lift) the ``iam.disableServiceAccountKeyCreation`` org policy."""
        with self._lock:
            self.key_creation_disabled = enforced

    def set_key_expiry(self, seconds: float | None) -> None:
        """Enforce (or, with None, lift) the ``iam.serviceAccountKeyExpiryHours`` org policy.

        In seconds, not hours: Google accepts 8 to 2160 hours, which no test can wait out;
        what matters is that new keys expire and earlier ones keep their validity.
        """
        if seconds is not None and seconds <= 0:
            raise ValueError("a key expiry must be positive")
        with self._lock:
            self.key_expiry_seconds = seconds

    def mint_access_token(self, email: str, lifetime_seconds: float = 3600.0) -> str:
        """An OAuth2 access token for ``email``, accepted as ``oauth2accesstoken`` until it expires."""
        with self._lock:
            if email not in self._accounts:
                raise KeyError(f"no service account {email}")
            token = "ya29.local." + secrets.token_urlsafe(48)
            self._tokens[token] = (email, self.now() + lifetime_seconds)
            return token

    def keys_of(self, email: str, *, include_deleted: bool = False, user_managed_only: bool = True) -> list[KeyRecord]:
        """Inspect an account's keys, oldest first (copies: mutate state through the API)."""
        with self._lock:
            found = [
                KeyRecord(**vars(k))
                for k in self._keys.values()
                if k.email == email
                and (include_deleted or not k.deleted)
                and (not user_managed_only or k.key_type == KeyType.USER_MANAGED)
            ]
        return sorted(found, key=lambda k: k.created_at)

    def account(self, email: str) -> ServiceAccountRecord | None:
        with self._lock:
            found = self._accounts.get(email)
            return ServiceAccountRecord(**vars(found)) if found else None

    def service_account_exists(self, email: str) -> bool:
        with self._lock:
            return email in self._accounts

    # -- who is presenting what (the Authority's questions) ---------------------------
    def check_key_file(self, json_text: str) -> KeyCheck:
        """Whether a key file proves its account now: known, live, enabled, propagated, matching."""
        try:
            document = json.loads(json_text)
            key_id = document["private_key_id"]
            email = document["client_email"]
            private_pem = document["private_key"]
        except (ValueError, KeyError, TypeError):
            return KeyCheck(None, "not a service-account key file")
        with self._lock:
            key = self._keys.get(key_id)
            account = self._accounts.get(email)
            if key is None or key.email != email or key.key_type != KeyType.USER_MANAGED:
                return KeyCheck(None, "unknown key")
            if account is None:
                return KeyCheck(None, "service account deleted")
            if account.disabled:
                return KeyCheck(None, "service account disabled")
            if key.deleted:
                return KeyCheck(None, "key deleted")
            if key.disabled:
                return KeyCheck(None, "key disabled")
            if self.now() - key.created_at < self.propagation_delay_seconds:
                return KeyCheck(None, "key not yet propagated")
            if self.now() >= key.valid_before.timestamp():
                return KeyCheck(None, "key expired")
            certificate_pem = key.public_certificate_pem
            fingerprint = (key_id, hashlib.sha256(str(private_pem).encode()).hexdigest())
            if fingerprint in self._verified:
                return KeyCheck(email, "ok")
        if not _private_key_matches(str(private_pem), certificate_pem):
            return KeyCheck(None, "private key does not match")
        with self._lock:
            self._verified.add(fingerprint)
        return KeyCheck(email, "ok")

    def principal_for_access_token(self, token: str) -> str | None:
        with self._lock:
            entry = self._tokens.get(token)
            if entry is None or self.now() >= entry[1]:
                return None
            account = self._accounts.get(entry[0])
            return account.email if account is not None and not account.disabled else None

    # -- service accounts -------------------------------------------------------------
    def create_service_account(
        self, project_id: str, account_id: str, display_name: str = "", description: str = ""
    ) -> ServiceAccountRecord:
        if not 6 <= len(account_id) <= 30:
            raise GoogleApiError.from_grpc(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'The account ID "{account_id}" does not have a length between 6 and 30.',
            )
        if _ACCOUNT_ID.fullmatch(account_id) is None:
            raise GoogleApiError.from_grpc(
                grpc.StatusCode.INVALID_ARGUMENT, f"{account_id} does not match [a-z][a-z\\d\\-]*[a-z\\d]."
            )
        if len(display_name.encode()) > 100 or len(description.encode()) > 256:
            raise GoogleApiError.from_grpc(
                grpc.StatusCode.INVALID_ARGUMENT, "Request contains an invalid argument."
            )  # unconfirmed
        email = service_account_email(account_id, project_id)
        with self._lock:
            if email in self._accounts:
                raise GoogleApiError.from_grpc(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"Service account {account_id} already exists within project projects/{project_id}.",
                    [error_details_pb2.ResourceInfo(resource_name=f"projects/{project_id}/serviceAccounts/{email}")],
                )
            account = ServiceAccountRecord(
                project_id=project_id,
                account_id=account_id,
                email=email,
                unique_id=str(10**20 + secrets.randbelow(9 * 10**20)),
                display_name=display_name,
                description=description,
            )
            self._accounts[email] = account
            self._add_system_key(account)
            return ServiceAccountRecord(**vars(account))

    def get_service_account(self, name: str, permission: str = "iam.serviceAccounts.get") -> ServiceAccountRecord:
        with self._lock:
            return ServiceAccountRecord(**vars(self._account_for(name, permission)))

    def list_service_accounts(self, project_id: str) -> list[ServiceAccountRecord]:
        with self._lock:
            return sorted(
                (ServiceAccountRecord(**vars(a)) for a in self._accounts.values() if a.project_id == project_id),
                key=lambda a: a.email,
            )

    def delete_service_account(self, name: str) -> None:
        with self._lock:
            account = self._account_for(name, "iam.serviceAccounts.delete")
            del self._accounts[account.email]
            for key in self._keys.values():
                if key.email == account.email:
                    key.deleted = True
            self._tokens = {t: v for t, v in self._tokens.items() if v[0] != account.email}

    def set_service_account_disabled(self, name: str, disabled: bool) -> None:
        permission = "iam.serviceAccounts.disable" if disabled else "iam.serviceAccounts.enable"
        with self._lock:
            self._account_for(name, permission).disabled = disabled

    # -- keys ---------------------------------------------------------------------------
    def create_key(self, name: str) -> tuple[KeyRecord, str]:
        """A new user-managed key and its key-file JSON text (the only time it exists)."""
        with self._lock:
            account = self._account_for_keys(name)
            if self.key_creation_disabled:
                description = "Key creation is not allowed on this service account."
                encoded = account.email.replace("@", "%40")
                raise GoogleApiError.from_grpc(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    description,
                    [
                        error_details_pb2.PreconditionFailure(
                            violations=[
                                error_details_pb2.PreconditionFailure.Violation(
                                    type=KEY_CREATION_CONSTRAINT,
                                    subject=f"{account.name}?configvalue={encoded}",
                                    description=description,
                                )
                            ]
                        )
                    ],
                )
            live = [
                k
                for k in self._keys.values()
                if k.email == account.email and not k.deleted and k.key_type == KeyType.USER_MANAGED
            ]
            if len(live) >= USER_MANAGED_KEY_LIMIT:
                if self.key_limit_status == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise GoogleApiError.from_grpc(
                        grpc.StatusCode.RESOURCE_EXHAUSTED, "Maximum number of keys on account reached."
                    )
                raise GoogleApiError.from_grpc(grpc.StatusCode.FAILED_PRECONDITION, "Precondition check failed.")
            email, project_id, client_id = account.email, account.project_id, account.unique_id
        # RSA generation takes ~50-100 ms: do it outside the lock.
        key_file = generate_key_file(email, project_id=project_id, client_id=client_id)
        with self._lock:
            if email not in self._accounts:  # deleted while the key was being generated
                raise GoogleApiError.from_grpc(
                    grpc.StatusCode.NOT_FOUND, f"Not found; Gaia id not found for email {email}"
                )
            created = self.now()
            expiry = self.key_expiry_seconds
            valid_before = NEVER_EXPIRES if expiry is None else dt.datetime.fromtimestamp(created + expiry, dt.UTC)
            record = KeyRecord(
                email=email,
                project_id=project_id,
                key_id=key_file.key_id,
                key_type=KeyType.USER_MANAGED,
                created_at=created,
                valid_after=dt.datetime.fromtimestamp(int(created), dt.UTC),
                valid_before=valid_before,
                public_certificate_pem=key_file.public_certificate_pem,
            )
            self._keys[record.key_id] = record
            return KeyRecord(**vars(record)), key_file.json_text

    def list_keys(self, name: str, key_types: list[int]) -> list[KeyRecord]:
        if KeyType.KEY_TYPE_UNSPECIFIED in key_types or len(set(key_types)) != len(key_types):
            raise GoogleApiError.from_grpc(
                grpc.StatusCode.INVALID_ARGUMENT, "Request contains an invalid argument."
            )  # unconfirmed
        wanted = set(key_types) or {KeyType.USER_MANAGED, KeyType.SYSTEM_MANAGED}
        with self._lock:
            account = self._account_for_keys(name)
            found = []
            for k in self._keys.values():
                if k.email != account.email or k.key_type not in wanted:
                    continue
                if k.deleted:
                    if k.stale_listings <= 0:
                        continue
                    k.stale_listings -= 1
                found.append(KeyRecord(**vars(k)))
        return sorted(found, key=lambda k: k.created_at)

    def get_key(self, name: str) -> KeyRecord:
        with self._lock:
            return KeyRecord(**vars(self._key_for(name, "iam.serviceAccountKeys.get")))

    def delete_key(self, name: str) -> None:
        with self._lock:
            key = self._key_for(name, "iam.serviceAccountKeys.delete", user_managed=True)
            key.deleted = True
            key.stale_listings = self.deleted_key_listings

    def set_key_disabled(self, name: str, disabled: bool) -> None:
        permission = "iam.serviceAccountKeys.disable" if disabled else "iam.serviceAccountKeys.enable"
        with self._lock:
            self._key_for(name, permission, user_managed=True).disabled = disabled

    # -- name resolution ------------------------------------------------------------------
    def _find_account(self, project: str, account: str) -> ServiceAccountRecord | None:
        found = self._accounts.get(account)
        if found is None:
            found = next((a for a in self._accounts.values() if a.unique_id == account), None)
        if found is not None and project not in ("-", found.project_id):
            return None
        return found

    def _account_for(self, name: str, permission: str) -> ServiceAccountRecord:
        match = _ACCOUNT_NAME.fullmatch(name)
        if match is None:
            raise GoogleApiError.from_grpc(
                grpc.StatusCode.INVALID_ARGUMENT,
                'The name should be in the form "projects/{project_id}/serviceAccounts/{account}".',
            )
        found = self._find_account(match["project"], match["account"])
        if found is None:
            if match["project"] == "-":
                # Documented: with the "-" wildcard a missing account reads as 403, not 404.
                raise GoogleApiError.from_grpc(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"Permission {permission} is required to perform this operation on service account {name}.",
                )
            raise GoogleApiError.from_grpc(grpc.StatusCode.NOT_FOUND, "Unknown service account")
        return found

    def _account_for_keys(self, name: str) -> ServiceAccountRecord:
        match = _ACCOUNT_NAME.fullmatch(name)
        if match is None:
            raise GoogleApiError.from_grpc(
                grpc.StatusCode.INVALID_ARGUMENT,
                'The name should be in the form "projects/{project_id}/serviceAccounts/{account}".',
            )
        found = self._find_account(match["project"], match["account"])
        if found is None:
            raise GoogleApiError.from_grpc(
                grpc.StatusCode.NOT_FOUND, f"Not found; Gaia id not found for email {match['account']}"
            )
        return found

    def _key_for(self, name: str, permission: str, *, user_managed: bool = False) -> KeyRecord:
        match = _KEY_NAME.fullmatch(name)
        if match is None:
            raise GoogleApiError.from_grpc(
                grpc.StatusCode.INVALID_ARGUMENT,
                'The name should be in the form "projects/{project_id}/serviceAccounts/{account}/keys/{key}".',
            )
        account_name = f"projects/{match['project']}/serviceAccounts/{match['account']}"
        if self.gone_key_status == grpc.StatusCode.NOT_FOUND:
            account = self._account_for_keys(account_name)
        else:
            found = self._find_account(match["project"], match["account"])
            if found is None:
                raise self._gone_key(name, permission)
            account = found
        key = self._keys.get(match["key"])
        if key is None or key.deleted or key.email != account.email:
            if self.gone_key_status != grpc.StatusCode.NOT_FOUND:
                raise self._gone_key(name, permission)
            raise GoogleApiError.from_grpc(
                grpc.StatusCode.NOT_FOUND, f"Service account key {match['key']} does not exist."
            )
        if user_managed and key.key_type != KeyType.USER_MANAGED:
            # unconfirmed: IAM refuses to change Google-managed keys; the exact answer is not documented.
            raise GoogleApiError.from_grpc(grpc.StatusCode.FAILED_PRECONDITION, "Precondition check failed.")
        return key

    def _gone_key(self, name: str, permission: str) -> GoogleApiError:
        """The non-404 answers to a gone key that clients have met (docs/external-apis.md §3.5)."""
        if self.gone_key_status == grpc.StatusCode.PERMISSION_DENIED:
            # Confirmed for get; for delete, disable and enable the same form is assumed.
            return GoogleApiError.from_grpc(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Permission {permission} is required to perform this operation on service account key {name}.",
            )
        # Confirmed for delete; for get, disable and enable the same answer is assumed.
        return GoogleApiError.from_grpc(grpc.StatusCode.FAILED_PRECONDITION, "Precondition check failed.")

    def _add_system_key(self, account: ServiceAccountRecord) -> None:
        """Every account shows a Google-managed key; it signs nothing here, so it needs no RSA key."""
        created = self.now()
        valid_after = dt.datetime.fromtimestamp(int(created), dt.UTC)
        key = KeyRecord(
            email=account.email,
            project_id=account.project_id,
            key_id=secrets.token_hex(20),
            key_type=KeyType.SYSTEM_MANAGED,
            created_at=created,
            valid_after=valid_after,
            valid_before=valid_after + SYSTEM_KEY_LIFETIME,
            public_certificate_pem=b"",
        )
        self._keys[key.key_id] = key


def _private_key_matches(private_pem: str, certificate_pem: bytes) -> bool:
    """Whether the presented private key is the one whose public half IAM published."""
    try:
        private_key = serialization.load_pem_private_key(
            private_pem.encode(), password=None, unsafe_skip_rsa_key_validation=True
        )
        public_key = load_pem_x509_certificate(certificate_pem).public_key()
    except (ValueError, TypeError):
        return False
    if not isinstance(private_key, rsa.RSAPrivateKey) or not isinstance(public_key, rsa.RSAPublicKey):
        return False
    return private_key.public_key().public_numbers() == public_key.public_numbers()


# -- gRPC ----------------------------------------------------------------------------------


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _account_message(account: ServiceAccountRecord) -> iam_types.ServiceAccount:
    return iam_types.ServiceAccount(
        name=account.name,
        project_id=account.project_id,
        unique_id=account.unique_id,
        email=account.email,
        display_name=account.display_name,
        description=account.description,
        oauth2_client_id=account.unique_id,
        disabled=account.disabled,
    )


def _key_message(key: KeyRecord) -> iam_types.ServiceAccountKey:
    return iam_types.ServiceAccountKey(
        name=key.name,
        key_algorithm=iam_types.ServiceAccountKeyAlgorithm.KEY_ALG_RSA_2048,
        valid_after_time=_timestamp(key.valid_after),
        valid_before_time=_timestamp(key.valid_before),
        key_origin=iam_types.ServiceAccountKeyOrigin.GOOGLE_PROVIDED,
        key_type=key.key_type,
        disabled=key.disabled,
    )


@dataclass
class GrpcFault:
    """Fail the next ``count`` calls of ``method`` (e.g. ``"CreateServiceAccountKey"``, or ``"*"``)."""

    method: str
    code: grpc.StatusCode
    message: str = "injected fault"
    count: int = 1


class IamServicer:
    """``google.iam.admin.v1.IAM`` over an :class:`IamState`, with a call log and fault injection."""

    def __init__(self, state: IamState) -> None:
        self.state = state
        self.calls: list[str] = []
        self.faults: list[GrpcFault] = []
        self._lock = threading.Lock()

    # -- methods ----------------------------------------------------------------------
    def CreateServiceAccount(self, request: iam_types.CreateServiceAccountRequest) -> iam_types.ServiceAccount:
        match = _PROJECT_NAME.fullmatch(request.name)
        if match is None:
            raise GoogleApiError.from_grpc(grpc.StatusCode.INVALID_ARGUMENT, "Request contains an invalid argument.")
        wanted = request.service_account
        account = self.state.create_service_account(
            match["project"], request.account_id, wanted.display_name, wanted.description
        )
        return _account_message(account)

    def GetServiceAccount(self, request: iam_types.GetServiceAccountRequest) -> iam_types.ServiceAccount:
        return _account_message(self.state.get_service_account(request.name))

    def ListServiceAccounts(
        self, request: iam_types.ListServiceAccountsRequest
    ) -> iam_types.ListServiceAccountsResponse:
        match = _PROJECT_NAME.fullmatch(request.name)
        if match is None:
            raise GoogleApiError.from_grpc(grpc.StatusCode.INVALID_ARGUMENT, "Request contains an invalid argument.")
        accounts = self.state.list_service_accounts(match["project"])
        page_size = min(request.page_size or 20, 100)
        start = int(request.page_token) if request.page_token.isdigit() else 0
        page = accounts[start : start + page_size]
        more = start + page_size < len(accounts)
        return iam_types.ListServiceAccountsResponse(
            accounts=[_account_message(a) for a in page],
            next_page_token=str(start + page_size) if more else "",
        )

    def DeleteServiceAccount(self, request: iam_types.DeleteServiceAccountRequest) -> empty_pb2.Empty:
        self.state.delete_service_account(request.name)
        return empty_pb2.Empty()

    def DisableServiceAccount(self, request: iam_types.DisableServiceAccountRequest) -> empty_pb2.Empty:
        self.state.set_service_account_disabled(request.name, True)
        return empty_pb2.Empty()

    def EnableServiceAccount(self, request: iam_types.EnableServiceAccountRequest) -> empty_pb2.Empty:
        self.state.set_service_account_disabled(request.name, False)
        return empty_pb2.Empty()

    def CreateServiceAccountKey(self, request: iam_types.CreateServiceAccountKeyRequest) -> iam_types.ServiceAccountKey:
        key_type = request.private_key_type or iam_types.ServiceAccountPrivateKeyType.TYPE_GOOGLE_CREDENTIALS_FILE
        if key_type != iam_types.ServiceAccountPrivateKeyType.TYPE_GOOGLE_CREDENTIALS_FILE:
            raise GoogleApiError.from_grpc(
                grpc.StatusCode.UNIMPLEMENTED, "the local IAM mints Google credentials files only"
            )
        if request.key_algorithm not in (
            iam_types.ServiceAccountKeyAlgorithm.KEY_ALG_UNSPECIFIED,
            iam_types.ServiceAccountKeyAlgorithm.KEY_ALG_RSA_2048,
        ):
            raise GoogleApiError.from_grpc(grpc.StatusCode.UNIMPLEMENTED, "the local IAM mints RSA 2048 keys only")
        key, json_text = self.state.create_key(request.name)
        created = _key_message(key)
        created.private_key_type = key_type  # type: ignore[assignment]  # proto-plus types enum members as int
        created.private_key_data = json_text.encode()  # gRPC carries the key file's bytes; REST base64s them
        return created

    def ListServiceAccountKeys(
        self, request: iam_types.ListServiceAccountKeysRequest
    ) -> iam_types.ListServiceAccountKeysResponse:
        keys = self.state.list_keys(request.name, list(request.key_types))
        return iam_types.ListServiceAccountKeysResponse(keys=[_key_message(k) for k in keys])

    def GetServiceAccountKey(self, request: iam_types.GetServiceAccountKeyRequest) -> iam_types.ServiceAccountKey:
        key = self.state.get_key(request.name)
        found = _key_message(key)
        kind = request.public_key_type
        if key.public_certificate_pem and kind == iam_types.ServiceAccountPublicKeyType.TYPE_X509_PEM_FILE:
            found.public_key_data = key.public_certificate_pem
        elif key.public_certificate_pem and kind == iam_types.ServiceAccountPublicKeyType.TYPE_RAW_PUBLIC_KEY:
            public_key = load_pem_x509_certificate(key.public_certificate_pem).public_key()
            found.public_key_data = public_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        return found

    def DeleteServiceAccountKey(self, request: iam_types.DeleteServiceAccountKeyRequest) -> empty_pb2.Empty:
        self.state.delete_key(request.name)
        return empty_pb2.Empty()

    def DisableServiceAccountKey(self, request: iam_types.DisableServiceAccountKeyRequest) -> empty_pb2.Empty:
        self.state.set_key_disabled(request.name, True)
        return empty_pb2.Empty()

    def EnableServiceAccountKey(self, request: iam_types.EnableServiceAccountKeyRequest) -> empty_pb2.Empty:
        self.state.set_key_disabled(request.name, False)
        return empty_pb2.Empty()

    # -- wiring ---------------------------------------------------------------------------
    def inject(self, fault: GrpcFault) -> None:
        with self._lock:
            self.faults.append(fault)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.faults.clear()

    def call_log(self) -> list[str]:
        with self._lock:
            return list(self.calls)

    def handler(self) -> grpc.GenericRpcHandler:
        empty = empty_pb2.Empty.SerializeToString
        table: dict[str, tuple[Any, Any]] = {
            "CreateServiceAccount": (iam_types.CreateServiceAccountRequest, iam_types.ServiceAccount.serialize),
            "GetServiceAccount": (iam_types.GetServiceAccountRequest, iam_types.ServiceAccount.serialize),
            "ListServiceAccounts": (
                iam_types.ListServiceAccountsRequest,
                iam_types.ListServiceAccountsResponse.serialize,
            ),
            "DeleteServiceAccount": (iam_types.DeleteServiceAccountRequest, empty),
            "DisableServiceAccount": (iam_types.DisableServiceAccountRequest, empty),
            "EnableServiceAccount": (iam_types.EnableServiceAccountRequest, empty),
            "CreateServiceAccountKey": (
                iam_types.CreateServiceAccountKeyRequest,
                iam_types.ServiceAccountKey.serialize,
            ),
            "ListServiceAccountKeys": (
                iam_types.ListServiceAccountKeysRequest,
                iam_types.ListServiceAccountKeysResponse.serialize,
            ),
            "GetServiceAccountKey": (iam_types.GetServiceAccountKeyRequest, iam_types.ServiceAccountKey.serialize),
            "DeleteServiceAccountKey": (iam_types.DeleteServiceAccountKeyRequest, empty),
            "DisableServiceAccountKey": (iam_types.DisableServiceAccountKeyRequest, empty),
            "EnableServiceAccountKey": (iam_types.EnableServiceAccountKeyRequest, empty),
        }
        handlers = {
            method: grpc.unary_unary_rpc_method_handler(
                self._wrap(method, getattr(self, method)),
                request_deserializer=request_type.deserialize,
                response_serializer=serialize,
            )
            for method, (request_type, serialize) in table.items()
        }
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _wrap(self, method: str, call: Callable[[Any], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            with self._lock:
                self.calls.append(method)
                fault = next((f for f in self.faults if f.method in ("*", method)), None)
                if fault is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
            if fault is not None:
                context.abort(fault.code, fault.message)
            try:
                return call(request)
            except GoogleApiError as error:
                context.abort_with_status(error.to_status())

        return handle


class IamStandIn:
    """The local IAM: state plus a gRPC server on 127.0.0.1 (a free port)."""

    def __init__(self, state: IamState | None = None) -> None:
        self.state = state or IamState()
        self.servicer = IamServicer(self.state)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="local-iam"))
        self._server.add_generic_rpc_handlers((self.servicer.handler(),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.target = f"127.0.0.1:{self.port}"

    def start(self) -> IamStandIn:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None).wait(timeout=5)

    def reset(self) -> None:
        self.state.reset()
        self.servicer.reset()

    def inject(self, method: str, code: grpc.StatusCode, message_text: str = "injected fault", count: int = 1) -> None:
        """Fail the next ``count`` calls of ``method`` with ``code`` (transient-error tests)."""
        self.servicer.inject(GrpcFault(method, code, message_text, count))

    def calls(self) -> list[str]:
        return self.servicer.call_log()

    def client(self) -> Any:
        """A real ``IAMClient`` on an insecure channel to this server (close its transport when done)."""
        from google.cloud.iam_admin_v1 import IAMClient
        from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport

        return IAMClient(transport=IAMGrpcTransport(channel=grpc.insecure_channel(self.target)))

    def __enter__(self) -> IamStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
