"""Turns the local registry's webhook notifications into Artifact Registry's Pub/Sub messages.

On Google, a push to a Docker-format GAR repository makes Artifact Registry publish
``{"action": "INSERT", "digest": "HOST/PROJECT/REPO/IMAGE@sha256:…", "tag": "HOST/…:TAG"}``
on the project's ``gcr`` topic, and ``on_push`` is triggered by that (docs/external-apis.md §1.1). The
local registry (CNCF distribution) has no Pub/Sub, but it POSTs an *envelope* of events
(``application/vnd.docker.distribution.events.v1+json``, ``{"events": [...]}``) to a
configured URL. This bridge is that URL: it keeps the events GAR would report and
publishes each, reshaped, on the ``gcr`` topic, so a plain ``skopeo copy`` triggers
``on_push`` by itself, as in GCP.

What distribution 2.8 sends, and what becomes of it (observed; see the e2e tests):

* ``push`` of a manifest: ``target`` has ``mediaType`` (a manifest or index type),
  ``digest``, ``repository`` and ``tag`` when pushed by tag → ``INSERT`` with ``digest``
  and, when there is one, ``tag``;
* ``push`` of a blob (``mediaType`` ``application/octet-stream`` or a layer type; the
  registry config already filters octet-stream) → nothing: GAR reports images, not layers;
* ``pull`` (every HEAD/GET of a manifest, the reference test's included) → nothing;
* ``delete`` of a manifest arrives twice: once by ``digest``, once per removed ``tag``, and
  neither carries a media type. A blob delete looks exactly like the digest form, so a
  digest delete is reported only for a digest this bridge saw pushed as a manifest;
  a tag delete is always a manifest's → ``DELETE`` with ``digest`` or ``tag``.

``HOST`` is the registry's own ``127.0.0.1:PORT`` given to the bridge (GAR names its
canonical host whatever the client typed), falling back to ``request.host``.

Artifact Registry publishes on the ``gcr`` topic *of the repository's project*
(docs/external-apis.md §1.1), so every message goes out with the project it belongs to: the
first component of the registry repository (``PROJECT/REPOSITORY/IMAGE``). Which topic that
is, is the publisher's to say; the local cloud has one per project it wires.

The registry retries an endpoint that does not answer 2xx (``threshold``/``backoff`` in its
config), so a publish failure answers 503 and the envelope comes back later; envelopes that
are not what distribution sends answer 400 with the reason.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Request, Response

log = logging.getLogger(__name__)

ENVELOPE_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
#: Everything a registry may store as an image manifest or index; any other media type is a blob.
MANIFEST_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.artifact.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
#: A large envelope is a bug or an attack; distribution batches a handful of events.
MAX_ENVELOPE_BYTES = 1024 * 1024

#: ``publish(project, payload) -> message id``: puts one GAR-shaped message on that project's ``gcr`` topic.
Publisher = Callable[[str, dict[str, str]], str]


class EnvelopeError(ValueError):
    """The body is not a distribution notification envelope; the message says why."""


@dataclass(frozen=True)
class GarMessage:
    """One message as Artifact Registry would publish it on ``gcr``."""

    action: str  # INSERT or DELETE
    digest: str | None = None  # HOST/REPO@sha256:…
    tag: str | None = None  # HOST/REPO:TAG
    #: The project holding the repository, whose ``gcr`` topic GAR publishes this on; not in the payload.
    project: str = ""

    def payload(self) -> dict[str, str]:
        body = {"action": self.action}
        if self.digest:
            body["digest"] = self.digest
        if self.tag:
            body["tag"] = self.tag
        return body


@dataclass(frozen=True)
class Forwarded:
    """A message the bridge published, for tests and the demo to wait on."""

    message_id: str
    message: GarMessage

    @property
    def project(self) -> str:
        return self.message.project


class RegistryNotificationBridge:
    """WSGI app receiving distribution's notifications and publishing GAR messages.

    Args:
        publish: puts one payload on the ``gcr`` topic of the given project and returns its
            message id; raising makes the registry retry the whole envelope.
        registry_host: ``127.0.0.1:PORT``, the host GAR-style references are built with;
            None uses each event's ``request.host``.
    """

    def __init__(self, publish: Publisher, *, registry_host: str | None = None) -> None:
        self.publish = publish
        self.registry_host = registry_host
        self._lock = threading.Lock()
        self._manifests: set[tuple[str, str]] = set()  # (repository, digest) seen pushed as manifests
        self._published: list[Forwarded] = []

    # -- what tests and the demo look at -------------------------------------------------
    @property
    def published(self) -> list[Forwarded]:
        """Every message published so far, oldest first."""
        with self._lock:
            return list(self._published)

    # -- translation ---------------------------------------------------------------------
    def translate(self, envelope: Any) -> list[GarMessage]:
        """The GAR messages an envelope stands for, in event order.

        Raises:
            EnvelopeError: not ``{"events": [ {...}, ... ]}`` or an event lacks what its
                action needs (a repository; a digest or tag).
        """
        if not isinstance(envelope, dict) or not isinstance(envelope.get("events"), list):
            raise EnvelopeError('expected a JSON object {"events": [...]}')
        messages: list[GarMessage] = []
        for index, event in enumerate(envelope["events"]):
            if not isinstance(event, dict):
                raise EnvelopeError(f"events[{index}] is not an object")
            message = self._translate_event(event, index)
            if message is not None:
                messages.append(message)
        return messages

    def _translate_event(self, event: Mapping[str, Any], index: int) -> GarMessage | None:
        action = event.get("action")
        target = event.get("target")
        if not isinstance(target, dict):
            raise EnvelopeError(f"events[{index}].target is not an object")
        if action not in ("push", "delete"):
            return None  # pull, mount: nothing GAR reports
        repository = target.get("repository")
        if not isinstance(repository, str) or not repository:
            raise EnvelopeError(f"events[{index}].target.repository is missing")
        host = self.registry_host or _request_host(event)
        if not host:
            raise EnvelopeError(f"events[{index}].request.host is missing and the bridge has no registry host")
        digest = target.get("digest") if isinstance(target.get("digest"), str) else None
        tag = target.get("tag") if isinstance(target.get("tag"), str) else None
        base = f"{host}/{repository}"
        project = repository.split("/", 1)[0]

        if action == "push":
            if target.get("mediaType") not in MANIFEST_MEDIA_TYPES:
                return None  # a layer or config blob
            if not digest:
                raise EnvelopeError(f"events[{index}]: a manifest push without a digest")
            with self._lock:
                self._manifests.add((repository, digest))
            return GarMessage(
                "INSERT", digest=f"{base}@{digest}", tag=f"{base}:{tag}" if tag else None, project=project
            )

        if tag:
            return GarMessage("DELETE", tag=f"{base}:{tag}", project=project)
        if not digest:
            raise EnvelopeError(f"events[{index}]: a delete with neither digest nor tag")
        with self._lock:
            if (repository, digest) not in self._manifests:
                return None  # a blob delete: distribution gives it the same shape
        # The digest stays known: a retried envelope must translate the same way again.
        return GarMessage("DELETE", digest=f"{base}@{digest}", project=project)

    # -- WSGI ----------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        response = self._handle(request)
        return response(environ, start_response)

    def _handle(self, request: Request) -> Response:
        if request.method != "POST":
            return _json(405, {"error": "the registry notification endpoint only accepts POST"})
        if (request.content_length or 0) > MAX_ENVELOPE_BYTES:
            return _json(413, {"error": f"envelope larger than {MAX_ENVELOPE_BYTES} bytes"})
        try:
            envelope = json.loads(request.get_data(cache=False) or b"null")
            messages = self.translate(envelope)
        except (ValueError, UnicodeDecodeError) as exc:
            # EnvelopeError is a ValueError; so is a JSON syntax error.
            return _json(400, {"error": str(exc)})
        forwarded: list[str] = []
        for message in messages:
            try:
                message_id = self.publish(message.project, message.payload())
            except Exception as exc:
                # The registry retries the envelope; on_push handles the duplicates (at-least-once).
                log.warning("registry bridge: publishing %s failed: %s", message.payload(), exc)
                return _json(503, {"error": f"publishing on the gcr topic failed: {type(exc).__name__}"})
            with self._lock:
                self._published.append(Forwarded(message_id, message))
            forwarded.append(message_id)
        return _json(200, {"published": forwarded})


def _request_host(event: Mapping[str, Any]) -> str | None:
    request = event.get("request")
    host = request.get("host") if isinstance(request, dict) else None
    return host if isinstance(host, str) and host else None


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")
