import pytest

from shared.core.errors import RejectedMessage
from shared.model.images import GarNotification, RegistryImage, location_of, registry_host

HOST = "us-central1-docker.pkg.dev"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_parses_nested_image_with_tag_and_digest():
    image = RegistryImage.parse(f"{HOST}/my-proj/repo/team/app:v1.2@{DIGEST}")
    assert (image.host, image.project, image.repository, image.image) == (HOST, "my-proj", "repo", "team/app")
    assert (image.tag, image.digest) == ("v1.2", DIGEST)
    assert image.name == "my-proj/repo/team/app"
    assert image.repository_scope == "my-proj/repo"
    assert image.reference == DIGEST
    assert str(image) == f"{HOST}/my-proj/repo/team/app:v1.2@{DIGEST}"


def test_host_with_port_is_not_a_tag():
    image = RegistryImage.parse("127.0.0.1:5000/proj/repo/app")
    assert image.host == "127.0.0.1:5000" and image.tag is None and image.reference == "latest"


@pytest.mark.parametrize(
    ("reference", "fragment"),
    [
        ("", "empty"),
        ("proj/repo/app:v1", "registry host"),
        (f"{HOST}/proj/app:v1", "HOST/PROJECT/REPOSITORY/IMAGE"),
        (f"{HOST}/proj/repo/App:v1", "invalid path component 'App'"),
        (f"{HOST}/proj/repo/app:-bad", "invalid tag"),
        (f"{HOST}/proj/repo/app@sha256:xyz", "digest must be sha256"),
        (HOST + "/p/r/" + "a" * 600, "longer than"),
    ],
)
def test_rejections_name_the_wrong_part(reference, fragment):
    with pytest.raises(RejectedMessage) as caught:
        RegistryImage.parse(reference)
    assert fragment in caught.value.reason


def test_notification_shapes_from_design_2_1():
    by_digest = GarNotification.from_json({"action": "INSERT", "digest": f"{HOST}/p1/r/app@{DIGEST}"})
    assert by_digest.is_insert and by_digest.image.digest == DIGEST and by_digest.image.tag is None

    by_tag = GarNotification.from_json({"action": "INSERT", "tag": f"{HOST}/p1/r/app:latest"})
    assert by_tag.image.tag == "latest" and by_tag.image.digest is None

    both = GarNotification.from_json(
        {"action": "INSERT", "digest": f"{HOST}/p1/r/app@{DIGEST}", "tag": f"{HOST}/p1/r/app:v2"}
    )
    assert (both.image.tag, both.image.digest) == ("v2", DIGEST)

    delete = GarNotification.from_json({"action": "DELETE", "tag": f"{HOST}/p1/r/app:old"})
    assert not delete.is_insert and delete.image.tag == "old"

    sig = GarNotification.from_json({"action": "INSERT", "tag": f"{HOST}/p1/r/app:sha256-{'ab' * 32}.sig"})
    assert sig.image.tag.endswith(".sig")


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ([], "JSON object"),
        ({"action": "UPDATE", "tag": f"{HOST}/p/r/i:t"}, "INSERT or DELETE"),
        ({"action": "INSERT"}, "neither 'digest' nor 'tag'"),
        ({"action": "INSERT", "digest": 5}, "digest must be a string"),
        ({"action": "INSERT", "digest": f"{HOST}/p/r/i:t"}, "has no @sha256"),
        ({"action": "INSERT", "tag": f"{HOST}/p/r/i"}, "has no :TAG"),
        ({"action": "INSERT", "digest": f"{HOST}/p/r/a@{DIGEST}", "tag": f"{HOST}/p/r/b:t"}, "different images"),
    ],
)
def test_malformed_notifications_are_rejected_precisely(payload, fragment):
    with pytest.raises(RejectedMessage) as caught:
        GarNotification.from_json(payload)
    assert fragment in caught.value.reason


# -- GAR's registry hosts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "host"),
    [
        ("us-central1", "us-central1-docker.pkg.dev"),
        ("europe-west4", "europe-west4-docker.pkg.dev"),
        ("us", "us-docker.pkg.dev"),
    ],
)
def test_registry_host_and_location_are_inverse(location: str, host: str) -> None:
    assert registry_host(location) == host
    assert location_of(host) == location


@pytest.mark.parametrize(
    "host", ["127.0.0.1:5000", "localhost:5000", "gcr.io", "us.gcr.io", "docker.io", "us-central1-python.pkg.dev", ""]
)
def test_other_registries_have_no_gar_location(host: str) -> None:
    assert location_of(host) is None


def test_location_of_ignores_case_and_surrounding_space() -> None:
    assert location_of(" US-Central1-Docker.pkg.dev ") == "us-central1"


@pytest.mark.parametrize("value", ["", "us-central1-docker.pkg.dev", "https://us-central1", "US-CENTRAL1"])
def test_registry_host_refuses_what_is_not_a_location(value: str) -> None:
    with pytest.raises(ValueError, match="not a GAR location"):
        registry_host(value)
