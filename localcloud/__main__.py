"""``python -m localcloud``: run the demo, keep a local cloud up, or publish to one.

* ``demo`` -- the scenario of :mod:`localcloud.demo` (``make demo``); exit status 0 only if
  every step passed.
* ``up`` -- start the local cloud and keep it running (``make stack``): print its endpoints
  and commands to try, then every result the functions publish, until Ctrl-C.
* ``publish TOPIC JSON`` -- put a message on a topic of a running local cloud (the emulator
  from ``PUBSUB_EMULATOR_HOST``) and optionally wait for the reply on the results topic.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any


def _interrupt_on_sigterm() -> None:
    """Treat SIGTERM (``kill``, a CI timeout) like Ctrl-C, so the same clean-up runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


# -- demo ------------------------------------------------------------------------------------


def run_demo(args: argparse.Namespace) -> int:
    from localcloud.demo import Demo

    return Demo(keep_logs=args.keep_logs).run()


# -- up --------------------------------------------------------------------------------------


def run_up(args: argparse.Namespace) -> int:
    from localcloud.registry import build_oci_layout
    from localcloud.stack import LOCATION, REPOSITORY, SECOND_PROJECT, LocalCloud

    workdir = Path(args.workdir).resolve() if args.workdir else None
    cloud = LocalCloud(
        workdir=workdir,
        iam_propagation_delay_seconds=args.iam_delay,
        key_grace_period_seconds=args.grace,
        progress=lambda line: print(f"  {line}", flush=True),
    )
    print("Starting the local cloud ...", flush=True)
    try:
        cloud.start()
        results = cloud.results_collector("console")
        sample = build_oci_layout(cloud.workdir / "sample-image", tag="latest", content=b"try me\n")
        auth_file = cloud.write_registry_auth_file(cloud.workdir / "registry-auth.json")

        print("\nEndpoints")
        for name, address in cloud.endpoints().items():
            print(f"  {name:<42} {address}")
        print("\nSeeded")
        print(f"  Dataloop org {cloud.seed.org_id} (its admin API key is in Secret Manager, dataloop-api-credentials)")
        print(f"  canary service {cloud.seed.canary_service_id} runs {cloud.seed.runner_image.by_tag}")
        print(f"  repositories {cloud.seed.repository_path}, {cloud.seed.other_repository_path}")
        print(
            f"  and {cloud.seed.second_project_repository_path}, whose project's own gcr topic "
            f"({cloud.gcr_topic(SECOND_PROJECT)}) is wired to on_push"
        )

        env = f"PUBSUB_EMULATOR_HOST={cloud.emulator.host_port}"
        me = f"{shlex.quote(sys.executable)} -m localcloud"
        provision = {
            "version": 1,
            "action": "provision",
            "request_id": "try-1",
            "name": "team-a",
            "org_id": cloud.seed.org_id,
            "project": cloud.project,
            "location": LOCATION,
            "repositories": [REPOSITORY],
            "registry_host": cloud.registry_host,
            "service_account": {"create": "dlgar-puller"},
            # Provisioning proves the new key pulls the canary's image, waiting out IAM propagation.
            "canary": {"image": cloud.seed.runner_image.by_tag, "service_id": cloud.seed.canary_service_id},
        }
        image = f"{cloud.registry_host}/{cloud.project}/{REPOSITORY}/app:v1"
        print("\nTry (from the repository root, in another terminal)")
        print("  # provision an integration and wait for the reply")
        print(f"  {env} {me} publish {cloud.topics.requests} {shlex.quote(json.dumps(provision))} --wait 60")
        print("  # push an image: the registry notifies gcr, on_push tests it, the result shows below")
        print(
            f"  skopeo --insecure-policy copy --dest-tls-verify=false --dest-authfile {auth_file} "
            f"oci:{sample.path}:latest docker://{image}"
        )
        print("  # rotate the integration's key now")
        rotate = {"kind": "rotate", "integration": "dataloop-gar-team-a", "force": True}
        print(f"  {env} {me} publish {cloud.topics.rotation} {shlex.quote(json.dumps(rotate))}")
        print("  # the status table: what is failing, overdue or expiring (exit 5), and the keys' compliance line")
        print(
            f"  {env} {shlex.quote(sys.executable)} -m shared.cli status --pubsub-project {cloud.project} "
            f"--topic {cloud.topics.requests} --results-topic {cloud.topics.results}"
        )
        print("  # what happened, read back from the functions' logs through the Logging API")
        print(
            f"  LOGGING_API_ENDPOINT={cloud.cloud_logging.url} {shlex.quote(sys.executable)} -m shared.cli history "
            f"--project {cloud.project} --since 1h"
        )
        print(f"\nFunction logs: {cloud.workdir / 'logs'}. Results appear below; Ctrl-C stops everything.")
        print("(Secret Manager's own events reach the rotate function too; their 'ignored' results are not shown.)\n")
        sys.stdout.flush()
        while True:
            for message in results.pull_once(timeout=2.0):
                if not _is_secret_manager_echo(message.json):
                    print(_describe_result(message.json, message.data), flush=True)
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
    finally:
        cloud.stop()
    print("Stopped.")
    return 0


