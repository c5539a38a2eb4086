"""requests: provision, deprovision, rotate, test or report on an integration, from one message.

Trigger: the requests Pub/Sub topic (Eventarc ``google.cloud.pubsub.topic.v1.messagePublished``);
the message is a JSON request of schema v1 (shared/model/request.py). The reply, one
``request`` outcome carrying the request's ``request_id``, goes to the results topic.
The workflow is shared.workflows.provisioning.handler.RequestHandler; this file only wires it to the event.
"""

import functions_framework
from cloudevents.http import CloudEvent

from shared.app import entrypoint, runtime

runtime.start("requests")


@functions_framework.cloud_event
def on_request(event: CloudEvent) -> None:
    """Acknowledge every outcome (rejected and failed included); raise only for transient failures."""
    entrypoint.handle_event("request", event, runtime.request_handler().handle, runtime.results())
