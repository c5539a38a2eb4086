"""The naive reference test: secret, token and HEAD for every single event.

What a first implementation would do: nothing is remembered between events except the
clients themselves, so each push costs three remote calls (docs/external-apis.md §2.2, §2.3, §4.3).
"""

import functions_framework

from bench import baseline


@functions_framework.cloud_event
def naive(event):
    host, name, digest = baseline.image_of(event)
    baseline.head(host, name, digest, baseline.token(name, baseline.key_text()))
