"""A throwaway Cloud Function for the wire tests: records each CloudEvent it receives.

It writes one JSON line per delivery to ``$ECHO_RECORD_FILE`` (the CloudEvent attributes,
the raw data, and the message as :mod:`shared.model.events` decodes it), logs one structured
line to stdout, and fails with an exception when the message carries the attribute
``echo_fail=true`` so tests can watch a 500 being redelivered.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import functions_framework

from shared.model.events import from_cloud_event  # proves PYTHONPATH includes the repo root

RECORD_FILE = os.environ["ECHO_RECORD_FILE"]


@functions_framework.cloud_event
def echo(event: Any) -> None:
    message = from_cloud_event(event)
    record = {
        "ce": {key: str(value) for key, value in event.get_attributes().items()},
        "raw": event.data,
        "decoded": {
            "data": message.data.decode("utf-8", errors="replace"),
            "attributes": dict(message.attributes),
            "message_id": message.message_id,
            "publish_time": message.publish_time,
            "subscription": message.subscription,
        },
    }
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    descriptor = os.open(RECORD_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, line)  # one write per record: concurrent deliveries do not interleave
    finally:
        os.close(descriptor)
    # One write per line: print() writes the text and the newline separately, and two
    # threads' prints then interleave into one unparseable line (seen in CI).
    sys.stdout.write(json.dumps({"severity": "INFO", "message": "echoed", "message_id": message.message_id}) + "\n")
    sys.stdout.flush()
    if message.attributes.get("echo_fail") == "true":
        raise RuntimeError("echo_fail=true: failing so the push is redelivered")
