"""How the local cloud is wired: the parts a test of behaviour would not notice if they were wrong.

Push subscriptions must look like Eventarc's (an endpoint whose path names the topic, so
functions-framework gives the CloudEvent the right ``source``), back off on failure and
dead-letter after a bounded number of deliveries; the functions must be configured by
their environment alone, as when deployed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from localcloud.stack import FUNCTIONS, MAX_DELIVERY_ATTEMPTS, LocalCloud

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("spec", FUNCTIONS, ids=lambda spec: spec.name)
def test_each_function_has_an_eventarc_like_push_subscription(local_cloud: LocalCloud, spec) -> None:
    emulator = local_cloud.emulator
    topic = emulator.topic_path(getattr(local_cloud.topics, spec.topic))
    subscription = emulator.subscriber.get_subscription(
        request={"subscription": emulator.subscription_path(f"{spec.topic}-to-{spec.name}")}, timeout=10
    )
    assert subscription.topic == topic
    assert subscription.push_config.push_endpoint == f"{local_cloud.functions[spec.name].url}/{topic}"
    assert subscription.ack_deadline_seconds == spec.ack_deadline_seconds
    assert subscription.retry_policy.minimum_backoff.seconds == 1
    assert subscription.retry_policy.maximum_backoff.seconds == 10
    assert subscription.dead_letter_policy.dead_letter_topic == emulator.topic_path(local_cloud.topics.dead_letter)
    assert subscription.dead_letter_policy.max_delivery_attempts == MAX_DELIVERY_ATTEMPTS


def test_functions_see_only_their_endpoints_and_the_basics(local_cloud: LocalCloud) -> None:
    """Nothing leaks in from the environment of whoever started the local cloud."""
    expected = local_cloud.function_env()
    basics = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"}
    python = {"PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
    for name, function in local_cloud.functions.items():
        raw = Path(f"/proc/{function.process.pid}/environ").read_bytes().decode()
        environ = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
        assert {k: environ.get(k) for k in expected} == expected, name
        assert set(environ) - set(expected) <= basics | python, name
