"""Service-account key files that look and parse exactly like the ones IAM hands out.

The code under test reads key files (for ``client_email`` and ``private_key_id``),
stores them in Secret Manager, and presents them to the registry as ``_json_key``. A
fake with the wrong shape would let bugs through, so the stand-ins mint real RSA keys
in Google's key-file JSON format, with the same field order and id formats.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

AUTH_URI = "https://accounts.google.com/o/oauth2/auth"
TOKEN_URI = "https://oauth2.googleapis.com/token"
AUTH_PROVIDER_CERT_URL = "https://www.googleapis.com/oauth2/v1/certs"
CLIENT_CERT_URL_PREFIX = "https://www.googleapis.com/robot/v1/metadata/x509/"


@dataclass(frozen=True)
class ServiceAccountKeyFile:
    """One minted key: its key-file JSON and the public half IAM would publish.

    ``key_id`` is what IAM puts at the end of the key's resource name
    (``projects/P/serviceAccounts/EMAIL/keys/KEY_ID``) and in ``private_key_id``.
    """

    client_email: str
    project_id: str
    key_id: str
    client_id: str
    json_text: str = field(repr=False)
    #: X.509 certificate (PEM) of the public key, as IAM's ``publicKeyData`` carries it.
    public_certificate_pem: bytes = field(repr=False)
    valid_after: dt.datetime = field(compare=False)
    valid_before: dt.datetime = field(compare=False)

    @property
    def json_base64(self) -> str:
        """The key file as ``privateKeyData`` (IAM REST) and ``_json_key_base64`` carry it."""
        return base64.b64encode(self.json_text.encode()).decode()

    def as_dict(self) -> dict[str, Any]:
        return json.loads(self.json_text)


def service_account_email(account_id: str, project_id: str) -> str:
    """The email IAM gives a user-created service account."""
    return f"{account_id}@{project_id}.iam.gserviceaccount.com"


def generate_key_file(
    client_email: str,
    *,
    project_id: str | None = None,
    client_id: str | None = None,
    key_size: int = 2048,
    valid_for: dt.timedelta = dt.timedelta(days=3650),
) -> ServiceAccountKeyFile:
    """Mint a new RSA key for ``client_email`` as a Google service-account key file.

    ``project_id`` defaults to the project in the email's domain
    (``NAME@PROJECT.iam.gserviceaccount.com``), as for every user-created account.
    ``client_id`` is the account's unique id, the same for all its keys; pass it to
    mint a second key for the same account.
    """
    if project_id is None:
        domain = client_email.partition("@")[2]
        project_id = domain.split(".", 1)[0] if domain.endswith(".iam.gserviceaccount.com") else "local-project"
    client_id = client_id or str(10**20 + secrets.randbelow(9 * 10**20))
    key_id = secrets.token_hex(20)
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, client_email)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + valid_for)
        .sign(private_key, hashes.SHA256())
    )
    document = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": key_id,
        "private_key": pem,
        "client_email": client_email,
        "client_id": client_id,
        "auth_uri": AUTH_URI,
        "token_uri": TOKEN_URI,
        "auth_provider_x509_cert_url": AUTH_PROVIDER_CERT_URL,
        "client_x509_cert_url": CLIENT_CERT_URL_PREFIX + client_email.replace("@", "%40"),
        "universe_domain": "googleapis.com",
    }
    return ServiceAccountKeyFile(
        client_email=client_email,
        project_id=project_id,
        key_id=key_id,
        client_id=client_id,
        json_text=json.dumps(document, indent=2) + "\n",
        public_certificate_pem=certificate.public_bytes(serialization.Encoding.PEM),
        valid_after=now,
        valid_before=now + valid_for,
    )
