"""The HTTP requests Eventarc sends a function: a Pub/Sub message as a binary-mode CloudEvent.

Every measurement drives the functions exactly as production does, over HTTP through
functions-framework, so the framework's own cost (routing, CloudEvent parsing) is in
every number, baselines included.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localcloud.stack import PushedImage

_ids = itertools.count(1)


@dataclass(frozen=True)
class Delivery:
    """One POST: headers and JSON body, ready to send (and to hand to another process)."""

    headers: dict[str, str]
    body: str = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"headers": self.headers, "body": self.body}


def delivery(payload: Any, *, project: str, topic: str, attributes: Mapping[str, str] | None = None) -> Delivery:
    """``payload`` (JSON-serialisable) published on ``topic``, as Eventarc would push it."""
    message_id = f"bench-{next(_ids)}"
    data = base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()
    body = {
        "message": {
            "data": data,
            "attributes": dict(attributes or {}),
            "messageId": message_id,
            "publishTime": "2026-11-26T00:00:00Z",
        },
        "subscription": f"projects/{project}/subscriptions/{topic}-bench",
    }
    headers = {
        "ce-id": message_id,
        "ce-source": f"//pubsub.googleapis.com/projects/{project}/topics/{topic}",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-specversion": "1.0",
        "Content-Type": "application/json",
    }
    return Delivery(headers, json.dumps(body, separators=(",", ":")))


def push_notification(image: PushedImage, *, project: str, host: str | None = None) -> Delivery:
    """Artifact Registry's INSERT for ``image`` (digest and tag), optionally named by another ``host``."""
    name = f"{host or image.image.host}/{image.image.name}"
    payload = {"action": "INSERT", "digest": f"{name}@{image.digest}", "tag": f"{name}:{image.image.tag}"}
    return delivery(payload, project=project, topic="gcr")
