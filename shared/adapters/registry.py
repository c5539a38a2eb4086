"""Asks a Docker registry (GAR) whether an image exists, with the credentials Dataloop holds.

This is the registry tier of the reference test (DESIGN 3.3) and the "test" step of key
rotation (DESIGN 3.2): take a pull token with a service-account key exactly as a kubelet
would, then ``HEAD`` the manifest. It speaks the Docker Registry HTTP API v2 and the
Docker token protocol generically: the token endpoint is learnt from the registry's
``WWW-Authenticate`` challenge, never hard-coded.

Remote calls are few because rotation tests may run in a loop through IAM propagation and
push bursts may test many images at once: each host's challenge is remembered, so a new
repository on a known host costs one token request and one ``HEAD``; and tokens are cached
per (token service, scope, credential) until shortly before they expire, so a warm call is
exactly one ``HEAD``.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import requests
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from shared.adapters.http import TRANSIENT_STATUSES, build_session, json_body
from shared.core.errors import (
    CredentialsRefused,
    DigestMismatch,
    ImageNotFound,
    PermanentError,
    RegistryUnavailable,
)
from shared.core.redaction import redact_text, register_secret
from shared.model.images import CONFUSING_CHARACTERS as _CONFUSING
from shared.model.images import ManifestRef, RegistryImage, checked_registry_host, location_of
from shared.model.keys import RegistryCredential

logger = logging.getLogger(__name__)

#: Manifest kinds we accept, most specific last-resort last (DESIGN 2.3). A registry answers
#: with the stored manifest's own type when it is in this list, so index and list types come
#: first: a multi-arch image must resolve to its index digest, which is what was pushed.
MANIFEST_MEDIA_TYPES: tuple[str, ...] = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
MANIFEST_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)

#: The Docker token spec: "When omitted, this defaults to 60 seconds."
DEFAULT_TOKEN_LIFETIME = 60.0
#: Refresh a cached token this long before it expires (at most a fifth of its lifetime),
#: so a token never expires between the cache lookup and the registry checking it.
TOKEN_EXPIRY_MARGIN = 30.0
MAX_CACHED_TOKENS = 1024
#: Token fetches for one cache key are serialised on one of these locks (bounded memory).
FETCH_LOCK_STRIPES = 32

_DIGEST = re.compile(r"(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})")
USERNAMES = ("_json_key", "_json_key_base64", "oauth2accesstoken")


# -- the registry's answers ----------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: scheme and parameters, names lower-cased."""

    scheme: str
    params: Mapping[str, str]

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    def header(self) -> str:
        """This challenge as a ``WWW-Authenticate`` value, which :func:`parse_challenges` reads back."""
        params = ",".join(f'{name}="{_quoted(value)}"' for name, value in self.params.items())
        return f"{self.scheme.capitalize()} {params}".strip()


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SCHEME_OR_NAME = re.compile(rf"\s*({_TOKEN})\s*")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"\s*')
_BARE_VALUE = re.compile(r"([^\s,]*)\s*")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value (RFC 7235) into its challenges.

    A header may hold several challenges (``Basic realm="x", Bearer realm="y",service="z"``);
    parameters are separated by commas too, so a name followed by ``=`` is a parameter of
    the current challenge and any other name starts a new one. Quoted values may contain
    commas and backslash-escaped quotes. Anything unparseable ends the parse rather than
    raising: a garbled header then simply offers fewer challenges.
    """
    challenges: list[tuple[str, dict[str, str]]] = []
    pos, end = 0, len(header)
    while pos < end:
        if header[pos] in ", \t":
            pos += 1
            continue
        match = _SCHEME_OR_NAME.match(header, pos)
        if match is None:
            break
        name, pos = match.group(1), match.end()
        if pos < end and header[pos] == "=" and challenges:
            pos += 1
            while pos < end and header[pos] in " \t":
                pos += 1
            quoted = _QUOTED.match(header, pos)
            if quoted is not None:
                value = re.sub(r"\\(.)", r"\1", quoted.group(1))
                pos = quoted.end()
            else:
                bare = _BARE_VALUE.match(header, pos)
                value, pos = (bare.group(1), bare.end()) if bare else ("", pos)
            challenges[-1][1].setdefault(name.lower(), value)
        elif pos < end and header[pos] == "=":
            break  # a parameter before any scheme: not a challenge list we understand
        else:
            challenges.append((name.lower(), {}))
    return [Challenge(scheme, params) for scheme, params in challenges]


# -- the client ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _CachedToken:
    value: str = field(repr=False)
    expires_at: float


_TokenKey = tuple[str, str, str, str]  # realm, service, scope, credential fingerprint


@dataclass(frozen=True)
class _Auth:
    """An Authorization header to present, and whether it was minted for this very call."""

    header: str = field(repr=False)
    fresh: bool
    challenge: Challenge | None = None
    cache_key: _TokenKey | None = None


class RegistryClient:
    """Resolves image references to manifest digests on Docker v2 registries.

    One client is meant to be shared by every thread of a function instance: its caches
    (host challenges, tokens) are guarded by a lock, and no network call is made while
    holding it. Tokens are cached only in memory and only until shortly before they
    expire.

    Args:
        timeout: seconds for connect and for each read, on every request.
        retries: extra attempts for connection errors, timeouts, 429 and 5xx (GET/HEAD only).
        insecure_hosts: hosts spoken to over plain ``http://`` (the local registry).
        session: a ready ``requests.Session`` (tests wrap one to count calls); when None
            one is built with retries and timeouts by :func:`shared.adapters.http.build_session`.
        clock: monotonic seconds, for token expiry.
        backoff_factor: first retry waits about this long, doubling each time (plus jitter).
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        insecure_hosts: Collection[str] = (),
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
        backoff_factor: float = 0.5,
    ) -> None:
        self.timeout = timeout
        self.retries = retries
        self.insecure_hosts = frozenset(insecure_hosts)
        self.session = session or build_session(
            timeout=timeout,
            retries=retries,
            backoff_factor=backoff_factor,
            status_forcelist=TRANSIENT_STATUSES,
            allowed_methods=("GET", "HEAD"),
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._challenges: dict[str, Challenge] = {}
        #: Hosts whose challenge came from a record (``expect_challenge``), not yet from the host.
        self._expected: set[str] = set()
        self._tokens: dict[_TokenKey, _CachedToken] = {}
        self._fetch_locks = tuple(threading.Lock() for _ in range(FETCH_LOCK_STRIPES))

    # -- public ------------------------------------------------------------------------------
    def resolve(self, image: RegistryImage, credential: RegistryCredential) -> ManifestRef:
        """The digest and media type of the manifest ``image`` names, as ``credential`` sees it.

        Asks by digest when the image has one (and checks the answer), else by tag.

        Raises:
            CredentialsRefused: the token endpoint refused the credentials, or the registry
                refused a freshly issued token (no pull permission on the repository).
            ImageNotFound: the registry has no such manifest.
            DigestMismatch: asked by digest, the registry answered for another one.
            RegistryUnavailable: unreachable, timed out, 429 or 5xx after retries (transient).
            PermanentError: any other unexpected answer (code ``registry-error``), or a 200
                without ``Docker-Content-Digest`` (code ``registry-no-digest``).
        """
        scope = f"repository:{image.name}:pull"
        try:
            auth = self._known_auth(image, scope, credential)
        except (CredentialsRefused, RegistryUnavailable, PermanentError):
            if not self._drop_expected(image.host):
                raise
            auth = None  # the recorded challenge led nowhere: ask the registry itself
        response = self._head(image, auth)
        if response.status_code in (401, 403) and self._worth_reauthenticating(response, auth):
            self._drop_token(auth)
            challenge = self._challenge_from(response, image)
            auth = self._authenticate(image, challenge, scope, credential, refused=auth)
            response = self._head(image, auth)
        if response.status_code in (401, 403):
            self._drop_token(auth)
            raise CredentialsRefused(
                f"registry {image.host} refused the credentials of {credential.describe()} for {image} "
                f"(HTTP {response.status_code}): key revoked, not yet propagated, or no "
                f"roles/artifactregistry.reader on {image.repository_scope}"
            )
        if self._expected:
            with self._lock:
                self._expected.discard(image.host)  # the recorded challenge was honoured: it is the host's
        return self._manifest_ref(image, response)

    def challenge_for(self, host: str) -> str | None:
        """The challenge ``host`` itself answered with, as a ``WWW-Authenticate`` value.

        Worth recording beside the credentials that met it: a new instance handed it through
        :meth:`expect_challenge` goes straight to the token endpoint, saving the
        unauthenticated round trip that would learn it. None until the host has asked.
        """
        with self._lock:
            challenge = self._challenges.get(host)
            return None if challenge is None or host in self._expected else challenge.header()

    def expect_challenge(self, host: str, header: str) -> bool:
        """Take a challenge recorded earlier (:meth:`challenge_for`) for a host not heard from yet.

        A record is only a hint, so it is held to three rules: it never replaces what the host
        itself said; its token realm must be on the registry's own host name over HTTPS
        (``http://`` only for an insecure host), so an edited record cannot send a key file
        elsewhere; and if the token endpoint it names refuses or fails, it is dropped and the
        registry is asked, so a stale record costs a round trip, never a verdict.

        Returns:
            Whether the hint was taken.
        """
        with self._lock:
            if host in self._challenges:
                return False  # the usual case on a warm instance: nothing to parse
        kept = _answerable(header)
        if kept is None or (kept.scheme == "bearer" and not self._may_send_keys_to(host, kept.realm)):
            return False
        with self._lock:
            if host in self._challenges:
                return False
            self._challenges[host] = kept
            self._expected.add(host)
        return True

    def _may_send_keys_to(self, host: str, realm: str | None) -> bool:
        try:
            self._realm_url(host, realm or "")
        except PermanentError:
            return False
        return True

    def check_host(self, host: str) -> None:
        """Refuse, before any key exists for it, a host this client would never send one to.

        Raises:
            PermanentError: code ``registry-host-refused``.
        """
        self._checked_host(host)

    def _checked_host(self, host: str) -> str:
        """``host`` as requests will connect to it, if keys may go there at all.

        A GAR host always; any other host only when listed in ``insecure_hosts`` (an explicit
        local setting that deploy refuses), so an edited record or request cannot point a
        key at an arbitrary server.

        Raises:
            PermanentError: code ``registry-host-refused``.
        """
        try:
            checked = checked_registry_host(host)
        except ValueError as exc:
            raise PermanentError(f"{exc}; no credentials are sent to it", code="registry-host-refused") from None
        if checked != host or (location_of(checked) is None and checked not in self.insecure_hosts):
            raise PermanentError(
                f"registry host {host!r} is not an Artifact Registry host and not one of REGISTRY_INSECURE_HOSTS; "
                "no credentials are sent to it",
                code="registry-host-refused",
            )
        return checked

    def _realm_url(self, host: str, realm: str) -> str:
        """The token endpoint URL to send ``host``'s credentials to, rebuilt from checked parts.

        The realm comes from a registry answer or from a record, both untrusted: it must be
        on the registry's own host name, over HTTPS (``http`` only for an insecure host), on
        the default port unless the host is an insecure (local) one, with no userinfo and no
        character that parsers read differently. It is parsed with ``urllib3.util.parse_url``,
        as requests will connect. Artifact Registry's own realm is ``https://HOST/v2/token``
        (its ``WWW-Authenticate`` as quoted in public bug reports against the apple/container
        registry client on GitHub, 2026: ``Bearer realm="https://us-docker.pkg.dev/v2/token",service="us-docker.pkg.dev"``).

        Raises:
            PermanentError: code ``registry-realm-refused``.
        """
        registry = parse_url(f"https://{self._checked_host(host)}")
        insecure = host in self.insecure_hosts
        refused = PermanentError(
            f"registry {host} named token endpoint {_origin(realm)}, which is not on the registry's own host over "
            "HTTPS; no credentials are sent to it",
            code="registry-realm-refused",
        )
        if not realm or _CONFUSING.search(realm) or "@" in realm.partition("?")[0]:
            raise refused
        try:
            url = parse_url(realm)
        except LocationParseError:
            raise refused from None
        schemes = ("http", "https") if insecure else ("https",)
        if url.scheme not in schemes or url.auth or url.host != registry.host:
            raise refused
        if not insecure and url.port not in (None, 443):
            raise refused
        port = f":{url.port}" if url.port is not None else ""
        query = f"?{url.query}" if url.query else ""
        return f"{url.scheme}://{url.host}{port}{url.path or '/'}{query}"

    def _drop_expected(self, host: str) -> bool:
        """Forget a recorded challenge that failed; False when the host's challenge was its own."""
        with self._lock:
            if host not in self._expected:
                return False
            self._expected.discard(host)
            self._challenges.pop(host, None)
            return True

    @staticmethod
    def _worth_reauthenticating(response: requests.Response, auth: _Auth | None) -> bool:
        """Whether one more round of authentication could change a 401/403.

        Yes when nothing was presented yet, when a cached credential was presented (the
        registry may have stopped taking it), or when the registry now points at another
        token service than the one that minted the fresh token. Otherwise the refusal is
        the registry's answer to these credentials.
        """
        if auth is None or not auth.fresh:
            return True
        offered = next((c for c in parse_challenges(response.headers.get("WWW-Authenticate", "")) if c.realm), None)
        return (
            offered is not None
            and auth.challenge is not None
            and (offered.scheme, offered.realm, offered.service)
            != (auth.challenge.scheme, auth.challenge.realm, auth.challenge.service)
        )

    def forget(self, credential: RegistryCredential | None = None) -> None:
        """Drop cached tokens (of one credential, or all), e.g. to prove a key still works now."""
        with self._lock:
            if credential is None:
                self._tokens.clear()
            else:
                for key in [k for k in self._tokens if k[3] == credential.fingerprint]:
                    del self._tokens[key]

    def close(self) -> None:
        self.session.close()

    # -- HTTP ----------------------------------------------------------------------------------
    def _manifest_url(self, image: RegistryImage) -> str:
        host = self._checked_host(image.host)
        scheme = "http" if host in self.insecure_hosts else "https"
        return f"{scheme}://{host}/v2/{image.name}/manifests/{image.reference}"

    def _head(self, image: RegistryImage, auth: _Auth | None) -> requests.Response:
        headers = {"Accept": MANIFEST_ACCEPT}
        if auth is not None:
            headers["Authorization"] = auth.header
        try:
            response = self.session.head(
                self._manifest_url(image), headers=headers, timeout=self.timeout, allow_redirects=True
            )
        except requests.RequestException as exc:
            raise RegistryUnavailable(
                f"registry {image.host} could not be reached for {image} after {self.retries} retries: {_describe(exc)}"
            ) from None
        logger.debug("registry HEAD %s -> %s", image, response.status_code)
        return response

    def _manifest_ref(self, image: RegistryImage, response: requests.Response) -> ManifestRef:
        status = response.status_code
        if status == 404:
            raise ImageNotFound(f"image {image} not found: deleted or never pushed")
        if status == 429 or status >= 500:
            raise RegistryUnavailable(
                f"registry {image.host} answered HTTP {status} for {image} after {self.retries} retries"
            )
        if status != 200:
            raise PermanentError(
                f"registry {image.host} answered HTTP {status} to HEAD {image}{_error_detail(response)}",
                code="registry-error",
            )
        digest = response.headers.get("Docker-Content-Digest", "").strip()
        if not digest or not _DIGEST.fullmatch(digest):
            shown = f"an invalid Docker-Content-Digest {digest[:80]!r}" if digest else "no Docker-Content-Digest header"
            raise PermanentError(
                f"registry {image.host} answered 200 for {image} but sent {shown}, so which manifest it holds "
                "cannot be confirmed (this client does not download manifests to compute digests)",
                code="registry-no-digest",
            )
        if image.digest and digest != image.digest:
            raise DigestMismatch(f"registry {image.host} answered for {digest} when asked for {image}")
        content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        return ManifestRef(digest, content_type or None)

    # -- authentication --------------------------------------------------------------------------
    def _known_auth(self, image: RegistryImage, scope: str, credential: RegistryCredential) -> _Auth | None:
        """Credentials to present up front, when this host's challenge is already known."""
        with self._lock:
            challenge = self._challenges.get(image.host)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return _Auth(_basic(credential), fresh=False, challenge=challenge)
        return self._token(image, challenge, scope, credential, refused=None, reused_is_fresh=False)

    def _challenge_from(self, response: requests.Response, image: RegistryImage) -> Challenge:
        """The challenge to answer, remembered for the host; from this response if it has one."""
        challenge = _answerable(response.headers.get("WWW-Authenticate", ""))
        if challenge is None:
            with self._lock:
                challenge = self._challenges.get(image.host)
        if challenge is None:
            raise PermanentError(
                f"registry {image.host} answered HTTP {response.status_code} for {image} without a Bearer "
                "or Basic challenge this client can follow",
                code="registry-error",
            )
        with self._lock:
            self._challenges[image.host] = challenge
            self._expected.discard(image.host)
        return challenge

    def _authenticate(
        self,
        image: RegistryImage,
        challenge: Challenge,
        scope: str,
        credential: RegistryCredential,
        *,
        refused: _Auth | None,
    ) -> _Auth:
        """Credentials for the one re-authentication after a 401/403: a refusal of these is final."""
        if challenge.scheme == "basic":
            return _Auth(_basic(credential), fresh=True, challenge=challenge)
        return self._token(image, challenge, scope, credential, refused=refused, reused_is_fresh=True)

    def _token(
        self,
        image: RegistryImage,
        challenge: Challenge,
        scope: str,
        credential: RegistryCredential,
        *,
        refused: _Auth | None,
        reused_is_fresh: bool,
    ) -> _Auth:
        """A cached token other than the one just ``refused``, else a new one.

        Fetches are single-flight per cache key: threads that all met the same challenge
        wait for the first one's token instead of each asking the token endpoint. A token
        another thread minted meanwhile counts as fresh when ``reused_is_fresh``.
        """
        key = _token_key(challenge, scope, credential)
        with self._fetch_locks[hash(key) % len(self._fetch_locks)]:
            now = self._clock()
            with self._lock:
                cached = self._tokens.get(key)
                if cached is not None and cached.expires_at <= now:
                    del self._tokens[key]
                    cached = None
            if cached is not None and (refused is None or refused.header != f"Bearer {cached.value}"):
                return _Auth(f"Bearer {cached.value}", fresh=reused_is_fresh, challenge=challenge, cache_key=key)
            return self._fetch_token(image, challenge, key, credential)

    def _fetch_token(
        self, image: RegistryImage, challenge: Challenge, key: _TokenKey, credential: RegistryCredential
    ) -> _Auth:
        realm, scope = self._realm_url(image.host, challenge.realm or ""), key[2]
        params = {"scope": scope}
        if challenge.service:
            params["service"] = challenge.service
        # Lifetime counts from when we asked, never later than the issuer's issued_at, so
        # neither clock skew nor a slow answer can stretch a token past its real expiry.
        requested_at = self._clock()
        try:
            response = self.session.get(
                realm,
                params=params,
                auth=(credential.username, credential.password),
                headers={"Accept": "application/json"},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise RegistryUnavailable(
                f"token endpoint {_origin(realm)} of registry {image.host} could not be reached after "
                f"{self.retries} retries: {_describe(exc)}"
            ) from None
        status = response.status_code
        if status in (401, 403):
            raise CredentialsRefused(
                f"registry {image.host} refused the credentials of {credential.describe()} "
                f"(token endpoint HTTP {status}{_error_detail(response)}): key revoked, not yet propagated, "
                f"or no roles/artifactregistry.reader on {image.repository_scope}"
            )
        if status == 429 or status >= 500:
            raise RegistryUnavailable(
                f"token endpoint {_origin(realm)} of registry {image.host} answered HTTP {status} "
                f"after {self.retries} retries{_error_detail(response)}"
            )
        if status != 200:
            raise PermanentError(
                f"token endpoint {_origin(realm)} of registry {image.host} answered HTTP {status}{_error_detail(response)}",
                code="registry-error",
            )
        token, lifetime = _read_token(response)
        if token is None:
            raise RegistryUnavailable(
                f"token endpoint {_origin(realm)} of registry {image.host} answered 200 without a token"
            )
        register_secret(token)
        margin = min(TOKEN_EXPIRY_MARGIN, lifetime / 5)
        with self._lock:
            self._store(key, _CachedToken(token, requested_at + lifetime - margin), now=requested_at)
        logger.debug("registry token for %s on %s, valid %ss", scope, image.host, lifetime)
        return _Auth(f"Bearer {token}", fresh=True, challenge=challenge, cache_key=key)

    def _store(self, key: _TokenKey, token: _CachedToken, *, now: float) -> None:
        """Cache a token (lock held), evicting expired ones and then the oldest beyond the bound."""
        self._tokens[key] = token
        if len(self._tokens) > MAX_CACHED_TOKENS:
            for stale in [k for k, v in self._tokens.items() if v.expires_at <= now]:
                del self._tokens[stale]
            while len(self._tokens) > MAX_CACHED_TOKENS:
                del self._tokens[next(iter(self._tokens))]

    def _drop_token(self, auth: _Auth | None) -> None:
        """Forget a token the registry refused, unless another thread already replaced it."""
        if auth is None or auth.cache_key is None:
            return
        with self._lock:
            cached = self._tokens.get(auth.cache_key)
            if cached is not None and auth.header == f"Bearer {cached.value}":
                del self._tokens[auth.cache_key]


# -- helpers ---------------------------------------------------------------------------------


def _token_key(challenge: Challenge, scope: str, credential: RegistryCredential) -> _TokenKey:
    return (challenge.realm or "", challenge.service or "", scope, credential.fingerprint)


def _answerable(header: str) -> Challenge | None:
    """The challenge in a ``WWW-Authenticate`` value this client answers (Bearer with a realm,
    else Basic), reduced to what does not change per request (realm and service, no scope)."""
    offered = parse_challenges(header)
    challenge = next((c for c in offered if c.scheme == "bearer" and c.realm), None)
    challenge = challenge or next((c for c in offered if c.scheme == "basic"), None)
    if challenge is None:
        return None
    return Challenge(challenge.scheme, {k: v for k, v in challenge.params.items() if k in ("realm", "service")})


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _basic(credential: RegistryCredential) -> str:
    return "Basic " + base64.b64encode(f"{credential.username}:{credential.password}".encode()).decode()


def _read_token(response: requests.Response) -> tuple[str | None, float]:
    try:
        body = json_body(response)
    except ValueError:
        return None, DEFAULT_TOKEN_LIFETIME
    if not isinstance(body, dict):
        return None, DEFAULT_TOKEN_LIFETIME
    token = body.get("token") or body.get("access_token")
    lifetime = body.get("expires_in")
    if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or lifetime <= 0:
        lifetime = DEFAULT_TOKEN_LIFETIME
    return (token if isinstance(token, str) and token else None), float(lifetime)


def _error_detail(response: requests.Response) -> str:
    """``: <what the peer said>`` from a registry or OAuth error body, masked and short."""
    try:
        body = json_body(response)
    except ValueError:
        return ""
    messages: list[str] = []
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list):  # registry: {"errors":[{"code","message","detail"}]}
            for error in errors:
                if isinstance(error, dict):
                    text = ": ".join(str(error[k]) for k in ("code", "message") if error.get(k))
                    if text:
                        messages.append(text)
        error = body.get("error")
        if isinstance(error, str):  # OAuth: {"error","error_description"}
            messages.append(": ".join(str(v) for v in (error, body.get("error_description")) if v))
        elif isinstance(error, dict) and error.get("message"):  # Google APIs: {"error":{"message"}}
            messages.append(str(error["message"]))
        if isinstance(body.get("details"), str):
            messages.append(body["details"])
    if not messages:
        return ""
    return ": " + redact_text("; ".join(messages))[:300]


def _origin(url: str) -> str:
    match = re.match(r"^([a-z][a-z0-9+.-]*://[^/?#]*)", url, re.IGNORECASE)
    return match.group(1) if match else "(no realm)"


def _describe(exc: BaseException) -> str:
    """A short, masked account of a transport error (requests' texts carry only URLs)."""
    return f"{type(exc).__name__}: {redact_text(str(exc))[:300]}"
