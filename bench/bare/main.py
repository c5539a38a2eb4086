"""The limit: HEAD the manifest with a token already in hand, and nothing else.

The key is read once and a token kept per repository for the life of the instance
(the bench's bursts are far shorter than a token's lifetime); so a warm event is one
HEAD, and no logging, no result publishing, no bookkeeping.
"""

import threading

import functions_framework

from bench import baseline

_tokens: dict[str, str] = {}
_lock = threading.Lock()


def _token(name: str) -> str:
    with _lock:
        if name not in _tokens:
            _tokens[name] = baseline.token(name, baseline.key_text())
        return _tokens[name]


@functions_framework.cloud_event
def bare(event):
    host, name, digest = baseline.image_of(event)
    baseline.head(host, name, digest, _token(name))
