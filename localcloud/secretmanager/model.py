"""What the stand-in remembers of a secret, its versions and the notifications it sent.

Plain records with no behaviour of the API, so tests can inspect the store and the
published notifications without going through HTTP.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from localcloud.secretmanager.wire import new_etag

STATES = ("STATE_UNSPECIFIED", "ENABLED", "DISABLED", "DESTROYED")


@dataclass
class Version:
    """One secret version; ``payload`` is None once destroyed."""

    number: int
    create_time: datetime
    payload: bytes | None
    checksum: int
    client_checksum: bool
    etag: str = field(default_factory=new_etag)
    state: str = "ENABLED"
    destroy_time: datetime | None = None
    scheduled_destroy_time: datetime | None = None


@dataclass
class Rotation:
    next_time: datetime | None = None
    period: timedelta | None = None

    @property
    def is_set(self) -> bool:
        return self.next_time is not None or self.period is not None


@dataclass
class Secret:
    """A secret and its versions, keyed in the store by (canonical project, secret id)."""

    project: str
    secret_id: str
    sequence: int
    create_time: datetime
    replication: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    topics: list[str] = field(default_factory=list)
    rotation: Rotation = field(default_factory=Rotation)
    version_aliases: dict[str, int] = field(default_factory=dict)
    expire_time: datetime | None = None
    version_destroy_ttl: timedelta | None = None
    etag: str = field(default_factory=new_etag)
    versions: dict[int, Version] = field(default_factory=dict)

    @property
    def latest(self) -> Version | None:
        return self.versions[max(self.versions)] if self.versions else None


@dataclass(frozen=True)
class Notification:
    """One message Secret Manager would publish to a topic."""

    topic: str
    attributes: dict[str, str]
    data: bytes

    @property
    def event_type(self) -> str:
        return self.attributes.get("eventType", "")

    def json(self) -> Any:
        return json.loads(self.data) if self.data else None
