"""A registry token endpoint that behaves like Artifact Registry's ``/v2/token``.

The Docker token protocol (distribution's ``docs/spec/auth/token.md``): a client that got
a ``401`` with a ``Bearer`` challenge asks ``GET REALM?service=…&scope=repository:NAME:ACTIONS``
with Basic auth, and receives a signed JWT whose ``access`` claim lists what it may do.
The registry (Debian's ``docker-registry``, distribution 2.8) verifies the JWT itself:
``iss`` must be its configured issuer, ``aud`` its service, ``exp``/``nbf`` current (±60 s),
and the RS256 signature must come from the leaf of the ``x5c`` header chain, which must
verify against its ``rootcertbundle``.

Like GAR, credentials are checked before anything is issued: wrong or revoked keys get
``401`` with a JSON error, and a valid key gets a token carrying only the actions its
principal holds (``pull`` when the :class:`~localcloud.authority.Authority` says so).
Requests without credentials get an anonymous token with no access, as the token spec
describes; the registry then refuses it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from localcloud.authority import Authority

TOKEN_PATH = "/v2/token"
ALL_ACTIONS = ("pull", "push", "delete", "*")


@dataclass(frozen=True)
class TokenSigningKey:
    """The token issuer's RSA key and the self-signed certificate the registry trusts."""

    private_key: rsa.RSAPrivateKey = field(repr=False)
    certificate: x509.Certificate

    @classmethod
    def generate(cls, common_name: str = "localcloud registry token issuer") -> TokenSigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    @property
    def certificate_pem(self) -> bytes:
        """What goes into the registry's ``auth.token.rootcertbundle`` file."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def x5c(self) -> list[str]:
        """The JWT ``x5c`` header: standard base64 of the DER certificate chain, leaf first."""
        return [base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode()]

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"x5c": self.x5c})


@dataclass(frozen=True)
class RequestedScope:
    """One ``scope`` parameter: ``TYPE:NAME:ACTION[,ACTION…]``."""

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> RequestedScope | None:
        # NAME may itself hold a colon (a registry host with a port), so split at the ends.
        kind, sep, rest = text.partition(":")
        name, sep2, actions = rest.rpartition(":")
        if not sep or not sep2 or not kind or not name:
            return None
        return cls(kind, name, tuple(a for a in actions.split(",") if a))


class RegistryTokenEndpoint:
    """WSGI app: ``GET /v2/token`` issuing registry tokens on an :class:`Authority`'s say-so.

    ``authority`` may be replaced at any time (tests install a fresh one per test; the
    local IAM stand-in installs itself). ``admin_username``/``admin_password`` is a
    test-only identity that may do anything anywhere, so tests can push images.

    A known key whose account may not pull a requested repository gets, by default, a
    token that grants nothing, which the registry then refuses; with
    ``deny_at_token_endpoint`` the endpoint itself answers ``403 DENIED``. GAR has been
    seen doing both (docs/external-apis.md §2.4), so the client is tested against both.
    """

    def __init__(
        self,
        authority: Authority,
        signing_key: TokenSigningKey,
        *,
        service: str,
        issuer: str,
        realm: str = "",
        admin_username: str | None = None,
        admin_password: str | None = None,
        expires_in: int = 300,
        deny_at_token_endpoint: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.authority = authority
        self.signing_key = signing_key
        self.service = service
        self.issuer = issuer
        self.realm = realm
        self.expires_in = expires_in
        self.deny_at_token_endpoint = deny_at_token_endpoint
        self._admin = (admin_username, admin_password) if admin_username and admin_password else None
        self._clock = clock
        self._lock = threading.Lock()
        #: (principal, scope) of every token issued, for tests to assert on; never the token.
        self.issued: list[tuple[str, tuple[RequestedScope, ...]]] = []

    # -- WSGI ------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        if path != TOKEN_PATH:
            return _json(start_response, 404, _errors("NOT_FOUND", f"no such endpoint: {path}"))
        if method not in ("GET", "HEAD"):
            return _json(start_response, 405, _errors("UNSUPPORTED", "the token endpoint only answers GET"))
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        service = (query.get("service") or [""])[0]
        if service and service != self.service:
            return _json(start_response, 400, _errors("DENIED", f"unknown service {service!r}"))
        scopes = tuple(s for s in (RequestedScope.parse(v) for v in query.get("scope", [])) if s is not None)

        credentials = _basic_credentials(environ.get("HTTP_AUTHORIZATION", ""))
        if credentials is _MALFORMED:
            return self._unauthorized(start_response, "malformed Basic authorization header")
        if credentials is None:
            principal = ""  # anonymous: a token, but one that grants nothing
        elif self._is_admin(*credentials):
            principal = credentials[0]
        else:
            found = self.authority.principal_for(*credentials)
            if found is None:
                # GAR answers a deleted or not-yet-active key with invalid_grant.
                return self._unauthorized(
                    start_response,
                    "failed to authenticate: invalid_grant: Invalid JWT Signature (unknown, revoked or "
                    "not yet active key)",
                )
            principal = found

        access = [
            {"type": s.type, "name": s.name, "actions": list(self._granted(principal, credentials, s))} for s in scopes
        ]
        denied = [s for s, a in zip(scopes, access, strict=True) if "pull" in s.actions and "pull" not in a["actions"]]
        if self.deny_at_token_endpoint and principal and denied:
            repository = denied[0].name
            return _json(
                start_response,
                403,
                _errors(
                    "DENIED",
                    'Permission "artifactregistry.repositories.downloadArtifacts" denied on resource '
                    f'"{repository}" (or it may not exist)',
                ),
            )
        now = int(self._clock())
        claims = {
            "iss": self.issuer,
            "sub": principal,
            "aud": service or self.service,
            "exp": now + self.expires_in,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "access": access,
        }
        token = self.signing_key.sign(claims)
        with self._lock:
            self.issued.append((principal, scopes))
        body = {
            "token": token,
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return _json(start_response, 200, body)

    # -- decisions -----------------------------------------------------------------
    def _is_admin(self, username: str, password: str) -> bool:
        if self._admin is None:
            return False
        return hmac.compare_digest(username, self._admin[0]) and hmac.compare_digest(password, self._admin[1])

    def _granted(self, principal: str, credentials: tuple[str, str] | None, scope: RequestedScope) -> tuple[str, ...]:
        if scope.type != "repository" or not principal:
            return ()
        if credentials is not None and self._is_admin(*credentials):
            return tuple(a for a in scope.actions if a in ALL_ACTIONS)
        if "pull" in scope.actions and self.authority.can_pull(principal, scope.name):
            return ("pull",)
        return ()

    def _unauthorized(self, start_response: Callable[..., Any], message: str) -> Iterable[bytes]:
        headers = {"WWW-Authenticate": f'Basic realm="{self.realm or self.service}"'}
        return _json(start_response, 401, _errors("UNAUTHORIZED", message), headers)


_MALFORMED: Any = object()


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """(username, password) from a Basic header, None if absent, ``_MALFORMED`` if garbled."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return _MALFORMED
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return _MALFORMED
    username, sep, password = decoded.partition(":")
    if not sep:
        return _MALFORMED
    return username, password


def _errors(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message}]}


def _json(
    start_response: Callable[..., Any], status: int, body: Any, headers: dict[str, str] | None = None
) -> Iterable[bytes]:
    payload = json.dumps(body).encode()
    reasons = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}
    response_headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    response_headers += list((headers or {}).items())
    start_response(f"{status} {reasons.get(status, 'Error')}", response_headers)
    return [payload]
