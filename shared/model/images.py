"""Image references as Artifact Registry names them, its registry hosts, and GAR's push notifications.

GAR names a Docker image ``HOST/PROJECT/REPOSITORY/IMAGE`` where IMAGE may itself have
several path components, followed by ``:TAG`` and/or ``@sha256:…``. Notifications on the
``gcr`` topic carry such strings in ``digest`` and/or ``tag`` (docs/external-apis.md §1.1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from shared.core.errors import RejectedMessage

# From the distribution reference grammar (github.com/distribution/reference).
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})")
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?"
)
MAX_REFERENCE_LENGTH = 512
#: GAR serves a location's Docker repositories at LOCATION-docker.pkg.dev; this module is the one place that says so.
_GAR_HOST = re.compile(r"(?P<location>[a-z][a-z0-9-]*[a-z0-9])-docker\.pkg\.dev")
_LOCATION = re.compile(r"[a-z][a-z0-9-]*[a-z0-9]")


_LOOPBACK_HOST = re.compile(r"(?:127(?:\.[0-9]{1,3}){3}|localhost|\[::1\])(?::[0-9]{1,5})?\.?", re.IGNORECASE)


def is_loopback_host(host: str) -> bool:
    """A registry host on this machine's loopback interface: only the local cloud has one."""
    return bool(_LOOPBACK_HOST.fullmatch((host or "").strip()))


#: Characters that no registry host or token realm of ours contains, and that parsers disagree
#: on (urllib.parse reads ``a\\@b`` as host ``b``; urllib3, which requests connects with, as ``a``).
CONFUSING_CHARACTERS = re.compile(r"[\\\s\x00-\x1f\x7f]")


def checked_registry_host(text: str, *, loopback: bool = True) -> str:
    """The registry host ``text`` names, as requests would connect to it; else ``ValueError``.

    Parsed with ``urllib3.util.parse_url``, the parser requests and urllib3 connect with
    (urllib3's ``util/url.py``), not ``urllib.parse``, whose reading differs on backslashes
    and stray ``@``: a check must see the host the connection will go to. Accepted: a GAR
    host ``LOCATION-docker.pkg.dev`` on the default port, exactly as written (lower case,
    no trailing dot); with ``loopback``, also a loopback host with a port (the local cloud;
    whether one is *used* is the caller's switch). Refused: userinfo, backslashes,
    whitespace, a path, query or fragment, another port, any other host.
    """
    if not isinstance(text, str) or not text or CONFUSING_CHARACTERS.search(text) or any(c in text for c in "/?#@%"):
        raise ValueError(f"registry host {text!r} is not a bare host name")
    try:
        url = parse_url(f"https://{text}")
    except LocationParseError:
        raise ValueError(f"registry host {text!r} does not parse as a host") from None
    host, port = url.host or "", url.port
    canonical = f"{host}:{port}" if port is not None else host
    if url.auth or url.path or url.query or url.fragment or canonical != text:
        raise ValueError(f"registry host {text!r} is not a bare, lower-case host name")
    if _GAR_HOST.fullmatch(host) and port is None:
        return canonical
    if loopback and is_loopback_host(canonical) and not host.endswith("."):
        return canonical
    raise ValueError(
        f"registry host {text!r} is not an Artifact Registry Docker host (LOCATION-docker.pkg.dev, default port)"
    )


def registry_host(location: str) -> str:
    """The Docker registry host of a GAR location: ``us-central1`` → ``us-central1-docker.pkg.dev``.

    Raises:
        ValueError: not a location name (a host or URL was probably passed instead).
    """
    if not _LOCATION.fullmatch(location or ""):
        raise ValueError(f"not a GAR location (expected e.g. us-central1 or europe): {location!r}")
    return f"{location}-docker.pkg.dev"


def location_of(host: str) -> str | None:
    """The GAR location a registry host belongs to, or None for any other registry."""
    match = _GAR_HOST.fullmatch((host or "").strip().lower())
    return match["location"] if match else None


