"""shared.adapters.secrets / shared.model.integrations through the real client to the Secret Manager stand-in."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from localcloud.wsgi import Fault
from shared.adapters.catalog import IntegrationCatalog, SecretKeySource
from shared.adapters.secrets import SecretManager
from shared.core.errors import PermanentError, ServiceUnavailable
from shared.model.images import RegistryImage
from shared.model.integrations import MANAGED_LABEL, Annotation
from tests.unit.fakes import key_json

pytestmark = pytest.mark.wire
HOST = "us-central1-docker.pkg.dev"


def make_integration(handle, name: str, repositories: str, keys: list[str], labels: dict | None = None) -> None:
    client = handle.client
    client.create_secret(
        request={
            "parent": handle.parent,
            "secret_id": f"dataloop-gar-{name}",
            "secret": {
                "replication": {"automatic": {}},
                "labels": {MANAGED_LABEL[0]: MANAGED_LABEL[1]} if labels is None else labels,
                "annotations": {Annotation.REGISTRY_HOST: HOST, Annotation.REPOSITORIES: repositories},
            },
        }
    )
    versions = [
        client.add_secret_version(
            parent=handle.secret_path(f"dataloop-gar-{name}"), payload={"data": key_json(k).encode()}
        )
        for k in keys
    ]
    secret = client.get_secret(name=handle.secret_path(f"dataloop-gar-{name}"))
    secret.version_aliases = {"current": int(versions[-1].name.rsplit("/", 1)[-1])}
    client.update_secret(secret=secret, update_mask={"paths": ["version_aliases"]})


@pytest.fixture
def adapter(secretmanager):
    return SecretManager(secretmanager.project, endpoint=secretmanager.url, timeout=5)


def test_catalog_lists_only_managed_secrets_in_one_call(secretmanager, adapter):
    make_integration(secretmanager, "team-a", "proj/images, proj/tools", ["k1"])
    make_integration(secretmanager, "team-b", "other/images", ["k2", "k3"])
    make_integration(secretmanager, "stray", "proj/images", ["k4"], labels={})
    secretmanager.wire.reset()

    catalog = IntegrationCatalog(adapter, ttl=60)
    covering = catalog.covering(RegistryImage.parse(f"{HOST}/proj/tools/app:v1"))
    assert [i.name for i in covering] == ["team-a"]
    assert covering[0].repositories == ("proj/images", "proj/tools")
    assert catalog.covering(RegistryImage.parse(f"{HOST}/other/images/x:v1"))[0].version_aliases == {"current": 2}
    assert catalog.covering(RegistryImage.parse(f"{HOST}/nobody/images/x:v1")) == []
    calls = secretmanager.wire.call_log()
    assert len(calls) == 1 and calls[0]["method"] == "GET" and "filter=labels.managed-by" in calls[0]["query"]


def test_catalog_ttl_and_refresh(secretmanager, adapter):
    now = [0.0]
    make_integration(secretmanager, "team-a", "proj/images", ["k1"])
    catalog = IntegrationCatalog(adapter, ttl=60, clock=lambda: now[0])
    catalog.all()
    make_integration(secretmanager, "team-b", "proj/images", ["k2"])
    assert len(catalog.all()) == 1  # cached
    now[0] = 61
    assert len(catalog.all()) == 2
    make_integration(secretmanager, "team-c", "proj/images", ["k3"])
    catalog.refresh()
    assert len(catalog.all()) == 3


def test_malformed_managed_secret_is_reported_and_skipped(secretmanager, adapter):
    secretmanager.client.create_secret(
        request={
            "parent": secretmanager.parent,
            "secret_id": "dataloop-gar-broken",
            "secret": {"replication": {"automatic": {}}, "labels": {MANAGED_LABEL[0]: MANAGED_LABEL[1]}},
        }
    )
    reported = []
    catalog = IntegrationCatalog(adapter, on_invalid=lambda secret, reason: reported.append((secret, reason)))
    assert catalog.all() == ()
    assert reported and reported[0][0] == "dataloop-gar-broken" and "re-provision" in reported[0][1]


def test_key_source_reads_current_and_caches_per_version(secretmanager, adapter):
    make_integration(secretmanager, "team-a", "proj/images", ["k1", "k2"])
    integration = IntegrationCatalog(adapter).all()[0]
    keys = SecretKeySource(adapter)
    secretmanager.wire.reset()
    assert keys.key(integration).key_id == "k2"
    assert keys.key(integration).key_id == "k2"
    calls = secretmanager.wire.call_log()
    assert len(calls) == 1 and calls[0]["path"].endswith("/versions/2:access")


def test_a_cold_burst_reads_each_key_once(secretmanager, adapter):
    make_integration(secretmanager, "team-a", "proj/images", ["k1", "k2"])
    integration = IntegrationCatalog(adapter).all()[0]
    keys = SecretKeySource(adapter)
    secretmanager.wire.reset()
    secretmanager.wire.inject(Fault(path=":access", latency_seconds=0.3))  # slow enough for all to pile up
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda _: keys.key(integration).key_id, range(8)))
    assert found == ["k2"] * 8
    assert [c["path"].rsplit("/", 1)[-1] for c in secretmanager.wire.call_log()] == ["2:access"]


def test_unavailable_is_retried_then_transient_and_missing_is_permanent(secretmanager, adapter):
    secretmanager.wire.inject(Fault(path=":access", status=503, count=2))
    with pytest.raises(PermanentError):  # two 503s retried, then the real answer
        adapter.access("dataloop-gar-nothing", "current")
    assert len(secretmanager.wire.call_log()) == 3

    impatient = SecretManager(secretmanager.project, endpoint=secretmanager.url, timeout=0.5)
    secretmanager.wire.inject(Fault(path=":access", status=503, count=1000))
    with pytest.raises(ServiceUnavailable):
        impatient.access("dataloop-gar-nothing", "current")
    secretmanager.wire.reset()
    with pytest.raises(PermanentError) as caught:
        adapter.access("dataloop-gar-nothing", "current")
    assert caught.value.code == "not-found"


def test_permission_denied_names_the_role(secretmanager, adapter):
    secretmanager.wire.inject(
        Fault(
            path="/secrets",
            status=403,
            body={"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}},
        )
    )
    with pytest.raises(PermanentError) as caught:
        adapter.list_secrets()
    assert caught.value.code == "permission-denied" and "roles/secretmanager.secretAccessor" in caught.value.reason


def test_disabled_version_is_a_permanent_failed_precondition(secretmanager, adapter):
    make_integration(secretmanager, "team-a", "proj/images", ["k1", "k2"])
    secretmanager.client.disable_secret_version(name=secretmanager.secret_path("dataloop-gar-team-a") + "/versions/1")
    with pytest.raises(PermanentError) as caught:
        adapter.access("dataloop-gar-team-a", 1)
    assert caught.value.code == "failed-precondition"


def test_write_operations_round_trip_with_etag_guard(secretmanager, adapter):
    from shared.core.errors import Conflict

    record = adapter.create_secret(
        "dataloop-gar-w", labels={"managed-by": "dataloop-gar"}, annotations={Annotation.REGISTRY_HOST: HOST}
    )
    with pytest.raises(Conflict) as exists:
        adapter.create_secret("dataloop-gar-w", labels={}, annotations={})
    assert exists.value.code == "already-exists"

    first = adapter.add_version("dataloop-gar-w", key_json("k1").encode())
    second = adapter.add_version("dataloop-gar-w", key_json("k2").encode())
    assert (first, second) == (1, 2)

    updated = adapter.update_secret("dataloop-gar-w", etag=record.etag, version_aliases={"current": 2, "previous": 1})
    assert updated.version_aliases == {"current": 2, "previous": 1} and updated.etag != record.etag
    assert updated.annotations == {Annotation.REGISTRY_HOST: HOST}  # untouched by the mask

    with pytest.raises(Conflict) as stale:
        adapter.update_secret("dataloop-gar-w", etag=record.etag, annotations={"x": "y"})
    assert stale.value.code == "etag-mismatch"

    adapter.update_secret("dataloop-gar-w", etag=updated.etag, version_aliases={"current": 2})
    adapter.set_version_state("dataloop-gar-w", 1, "disable")
    assert adapter.list_versions("dataloop-gar-w") == {1: "DISABLED", 2: "ENABLED"}
    assert adapter.access("dataloop-gar-w", "current")[0] == 2

    assert adapter.delete_secret("dataloop-gar-w") is True
    assert adapter.delete_secret("dataloop-gar-w") is False
