"""rotate: zero-downtime rotation of the service-account keys Dataloop pulls with.

Trigger: the rotation topic (``ROTATION_TOPIC``, Eventarc
``google.cloud.pubsub.topic.v1.messagePublished``), which carries three kinds of message:

- the Cloud Scheduler sweep, JSON ``{"kind": "sweep"}``: lists the managed integrations
  once and publishes one ``rotate`` message per integration that is due, back on this topic;
- ``{"kind": "rotate", "integration": SECRET_ID or name, "force": false, "dry_run": false,
  "request_id": "..."}``: rotates one integration (``force`` ignores due-ness);
- Secret Manager notifications (the managed secrets list this topic): ``SECRET_ROTATE``
  rotates that secret if it is managed; other event types are ignored.

The workflows are shared.workflows.rotation and shared.workflows.sweep; this file only wires them to the event.
Deploy with ``--timeout=540s``: the test step is bounded by ROTATION_TEST_TIMEOUT_SECONDS.
"""

import functions_framework
from cloudevents.http import CloudEvent

from shared.app import entrypoint, runtime

runtime.start("rotate")


@functions_framework.cloud_event
def rotate(event: CloudEvent) -> None:
    """Acknowledge every outcome; raise only for transient failures (redelivery resumes the rotation)."""
    entrypoint.handle_event("rotation", event, runtime.rotation_handler().handle, runtime.results())