@dataclass(frozen=True)
class RegistryImage:
    """An image in a GAR (or GAR-like) Docker repository, by tag and/or digest."""

    host: str
    project: str
    repository: str
    image: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository name as the registry's /v2/ API spells it."""
        return f"{self.project}/{self.repository}/{self.image}"

    @property
    def repository_scope(self) -> str:
        """``PROJECT/REPOSITORY``: the unit that IAM grants and integrations cover."""
        return f"{self.project}/{self.repository}"

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when known (immutable), else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> RegistryImage:
        return RegistryImage(self.host, self.project, self.repository, self.image, self.tag, digest)

    def __str__(self) -> str:
        text = f"{self.host}/{self.name}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @classmethod
    def parse(cls, reference: str) -> RegistryImage:
        """Parse ``HOST/PROJECT/REPO/IMAGE[:TAG][@DIGEST]``.

        Raises:
            RejectedMessage: naming the part that is wrong.
        """
        if not isinstance(reference, str) or not reference:
            raise RejectedMessage("image reference is empty")
        if len(reference) > MAX_REFERENCE_LENGTH:
            raise RejectedMessage(f"image reference is longer than {MAX_REFERENCE_LENGTH} characters")
        rest, digest = reference, None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not _DIGEST.fullmatch(digest):
                raise RejectedMessage(f"image reference {reference!r}: digest must be sha256:<64 hex>, got {digest!r}")
        host, sep, path = rest.partition("/")
        if not sep or not _HOST.fullmatch(host) or ("." not in host and ":" not in host and host != "localhost"):
            raise RejectedMessage(
                f"image reference {reference!r}: must start with a registry host such as us-central1-docker.pkg.dev"
            )
        tag = None
        last = path.rsplit("/", 1)[-1]
        if ":" in last:
            path, tag = path.rsplit(":", 1)
            if not _TAG.fullmatch(tag):
                raise RejectedMessage(f"image reference {reference!r}: invalid tag {tag!r}")
        parts = path.split("/")
        if len(parts) < 3:
            raise RejectedMessage(f"image reference {reference!r}: expected HOST/PROJECT/REPOSITORY/IMAGE")
        bad = [p for p in parts[1:] if not _COMPONENT.fullmatch(p)]
        if bad or not re.fullmatch(r"[a-z0-9](?:[a-z0-9.:-]*[a-z0-9])?", parts[0]):
            raise RejectedMessage(f"image reference {reference!r}: invalid path component {(bad or [parts[0]])[0]!r}")
        return cls(host, parts[0], parts[1], "/".join(parts[2:]), tag, digest)


@dataclass(frozen=True)
class GarNotification:
    """A message from Artifact Registry's ``gcr`` topic."""

    action: str
    image: RegistryImage

    @property
    def is_insert(self) -> bool:
        return self.action == "INSERT"

    @classmethod
    def from_json(cls, payload: Any) -> GarNotification:
        """Build from the decoded JSON of ``message.data``.

        When both ``digest`` and ``tag`` are given they must name the same image; the
        result then carries both (the tag for humans, the digest to test).

        Raises:
            RejectedMessage: not an object, unknown action, no reference, bad reference.
        """
        if not isinstance(payload, dict):
            raise RejectedMessage(f"GAR notification must be a JSON object, got {type(payload).__name__}")
        action = payload.get("action")
        if action not in ("INSERT", "DELETE"):
            raise RejectedMessage(f"GAR notification action must be INSERT or DELETE, got {action!r}")
        digest_ref, tag_ref = payload.get("digest"), payload.get("tag")
        for key, value in (("digest", digest_ref), ("tag", tag_ref)):
            if value is not None and not isinstance(value, str):
                raise RejectedMessage(f"GAR notification {key} must be a string, got {type(value).__name__}")
        if not digest_ref and not tag_ref:
            raise RejectedMessage("GAR notification has neither 'digest' nor 'tag'")
        by_digest = RegistryImage.parse(digest_ref) if digest_ref else None
        by_tag = RegistryImage.parse(tag_ref) if tag_ref else None
        if by_digest and not by_digest.digest:
            raise RejectedMessage(f"GAR notification digest {digest_ref!r} has no @sha256:… part")
        if by_tag and not by_tag.tag and not by_tag.digest:
            raise RejectedMessage(f"GAR notification tag {tag_ref!r} has no :TAG part")
        if by_digest and by_digest.digest and by_tag:
            if (by_digest.host, by_digest.name) != (by_tag.host, by_tag.name):
                raise RejectedMessage(
                    f"GAR notification digest and tag name different images: {digest_ref!r} vs {tag_ref!r}"
                )
            return cls(action, by_tag.with_digest(by_digest.digest))
        image = by_digest or by_tag
        if image is None:  # unreachable: one of the two references was given and parsed
            raise RejectedMessage("GAR notification has neither 'digest' nor 'tag'")
        return cls(action, image)


#: Manifest types that list other manifests, one per platform, rather than describe one image.
INDEX_MEDIA_TYPES = frozenset(
    {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
)


@dataclass(frozen=True)
class ManifestRef:
    """What the registry holds for an image reference: the manifest's digest and type."""

    digest: str
    media_type: str | None

    @property
    def is_index(self) -> bool:
        """A multi-platform index or manifest list; unknown (no type sent) counts as not."""
        return self.media_type in INDEX_MEDIA_TYPES


@dataclass(frozen=True)
class RepositoryInfo:
    """What provisioning checks about a repository before granting on it."""

    name: str
    format: str
    mode: str
    description: str


def repository_path(project: str, location: str, repository: str) -> str:
    """An Artifact Registry repository's resource name, the one its IAM policy is set on."""
    return f"projects/{project}/locations/{location}/repositories/{repository}"