def _is_secret_manager_echo(body: Any) -> bool:
    """A rotate-function result for a Secret Manager event that is not a rotation signal."""
    return isinstance(body, dict) and body.get("status") == "ignored" and "event_type" in (body.get("subject") or {})


def _describe_result(body: Any, raw: bytes) -> str:
    if not isinstance(body, dict):
        return f"{time.strftime('%H:%M:%S')} (not JSON) {raw[:200]!r}"
    request = f" [{body['request_id']}]" if body.get("request_id") else ""
    return f"{time.strftime('%H:%M:%S')} {body.get('kind')}{request}: {body.get('status')}: {body.get('reason')}"


# -- publish -----------------------------------------------------------------------------------


def run_publish(args: argparse.Namespace) -> int:
    """Publish to a running local cloud; with ``--wait``, print the reply from the results topic."""
    from google.api_core import exceptions as api_exceptions
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # google-cloud-pubsub ships no type information

    from localcloud.stack import Topics

    if not os.environ.get("PUBSUB_EMULATOR_HOST"):
        print("set PUBSUB_EMULATOR_HOST to the emulator `python -m localcloud up` printed", file=sys.stderr)
        return 2
    try:
        payload = json.loads(args.message)
    except ValueError as exc:
        print(f"the message is not JSON: {exc}", file=sys.stderr)
        return 2
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = args.topic if args.topic.startswith("projects/") else publisher.topic_path(args.project, args.topic)
    subscription = None
    if args.wait:
        # Subscribe before publishing: Pub/Sub keeps messages only for existing subscriptions.
        subscription = subscriber.subscription_path(args.project, f"cli-reply-{uuid.uuid4().hex[:8]}")
        subscriber.create_subscription(
            request={"name": subscription, "topic": publisher.topic_path(args.project, Topics().results)}, timeout=10
        )
    try:
        message_id = publisher.publish(topic, json.dumps(payload).encode()).result(timeout=10)
        print(f"published message {message_id} on {topic}", flush=True)
        if subscription is None:
            return 0
        wanted = payload.get("request_id") if isinstance(payload, dict) else None
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            try:
                response = subscriber.pull(request={"subscription": subscription, "max_messages": 10}, timeout=2)
            except api_exceptions.DeadlineExceeded:
                continue
            if not response.received_messages:
                continue
            subscriber.acknowledge(
                request={"subscription": subscription, "ack_ids": [m.ack_id for m in response.received_messages]},
                timeout=10,
            )
            for received in response.received_messages:
                try:
                    body = json.loads(received.message.data)
                except ValueError:
                    continue
                if wanted is None or (isinstance(body, dict) and body.get("request_id") == wanted):
                    print(json.dumps(body, indent=2))
                    return 0 if body.get("status") in ("ok", "passed") else 1
        print(f"no reply within {args.wait:g} s", file=sys.stderr)
        return 1
    finally:
        if subscription is not None:
            subscriber.delete_subscription(request={"subscription": subscription}, timeout=10)
        publisher.transport.close()
        subscriber.close()


# -- command line ------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m localcloud",
        description="The local cloud: every function on one machine, no Google or Dataloop account.",
    )
    commands = root.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the end-to-end scenario on a fresh local cloud, then stop it")
    demo.add_argument("--keep-logs", action="store_true", help="keep the working directory with every log")
    demo.set_defaults(run=run_demo)

    up = commands.add_parser("up", help="start the local cloud and keep it running until Ctrl-C")
    up.add_argument("--workdir", help="where logs and registry storage go (kept); default: a temp dir, removed")
    up.add_argument("--iam-delay", type=float, default=2.0, help="seconds before a new key works (default 2)")
    up.add_argument("--grace", type=float, default=0.0, help="KEY_GRACE_PERIOD_SECONDS for the functions (default 0)")
    up.set_defaults(run=run_up)

    publish = commands.add_parser("publish", help="publish JSON on a topic of a running local cloud")
    publish.add_argument("topic", help="topic id (e.g. dataloop-gar-requests) or projects/P/topics/T")
    publish.add_argument("message", help="the JSON message")
    publish.add_argument("--project", default="local-project", help="the local cloud's project (default local-project)")
    publish.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the reply on the results topic")
    publish.set_defaults(run=run_publish)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _interrupt_on_sigterm()
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
