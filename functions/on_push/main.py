"""on_push: Artifact Registry says an image was pushed; prove Dataloop can pull it.

Trigger: Pub/Sub topic ``gcr`` (Eventarc ``google.cloud.pubsub.topic.v1.messagePublished``).
The workflow is shared.workflows.push.PushTester; this file only wires it to the event.
"""

import functions_framework
from cloudevents.http import CloudEvent

from shared.app import entrypoint, runtime

runtime.start("on_push")


@functions_framework.cloud_event
def on_push(event: CloudEvent) -> None:
    """Acknowledge every outcome; raise only for transient failures (redelivery)."""
    entrypoint.handle_event("reference-test", event, runtime.push_tester().handle, runtime.results())
