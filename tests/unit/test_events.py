import base64
import json

import pytest
from cloudevents.http import CloudEvent

from shared.core.errors import RejectedMessage
from shared.model.events import MAX_DATA_BYTES, PubSubMessage, from_cloud_event

PAYLOAD = {"action": "INSERT", "tag": "us-docker.pkg.dev/p/r/i:v1"}


def b64(value: object) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.b64encode(raw).decode()


def test_eventarc_cloud_event_with_camel_case_fields():
    event = CloudEvent(
        {"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "//pubsub.googleapis.com/x", "id": "ce-1"},
        {
            "message": {
                "data": b64(PAYLOAD),
                "attributes": {"a": "b"},
                "messageId": "42",
                "publishTime": "2026-01-01T00:00:00Z",
            },
            "subscription": "projects/p/subscriptions/s",
        },
    )
    message = from_cloud_event(event)
    assert message.json() == PAYLOAD
    assert message.attributes == {"a": "b"}
    assert (message.message_id, message.publish_time) == ("42", "2026-01-01T00:00:00Z")
    assert message.subscription == "projects/p/subscriptions/s"


def test_snake_case_fields_and_missing_ids_fall_back_to_the_event():
    event = CloudEvent(
        {"type": "t", "source": "s", "id": "ce-7", "time": "2026-02-02T00:00:00Z"},
        {"message": {"data": b64(PAYLOAD), "message_id": "", "publish_time": None}},
    )
    message = from_cloud_event(event)
    assert (message.message_id, message.publish_time) == ("ce-7", "2026-02-02T00:00:00Z")


def test_raw_push_body_as_bytes():
    body = json.dumps({"message": {"data": b64(PAYLOAD), "messageId": "9"}, "subscription": "s"}).encode()
    assert from_cloud_event(body) == PubSubMessage(data=json.dumps(PAYLOAD).encode(), message_id="9", subscription="s")


def test_attribute_only_messages_have_empty_data():
    message = from_cloud_event({"message": {"attributes": {"eventType": "SECRET_ROTATE"}, "messageId": "1"}})
    assert message.data == b"" and message.attributes["eventType"] == "SECRET_ROTATE"


def test_urlsafe_base64_is_accepted():
    raw = b"\xfb\xff" + json.dumps(PAYLOAD).encode()
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert from_cloud_event({"message": {"data": urlsafe}}).data == raw


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "event body is not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        ({"nomessage": 1}, "no 'message' object"),
        ({"message": {"data": 5}}, "base64 string"),
        ({"message": {"data": "!!!"}}, "not valid base64"),
        ({"message": {"data": "", "attributes": []}}, "attributes must be an object"),
        ({"message": {"data": "", "attributes": {"a": 1}}}, "must be strings: a"),
        ({"message": {"data": "A" * (MAX_DATA_BYTES * 2)}}, "limit"),
    ],
)
def test_bad_envelopes_are_rejected_with_a_reason(body, fragment):
    with pytest.raises(RejectedMessage) as caught:
        from_cloud_event(body)
    assert fragment in caught.value.reason


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not valid JSON"),
        (b"[" * 100 + b"]" * 100, "deeper than"),
    ],
)
def test_message_json_rejections(data, fragment):
    with pytest.raises(RejectedMessage) as caught:
        PubSubMessage(data=data).json()
    assert fragment in caught.value.reason
