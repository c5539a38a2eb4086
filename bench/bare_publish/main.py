"""The limit for a function that must also report: the bare HEAD, then one result published.

``on_push`` publishes one result per event and waits for Pub/Sub to acknowledge it; the
bare function does not. This one does both with the project's own result sink, so the
difference between it and ``on_push`` is everything else ``on_push`` does (deciding which
integration, which key, logging, building the outcome).
"""

import threading

import functions_framework

from bench import baseline
from shared.adapters.pubsub import PubSubResultSink
from shared.core.config import settings
from shared.model.results import Outcome, Status

_tokens: dict[str, str] = {}
_lock = threading.Lock()
_sink = PubSubResultSink(settings().results_topic_path)


def _token(name: str) -> str:
    with _lock:
        if name not in _tokens:
            _tokens[name] = baseline.token(name, baseline.key_text())
        return _tokens[name]


@functions_framework.cloud_event
def bare_publish(event):
    host, name, digest = baseline.image_of(event)
    baseline.head(host, name, digest, _token(name))
    _sink.publish(Outcome("reference-test", Status.PASSED, f"{host}/{name}@{digest} can be pulled"))
