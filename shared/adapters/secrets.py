"""Secret Manager, the system's only database (docs/external-apis.md §4.1), through google-cloud-secret-manager.

Always the REST transport: it is what the local stand-in speaks, so the code path the
tests exercise is the one production runs, and it spares a function the gRPC channel
setup at cold start. API errors are translated at this boundary into the project's
transient/permanent taxonomy, with a reason an operator can act on.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.adapters.gcp_errors import translated
from shared.adapters.google_clients import LazyClient, rest_client_kwargs
from shared.model.record import SecretRecord


def _translated(action: str, *, conflict: bool = False) -> Any:
    return translated(
        "Secret Manager",
        action,
        conflict_statuses=("ALREADY_EXISTS", "FAILED_PRECONDITION", "ABORTED") if conflict else ("ALREADY_EXISTS",),
        permission_hint="Grant this function's service account roles/secretmanager.secretAccessor "
        "(to read keys) or roles/secretmanager.admin (to manage integrations).",
    )


class SecretManager:
    """Adapter over ``SecretManagerServiceClient`` for one project."""

    def __init__(self, project: str, *, endpoint: str | None = None, timeout: float = 10.0) -> None:
        self.project = project
        self.endpoint = endpoint
        self.timeout = timeout
        self._client = LazyClient(self._build_client)

    def _build_client(self) -> Any:
        from google.cloud import secretmanager

        return secretmanager.SecretManagerServiceClient(**rest_client_kwargs(self.endpoint))

    @property
    def client(self) -> Any:
        """The generated client, built on first use and reused (it pools connections)."""
        return self._client.get()

    def _retry(self) -> Any:
        from google.api_core import retry as gretry

        return gretry.Retry(
            predicate=gretry.if_transient_error, initial=0.2, maximum=2.0, multiplier=2.0, timeout=self.timeout * 3
        )

    def secret_path(self, secret_id: str) -> str:
        return f"projects/{self.project}/secrets/{secret_id}"

    def list_secrets(self, filter: str = "") -> list[SecretRecord]:
        """All secrets matching ``filter`` (Secret Manager's list filter syntax), every page."""
        with _translated("list secrets"):
            pages = self.client.list_secrets(
                request={"parent": f"projects/{self.project}", "filter": filter, "page_size": 250},
                timeout=self.timeout,
                retry=self._retry(),
            )
            return [to_record(secret) for secret in pages]

    def get_secret(self, secret_id: str) -> SecretRecord:
        with _translated(f"read secret {secret_id}"):
            return to_record(
                self.client.get_secret(name=self.secret_path(secret_id), timeout=self.timeout, retry=self._retry())
            )

    def access(self, secret_id: str, version: str | int) -> tuple[int, bytes]:
        """The payload of one version, with the version number it resolved to."""
        name = f"{self.secret_path(secret_id)}/versions/{version}"
        with _translated(f"read version {version} of secret {secret_id}"):
            response = self.client.access_secret_version(name=name, timeout=self.timeout, retry=self._retry())
        return int(response.name.rsplit("/", 1)[-1]), bytes(response.payload.data)

    # -- writes: never retried blindly (adding a version twice is not idempotent); the
    # -- workflows that call them are resumable and use etags for concurrency instead.

    def create_secret(
        self,
        secret_id: str,
        *,
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
        topics: tuple[str, ...] = (),
        rotation_period_seconds: int | None = None,
        next_rotation_time: datetime | None = None,
    ) -> SecretRecord:
        """Create a secret with automatic replication.

        Raises:
            Conflict: it already exists (code ``already-exists``); callers that ensure
                read it instead.
        """
        secret: dict[str, Any] = {
            "replication": {"automatic": {}},
            "labels": dict(labels),
            "annotations": dict(annotations),
        }
        if topics:
            secret["topics"] = [{"name": t} for t in topics]
        if rotation_period_seconds:
            secret["rotation"] = {
                "rotation_period": timedelta(seconds=rotation_period_seconds),
                "next_rotation_time": next_rotation_time
                or datetime.now(UTC) + timedelta(seconds=rotation_period_seconds),
            }
        with _translated(f"create secret {secret_id}"):
            created = self.client.create_secret(
                request={"parent": f"projects/{self.project}", "secret_id": secret_id, "secret": secret},
                timeout=self.timeout,
            )
        return to_record(created)

    def update_secret(
        self,
        secret_id: str,
        *,
        etag: str | None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        version_aliases: Mapping[str, int] | None = None,
        rotation_period_seconds: int | None = None,
        next_rotation_time: datetime | None = None,
    ) -> SecretRecord:
        """Replace the given fields (only those) in one update, guarded by ``etag``.

        ``rotation_period_seconds`` and ``next_rotation_time`` change Secret Manager's own
        rotation schedule (the ``SECRET_ROTATE`` notifications), which must follow the
        integration's rotation period.

        Raises:
            Conflict: the secret changed since ``etag`` was read (code ``etag-mismatch``).
        """
        secret: dict[str, Any] = {"name": self.secret_path(secret_id)}
        paths = []
        rotation: dict[str, Any] = {}
        if rotation_period_seconds is not None:
            rotation["rotation_period"] = timedelta(seconds=rotation_period_seconds)
            paths.append("rotation.rotation_period")
        if next_rotation_time is not None:
            rotation["next_rotation_time"] = next_rotation_time
            paths.append("rotation.next_rotation_time")
        if rotation:
            secret["rotation"] = rotation
        for field_name, value in (
            ("labels", labels),
            ("annotations", annotations),
            ("version_aliases", version_aliases),
        ):
            if value is not None:
                secret[field_name] = {k: v for k, v in value.items()}
                paths.append(field_name)
        if etag:
            secret["etag"] = etag
        with _translated(f"update secret {secret_id}", conflict=True):
            updated = self.client.update_secret(
                request={"secret": secret, "update_mask": {"paths": paths}}, timeout=self.timeout
            )
        return to_record(updated)

    def delete_secret(self, secret_id: str) -> bool:
        """Delete a secret and every version; False if it was already gone."""
        from google.api_core import exceptions as gexc

        with _translated(f"delete secret {secret_id}"):
            try:
                self.client.delete_secret(name=self.secret_path(secret_id), timeout=self.timeout)
            except gexc.NotFound:
                return False
        return True

    def add_version(self, secret_id: str, payload: bytes) -> int:
        """Add a version (with its CRC32C, so corruption in transit is refused); its number."""
        from google_crc32c import value as crc32c

        with _translated(f"add a version to secret {secret_id}"):
            version = self.client.add_secret_version(
                request={
                    "parent": self.secret_path(secret_id),
                    "payload": {"data": payload, "data_crc32c": crc32c(payload)},
                },
                timeout=self.timeout,
            )
        return int(version.name.rsplit("/", 1)[-1])

    def list_versions(self, secret_id: str) -> dict[int, str]:
        """Version number -> state name (ENABLED, DISABLED, DESTROYED)."""
        with _translated(f"list versions of secret {secret_id}"):
            versions = self.client.list_secret_versions(
                request={"parent": self.secret_path(secret_id), "page_size": 250},
                timeout=self.timeout,
                retry=self._retry(),
            )
            return {int(v.name.rsplit("/", 1)[-1]): v.state.name for v in versions}

    def set_version_state(self, secret_id: str, version: int, state: str) -> None:
        """``state`` is "disable", "enable" or "destroy"."""
        operation = {
            "disable": self.client.disable_secret_version,
            "enable": self.client.enable_secret_version,
            "destroy": self.client.destroy_secret_version,
        }[state]
        with _translated(f"{state} version {version} of secret {secret_id}"):
            operation(request={"name": f"{self.secret_path(secret_id)}/versions/{version}"}, timeout=self.timeout)


def to_record(secret: Any) -> SecretRecord:
    """A generated ``Secret`` message as a plain immutable record."""
    rotation = getattr(secret, "rotation", None)
    period = None
    next_time = None
    if rotation is not None:
        if rotation.rotation_period:
            period = int(rotation.rotation_period.total_seconds())
        if rotation.next_rotation_time:
            next_time = rotation.next_rotation_time.isoformat()
    return SecretRecord(
        name=secret.name,
        labels=dict(secret.labels),
        annotations=dict(secret.annotations),
        version_aliases={k: int(v) for k, v in secret.version_aliases.items()},
        etag=secret.etag,
        topics=tuple(t.name for t in secret.topics),
        next_rotation_time=next_time,
        rotation_period_seconds=period,
    )
