"""What arrives on the rotation topic, and which workflow each message goes to.

Three kinds of message share the topic (``functions/rotate``):

- the Cloud Scheduler sweep, ``{"kind": "sweep"}`` (optionally ``"dry_run": true``);
- one rotation, ``{"kind": "rotate", "integration": SECRET_ID or name, "force": bool,
  "dry_run": bool, "request_id": str}`` (the sweep fans these out; people send them too);
- Secret Manager notifications, recognised by their ``eventType`` attribute (the data is
  the secret's JSON, which we do not need). ``SECRET_ROTATE`` with
  ``secretId=projects/NUMBER/secrets/ID`` rotates that secret if it is a managed
  integration: Secret Manager's own schedule is then the signal, so the run is forced (its
  ``next_rotation_time`` and our ``rotated-at`` are set seconds apart, and a due-check
  could skip it by those seconds). Every other event type (``SECRET_VERSION_ADD``,
  ``TOPIC_CONFIGURED``, ... — including those our own writes cause) is ignored.
  Forcing makes a *redelivered* notification dangerous (Pub/Sub delivers at least once,
  and a delivery whose result could not be published is sent again): so a notification
  published before the secret's last rotation (``rotated-at``) has been answered already
  and is skipped, and one period's signal rotates once however often it arrives.

Anything else is rejected with the precise reason, so a misconfigured scheduler job is
seen in the first result rather than guessed at.
"""

from __future__ import annotations

import re
import reprlib
from typing import TYPE_CHECKING, Any, Protocol

from shared.core.errors import PermanentError, RejectedMessage
from shared.model.events import PubSubMessage
from shared.model.integrations import MANAGED_LABEL, SECRET_PREFIX, Annotation
from shared.model.record import parse_timestamp
from shared.model.results import Outcome, Status
from shared.workflows.rotation.report import KIND

if TYPE_CHECKING:
    from shared.ports import SecretStore

ROTATE_EVENT = "SECRET_ROTATE"
_SECRET_NAME = re.compile(r"projects/[^/]+/secrets/(?P<id>[A-Za-z0-9_-]{1,255})")
_SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
_SWEEP_FIELDS = frozenset({"kind", "dry_run"})
_ROTATE_FIELDS = frozenset({"kind", "integration", "force", "dry_run", "request_id"})


class Rotator(Protocol):
    def rotate(
        self, secret_id: str, *, force: bool = False, dry_run: bool = False, request_id: str | None = None
    ) -> Outcome:
        """One rotation's outcome."""


class Sweeper(Protocol):
    def run(self, *, dry_run: bool = False, request_id: str | None = None) -> Outcome:
        """One sweep's outcome."""


class RotationMessages:
    """Routes one rotation-topic message to the sweep or to one rotation."""

    def __init__(self, rotation: Rotator, sweep: Sweeper, secrets: SecretStore) -> None:
        self._rotation = rotation
        self._sweep = sweep
        self._secrets = secrets

    def handle(self, message: PubSubMessage) -> Outcome:
        """The outcome of one message.

        Raises:
            RejectedMessage: the message is none of the three kinds, or malformed.
            TransientError: a service was unavailable; redeliver.
        """
        event_type = message.attributes.get("eventType")
        if event_type is not None:
            return self._notification(message, event_type)
        payload = message.json()
        if not isinstance(payload, dict):
            raise RejectedMessage(f"rotation message must be a JSON object with 'kind', got {type(payload).__name__}")
        kind = payload.get("kind")
        if kind == "sweep":
            _only(payload, _SWEEP_FIELDS, "sweep")
            return self._sweep.run(dry_run=_flag(payload, "dry_run"))
        if kind == "rotate":
            _only(payload, _ROTATE_FIELDS, "rotate")
            integration = payload.get("integration")
            if not isinstance(integration, str) or not _SECRET_ID.fullmatch(integration):
                raise RejectedMessage(
                    "rotate message needs 'integration': a secret id or integration name "
                    f"(1-255 letters, digits, '-' or '_'), got {_shown(integration)}"
                )
            request_id = payload.get("request_id")
            if request_id is not None and (not isinstance(request_id, str) or len(request_id) > 256):
                raise RejectedMessage("'request_id' must be a string of at most 256 characters")
            return self._rotation.rotate(
                integration,
                force=_flag(payload, "force"),
                dry_run=_flag(payload, "dry_run"),
                request_id=request_id,
            )
        raise RejectedMessage(
            f"unknown message kind {_shown(kind)}: expected 'sweep' or 'rotate' (or a Secret Manager notification "
            "with an eventType attribute)"
        )

    def _notification(self, message: PubSubMessage, event_type: str) -> Outcome:
        secret_name = message.attributes.get("secretId", "")
        if event_type != ROTATE_EVENT:
            return Outcome(
                KIND,
                Status.IGNORED,
                f"Secret Manager event {event_type} is not a rotation signal",
                subject={"secret_id": secret_name, "event_type": event_type},
            )
        match = _SECRET_NAME.fullmatch(secret_name)
        if match is None:
            raise RejectedMessage(
                f"{ROTATE_EVENT} notification needs attribute secretId=projects/NUMBER/secrets/ID, got {_shown(secret_name)}"
            )
        secret_id = match["id"]
        subject = {"secret_id": secret_id, "event_type": event_type}
        if not secret_id.startswith(SECRET_PREFIX):
            # Not an integration's record, and out of the function's reach: the deployment's
            # Secret Manager grant is conditioned on the prefix, so reading it would only earn
            # a PERMISSION_DENIED (and retries) for a message that needs no answer.
            return Outcome(
                KIND,
                Status.IGNORED,
                f"secret {secret_id} is not an integration record ({SECRET_PREFIX}*)",
                subject=subject,
            )
        try:
            record = self._secrets.get_secret(secret_id)
        except PermanentError as exc:
            if exc.code != "not-found":
                raise
            return Outcome(KIND, Status.IGNORED, f"secret {secret_id} no longer exists", subject=subject)
        if record.labels.get(MANAGED_LABEL[0]) != MANAGED_LABEL[1]:
            return Outcome(
                KIND,
                Status.IGNORED,
                f"secret {secret_id} is not a managed integration (no label {MANAGED_LABEL[0]}={MANAGED_LABEL[1]})",
                subject=subject,
            )
        published = parse_timestamp(message.publish_time)
        rotated = parse_timestamp(record.annotations.get(Annotation.ROTATED_AT))
        if published is not None and rotated is not None and rotated >= published:
            return Outcome(
                KIND,
                Status.SKIPPED,
                f"secret {secret_id} was rotated at {rotated.isoformat()}, after this {ROTATE_EVENT} was published "
                f"({published.isoformat()}): it was answered already (a redelivery?)",
                code="already-rotated",
                subject=subject,
            )
        return self._rotation.rotate(secret_id, force=True)


def _only(payload: dict[str, Any], allowed: frozenset[str], kind: str) -> None:
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise RejectedMessage(
            f"{kind} message has unknown field(s) {', '.join(map(_shown, unknown[:10]))}"
            f"{f' and {len(unknown) - 10} more' if len(unknown) > 10 else ''}; allowed: {', '.join(sorted(allowed))}"
        )


def _flag(payload: dict[str, Any], name: str) -> bool:
    value = payload.get(name, False)
    if not isinstance(value, bool):
        raise RejectedMessage(f"{name!r} must be true or false, got {_shown(value)}")
    return value


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlist = _REPR.maxdict = 10


def _shown(value: object) -> str:
    """A rejected value as the reply quotes it: recognisable, but never the whole message back."""
    return _REPR.repr(value)
