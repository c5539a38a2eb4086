"""The floor under on_push's cold start: hello-world plus the client libraries on_push calls.

Before on_push can answer its first push it must import google-cloud-secret-manager (and with
it grpc, google-api-core and google-auth, which loads ``cryptography``), the generated Pub/Sub
publisher and requests. This function imports exactly those on its first event and answers,
so on_push's cold start over this one is what the project's own code and its first event's
remote calls add; this one over hello-world is what the libraries cost.
"""

import functions_framework


@functions_framework.cloud_event
def libraries(event):
    """Import what on_push's first event imports, then answer 200."""
    # The same statements as the adapters (shared/adapters/secrets.py, shared/model/results.py, shared/adapters/registry.py).
    import requests  # noqa: F401
    from google.cloud import secretmanager  # noqa: F401
    from google.pubsub_v1 import PublisherClient  # noqa: F401
    from google_crc32c import value  # noqa: F401
