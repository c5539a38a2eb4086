"""The operator's command line: build a request, check it here, send it, wait for the answer.

    python -m shared.cli provision --name team-a --org ORG_ID --project my-proj \\
        --location us-central1 --repository images --create-sa dlgar-team-a --wait
    python -m shared.cli status                        # the table; sends and waits by itself
    python -m shared.cli send request.json --wait      # any request written by hand
    python -m shared.cli history --since 24h --status failed   # past outcomes, from Cloud Logging

The request is validated with the very code the function runs (shared.model.request),
so a mistake is reported at once, with every field's problem, and nothing is sent (exit 2).
Without ``--publish``/``--wait`` the validated request is only printed. ``--wait``
subscribes to the results topic through a temporary subscription *before* publishing (a
reply published before the subscription exists would be lost to it), prints the reply
whose ``request_id`` matches, and deletes the subscription.

Pub/Sub is the real service, or the emulator when ``PUBSUB_EMULATOR_HOST`` is set (the
client library reads it). The Pub/Sub library is imported only when something is sent.

``status`` is read-only, so it sends and waits without ``--wait`` (``--request-only`` prints the
request instead, like the other actions without ``--publish``). It prints a table, one
integration a row (``--json``: the reply document), then
the compliance line of the managed accounts' keys (``--no-compliance`` leaves it out, and its
IAM calls), and its exit status says whether anything needs someone, so that cron or CI can run it.

Exit status: 0 ok (or validated), 1 the reply says ``failed``, 2 the request is invalid
(here, or ``rejected`` by the function), 3 no reply before ``--timeout``, 4 Pub/Sub error,
5 (``status`` only) an integration is failing (its last push or last rotation failed),
overdue (its rotation is late) or expiring (its key expires within the sweep's margin, or has),
or a managed account's keys break the compliance line (a key older than 90 days, a key this
system did not make on an account it made, an account whose keys could not be checked).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from shared.core import json_text
from shared.model.request import VERSION, InvalidRequest, parse_request

DEFAULT_REQUESTS_TOPIC = "dataloop-gar-requests"
DEFAULT_RESULTS_TOPIC = "dataloop-gar-results"
RPC_TIMEOUT = 30.0

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_NO_REPLY, EXIT_PUBSUB, EXIT_ATTENTION = 0, 1, 2, 3, 4, 5


# -- building requests from arguments -------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--request-id", help="correlates the reply (default: a fresh random id)")
    parser.add_argument("--publish", action="store_true", help="send the request (default: only validate and print)")
    parser.add_argument("--wait", action="store_true", help="send, then wait for the reply and print it")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the reply (default 600)")
    parser.add_argument(
        "--pubsub-project",
        default=os.environ.get("GCP_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT"),
        help="project of the topics (default: $GCP_PROJECT or $GOOGLE_CLOUD_PROJECT)",
    )
    parser.add_argument(
        "--topic",
        default=os.environ.get("REQUESTS_TOPIC", DEFAULT_REQUESTS_TOPIC),
        help=f"requests topic id or path (default: $REQUESTS_TOPIC or {DEFAULT_REQUESTS_TOPIC})",
    )
    parser.add_argument(
        "--results-topic",
        default=os.environ.get("RESULTS_TOPIC", DEFAULT_RESULTS_TOPIC),
        help=f"results topic id or path (default: $RESULTS_TOPIC or {DEFAULT_RESULTS_TOPIC})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shared.cli",
        description="Build, validate, send and await Dataloop↔GAR provisioning requests.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    provision = actions.add_parser("provision", help="set up (or converge) an integration")
    provision.add_argument("--name", required=True, help="integration name (secret dataloop-gar-NAME)")
    provision.add_argument("--org", required=True, dest="org_id", help="Dataloop organization id")
    provision.add_argument("--project", required=True, help="GCP project of the repositories")
    provision.add_argument("--location", required=True, help="Artifact Registry location, e.g. us-central1")
    provision.add_argument(
        "--repository", action="append", required=True, dest="repositories", help="repository id (repeatable)"
    )
    account = provision.add_mutually_exclusive_group(required=True)
    account.add_argument("--create-sa", metavar="ACCOUNT_ID", help="create a service account with this id")
    account.add_argument("--service-account", metavar="EMAIL", help="use this existing service account")
    provision.add_argument("--canary-image", help="image the platform-level check may use")
    provision.add_argument("--canary-service", help="Dataloop service id for the platform-level check")
    provision.add_argument("--rotation-period-days", type=float, help="rotate the key every N days")
    provision.add_argument("--test-image", help="reference-test this image after provisioning")
    provision.add_argument("--registry-host", help="registry host override (local cloud: 127.0.0.1:PORT)")
    _common(provision)

    deprovision = actions.add_parser("deprovision", help="remove what provisioning made")
    deprovision.add_argument("--name", required=True)
    deprovision.add_argument("--keep-secret", action="store_true", help="keep the secret, destroy its versions")
    _common(deprovision)

    rotate = actions.add_parser("rotate", help="rotate the integration's key")
    rotate.add_argument("--name", required=True)
    rotate.add_argument("--force", action="store_true", help="rotate even if not due")
    rotate.add_argument("--dry-run", action="store_true", help="report what would happen, change nothing")
    _common(rotate)

    test = actions.add_parser("test", help="reference-test an image with the current key")
    test.add_argument("--image", required=True, help="HOST/PROJECT/REPOSITORY/IMAGE[:TAG][@DIGEST]")
    test.add_argument("--name", help="integration to test (default: every integration covering the image)")
    _common(test)

    status = actions.add_parser(
        "status", help="key age and expiry, next rotation, last push verdict, last rotation (a table with --wait)"
    )
    status.add_argument("--name", help="one integration (default: all)")
    status.add_argument("--json", action="store_true", help="print the reply document instead of the table")
    status.add_argument("--request-only", action="store_true", help="print the validated request and send nothing")
    status.add_argument(
        "--no-compliance",
        dest="compliance",
        action="store_false",
        help="leave out the keys' compliance line (it costs one IAM call per managed account)",
    )
    _common(status)

    send = actions.add_parser("send", help="send a request written as JSON (a file, or - for stdin)")
    send.add_argument("file", help="path of the JSON request, or -")
    _common(send)

    _history_parser(actions)
    return parser


def request_from_args(args: argparse.Namespace, stdin: TextIO = sys.stdin) -> Any:
    """The request the arguments describe, as JSON-ready data (not yet validated)."""
    if args.action == "send":
        text = stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        sent = json_text.loads(text)
        if isinstance(sent, dict) and args.request_id:
            sent["request_id"] = args.request_id
        elif isinstance(sent, dict):
            sent.setdefault("request_id", new_request_id())
        return sent

    body: dict[str, Any] = {
        "version": VERSION,
        "action": args.action,
        "request_id": args.request_id or new_request_id(),
    }
    if args.action == "provision":
        body.update(
            name=args.name,
            org_id=args.org_id,
            project=args.project,
            location=args.location,
            repositories=args.repositories,
            service_account={"create": args.create_sa} if args.create_sa else {"email": args.service_account},
        )
        if args.canary_image or args.canary_service:
            body["canary"] = {"image": args.canary_image}
            if args.canary_service:
                body["canary"]["service_id"] = args.canary_service
        optional = {
            "rotation_period_days": args.rotation_period_days,
            "test_image": args.test_image,
            "registry_host": args.registry_host,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
    elif args.action == "deprovision":
        body.update(name=args.name, keep_secret=args.keep_secret)
    elif args.action == "rotate":
        body.update(name=args.name, force=args.force, dry_run=args.dry_run)
    elif args.action == "test":
        body["image"] = args.image
        if args.name:
            body["name"] = args.name
    elif args.action == "status":
        if args.name:
            body["name"] = args.name
        if args.compliance:
            body["compliance"] = True
    return body


def new_request_id() -> str:
    return f"cli-{uuid.uuid4().hex[:16]}"


# -- Pub/Sub ----------------------------------------------------------------------------------------


def _topic_path(project: str, topic: str) -> str:
    return topic if topic.startswith("projects/") else f"projects/{project}/topics/{topic}"


class RequestChannel:
    """Publishes requests and awaits their replies on Pub/Sub (or the emulator)."""

    def __init__(self, project: str, requests_topic: str, results_topic: str) -> None:
        from google.api_core import retry
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # google-cloud-pubsub ships no type information

        #: The generated clients retry unavailable for up to 60 s by default; a person waits
        #: RPC_TIMEOUT in all for one call, then reads why.
        self.retry = retry.Retry(
            initial=0.5, maximum=5.0, multiplier=2.0, timeout=RPC_TIMEOUT, predicate=retry.if_transient_error
        )
        self.project = project
        self.requests_topic = _topic_path(project, requests_topic)
        self.results_topic = _topic_path(project, results_topic)
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()

    def publish(self, data: bytes, request_id: str) -> str:
        future = self.publisher.publish(self.requests_topic, data, request_id=request_id)
        return str(future.result(timeout=RPC_TIMEOUT))

    @contextlib.contextmanager
    def reply_subscription(self) -> Any:
        """A pull subscription on the results topic for this one wait, deleted afterwards.

        It also expires by itself after a day unused, should this process die first.
        """
        path = self.subscriber.subscription_path(self.project, f"dataloop-gar-reply-{uuid.uuid4().hex[:12]}")
        self.subscriber.create_subscription(
            request={
                "name": path,
                "topic": self.results_topic,
                "ack_deadline_seconds": 10,
                "expiration_policy": {"ttl": {"seconds": 86400}},
            },
            timeout=RPC_TIMEOUT,
            retry=self.retry,
        )
        try:
            yield path
        finally:
            from google.api_core import exceptions as gexc

            with contextlib.suppress(gexc.NotFound):
                self.subscriber.delete_subscription(
                    request={"subscription": path}, timeout=RPC_TIMEOUT, retry=self.retry
                )

    def await_reply(self, subscription: str, request_id: str, timeout: float) -> dict[str, Any] | None:
        """The first reply carrying ``request_id`` before ``timeout``, or None."""
        from google.api_core import exceptions as gexc

        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                response = self.subscriber.pull(
                    request={"subscription": subscription, "max_messages": 50},
                    timeout=max(1.0, min(remaining, 10.0)),
                    retry=None,
                )
            except gexc.DeadlineExceeded:
                continue
            received = list(response.received_messages)
            if received:
                self.subscriber.acknowledge(
                    request={"subscription": subscription, "ack_ids": [r.ack_id for r in received]},
                    timeout=RPC_TIMEOUT,
                    retry=self.retry,
                )
            for item in received:
                try:
                    reply = json_text.loads(item.message.data)
                except ValueError:
                    continue
                if isinstance(reply, dict) and reply.get("request_id") == request_id:
                    return reply
        return None


# -- history: past outcomes, read from Cloud Logging ------------------------------------------------

HISTORY_COLUMNS = ("time", "kind", "integration", "status", "code", "reason")
_SINCE_UNITS = {"m": 60, "h": 3600, "d": 86400}


def _history_parser(actions: Any) -> None:
    history = actions.add_parser("history", help="recent outcomes, read from Cloud Logging")
    history.add_argument("--name", help="only outcomes about this integration")
    history.add_argument("--since", type=parse_since, default="24h", help="how far back: 30m, 24h, 7d (default 24h)")
    history.add_argument("--status", help="only this status (passed, ok, failed, rejected, skipped, ...)")
    history.add_argument("--limit", type=int, default=50, help="at most this many, newest first (default 50)")
    history.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    history.add_argument(
        "--project",
        default=os.environ.get("GCP_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT"),
        help="project the functions log in (default: $GCP_PROJECT or $GOOGLE_CLOUD_PROJECT)",
    )
    history.add_argument(
        "--logging-endpoint",
        default=os.environ.get("LOGGING_API_ENDPOINT"),
        help="Logging API base URL, e.g. the local cloud's (default: $LOGGING_API_ENDPOINT, else Google's)",
    )


def parse_since(text: str) -> timedelta:
    """``30m``/``24h``/``7d`` as a duration; argparse turns the ValueError into a usage error."""
    unit = text[-1:].lower()
    if unit not in _SINCE_UNITS or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30m, 24h or 7d")
    return timedelta(seconds=int(text[:-1]) * _SINCE_UNITS[unit])


def _history_row(past: Any) -> tuple[str, ...]:
    outcome = past.outcome
    at = past.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if past.at else "?"
    reason = " ".join(str(outcome.get("reason") or "").split())
    return (
        at,
        str(outcome.get("kind") or ""),
        ",".join(past.integrations) or "-",
        str(outcome.get("status") or ""),
        str(outcome.get("code") or "-"),
        reason if len(reason) <= 100 else reason[:99] + "…",
    )


def print_history(found: Sequence[Any], stdout: TextIO, *, as_json: bool) -> None:
    """A table a person scans (widths from the rows), or JSON lines a script reads."""
    if as_json:
        for past in found:
            print(json.dumps(past.to_json(), ensure_ascii=False), file=stdout)
        return
    rows = [HISTORY_COLUMNS, *(_history_row(past) for past in found)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HISTORY_COLUMNS) - 1)]
    for row in rows:
        print("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]), file=stdout)


def run_history(args: argparse.Namespace, *, stdout: TextIO, stderr: TextIO) -> int:
    """Exit 0 with what was found (possibly nothing), 2 without a project, 4 if the Logging API fails."""
    if not args.project:
        print("--project (or $GCP_PROJECT) is needed to read the logs", file=stderr)
        return EXIT_INVALID
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exceptions

    from shared.adapters.cloud_logging import OutcomeLog

    since = datetime.now(UTC) - args.since
    try:
        found = OutcomeLog(args.project, endpoint=args.logging_endpoint).recent(
            since, name=args.name, status=args.status, limit=args.limit
        )
    except (gexc.GoogleAPIError, auth_exceptions.GoogleAuthError, OSError) as exc:
        print(f"Cloud Logging error: {type(exc).__name__}: {exc}", file=stderr)
        return EXIT_PUBSUB
    print_history(found, stdout, as_json=args.json)
    if not args.json:
        print(f"{len(found)} outcome(s) since {since.strftime('%Y-%m-%d %H:%M:%S')} UTC", file=stderr)
    return EXIT_OK


# -- status: the table, and what needs someone ----------------------------------------------------

STATUS_COLUMNS = ("name", "state", "key age", "key expiry", "next rotation", "last push", "last rotation")


def _moment(text: Any) -> str:
    """An RFC 3339 moment to the minute: the table is read by people, the JSON keeps the rest."""
    if not isinstance(text, str) or not text:
        return "?"
    return text[:16].replace("T", " ") + "Z" if len(text) >= 16 else text


def status_row(item: dict[str, Any]) -> tuple[str, ...]:
    """One integration's row of the table, from its entry of the reply's ``details.integrations``."""
    age = item.get("key_age_days")
    if item.get("key_expired"):
        expiry = f"EXPIRED {_moment(item.get('key_expires_at'))}"
    elif item.get("key_expires_at"):
        expiry = _moment(item["key_expires_at"]) + (" (soon)" if item.get("key_expiring") else "")
    else:
        expiry = "never"
    due = item.get("next_rotation")
    rotation_due = (_moment(due) if due else "-") + (" OVERDUE" if item.get("rotation_overdue") else "")
    push = item.get("last_push")
    if not isinstance(push, dict):
        pushed = "passed (no failure recorded)"
    elif push.get("status") == "passed":
        pushed = f"passed since {_moment(push.get('since'))}"
    else:
        code = f" {push['code']}" if push.get("code") else ""
        pushed = f"FAILED{code} since {_moment(push.get('since'))}"
    rotated = item.get("last_rotation")
    if not isinstance(rotated, dict):
        last_rotation = "-"
    elif rotated.get("unreadable"):
        last_rotation = "unreadable"
    else:
        word = "FAILED" if rotated.get("status") == "failed" else str(rotated.get("status"))
        failure = f" {rotated['code']}" if rotated.get("code") else ""
        last_rotation = f"{word}{failure} {_moment(rotated.get('at'))}"
    return (
        str(item.get("name", "?")),
        str(item.get("state", "?")),
        f"{age:.1f} d" if isinstance(age, int | float) else "-",
        expiry,
        rotation_due,
        pushed,
        last_rotation,
    )


def status_table(integrations: Sequence[dict[str, Any]]) -> str:
    rows = [STATUS_COLUMNS, *(status_row(i) for i in integrations)]
    widths = [max(len(row[c]) for row in rows) for c in range(len(STATUS_COLUMNS))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def compliance_lines(compliance: Any) -> list[str]:
    """The compliance line, then one line per finding (over-age key, key no record claims, unchecked account)."""
    if not isinstance(compliance, dict):
        return []
    accounts = [a for a in compliance.get("accounts", []) if isinstance(a, dict)]
    if not accounts:
        return []  # nothing is provisioned: a verdict on no keys says nothing
    checked, unchecked = compliance.get("accounts_checked", 0), compliance.get("accounts_unchecked", 0)
    verdict = "compliant" if compliance.get("compliant") else "NOT COMPLIANT"
    head = (
        f"{compliance.get('benchmark')} (user-managed keys rotated every {compliance.get('max_key_age_days')} days "
        f"or less): {verdict}; {checked} account(s) checked"
        + (f", {unchecked} NOT checked" if unchecked else "")
        + f", {compliance.get('keys', 0)} key(s), {compliance.get('keys_over_age', 0)} over age, "
        f"{compliance.get('keys_not_created_by_system', 0)} not created by this system"
    )
    lines = [head]
    for account in accounts:
        email = account.get("account")
        if account.get("unchecked"):
            lines.append(f"  {email}: not checked: {account['unchecked']}")
            continue
        for key in account.get("keys", []):
            if not isinstance(key, dict):
                continue
            found = []
            if key.get("over_age"):
                found.append(f"older than {compliance.get('max_key_age_days')} days")
            if not key.get("created_by_system"):
                found.append("not created by this system")
            if found:
                age = key.get("age_days")
                made = f"created {_moment(key.get('created_at'))}" + (
                    f", {age:.0f} d" if isinstance(age, int | float) else ""
                )
                disabled = ", disabled" if key.get("disabled") else ""
                lines.append(f"  {email}: key {key.get('key_id')} ({made}{disabled}): {' and '.join(found)}")
    return lines


def compliance_attention(compliance: Any) -> list[tuple[str, str]]:
    """(account, why) for what needs a person: an over-age key, an unchecked account, a key nobody
    recorded on an account this system made (on an adopted account it may be another tool's)."""
    if not isinstance(compliance, dict):
        return []
    found = []
    for account in compliance.get("accounts", []):
        if not isinstance(account, dict):
            continue
        email = str(account.get("account"))
        if account.get("unchecked"):
            found.append((email, f"keys not checked: {account['unchecked']}"))
        if account.get("over_age"):
            found.append(
                (
                    email,
                    f"key(s) older than {compliance.get('max_key_age_days')} days: {', '.join(account['over_age'])}",
                )
            )
        if account.get("created_by_system") and account.get("not_created_by_system"):
            keys = ", ".join(account["not_created_by_system"])
            found.append((email, f"key(s) this system did not create: {keys}"))
    return found


def needs_attention(item: dict[str, Any]) -> list[str]:
    """Why an integration needs someone: failing, overdue or expiring (empty: nothing)."""
    if item.get("state") != "active":
        return []
    found = []
    push = item.get("last_push")
    if isinstance(push, dict) and push.get("status") == "failed":
        found.append(f"last push failed ({push.get('code')}) since {push.get('since')}")
    rotated = item.get("last_rotation")
    if isinstance(rotated, dict) and rotated.get("status") == "failed":
        found.append(f"last rotation failed ({rotated.get('code')}) at {rotated.get('at')}")
    if item.get("rotation_overdue"):
        found.append(f"rotation overdue since {item.get('next_rotation')}")
    if item.get("key_expired"):
        found.append(f"key expired at {item.get('key_expires_at')}")
    elif item.get("key_expiring"):
        found.append(f"key expires at {item.get('key_expires_at')}")
    return found


def _print_status(reply: dict[str, Any], *, as_json: bool, stdout: TextIO, stderr: TextIO) -> int:
    sent = reply.get("details")
    details: dict[str, Any] = sent if isinstance(sent, dict) else {}
    integrations = [i for i in details.get("integrations", []) if isinstance(i, dict)]
    if as_json:
        print(json.dumps(reply, indent=2), file=stdout)
    elif reply.get("status") != "ok":
        print(f"status {reply.get('status')}: {reply.get('reason')}", file=stdout)
    else:
        print(status_table(integrations) if integrations else "no integrations are provisioned", file=stdout)
        for line in compliance_lines(details.get("compliance")):
            print(line, file=stdout)
    code = _exit_for(reply)
    if code != EXIT_OK:
        return code
    attention = [(str(i.get("name")), why) for i in integrations for why in needs_attention(i)]
    attention += compliance_attention(details.get("compliance"))
    for name, why in attention:
        print(f"{name}: {why}", file=stderr)
    return EXIT_ATTENTION if attention else EXIT_OK


# -- main ---------------------------------------------------------------------------------------------


def _exit_for(reply: dict[str, Any]) -> int:
    status = reply.get("status")
    if status == "rejected":
        return EXIT_INVALID
    return EXIT_FAILED if status == "failed" else EXIT_OK


def main(argv: Sequence[str] | None = None, *, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    args = build_parser().parse_args(argv)
    if args.action == "history":
        return run_history(args, stdout=stdout, stderr=stderr)
    try:
        body = request_from_args(args)
    except (OSError, ValueError) as exc:
        print(f"cannot read the request: {exc}", file=stderr)
        return EXIT_INVALID
    data = json.dumps(body, separators=(",", ":")).encode("utf-8")
    try:
        request = parse_request(data)
    except InvalidRequest as exc:
        print("the request is invalid; nothing was sent:", file=stderr)
        for line in exc.errors:
            print(f"  {line}", file=stderr)
        return EXIT_INVALID

    if args.action == "status" and not args.request_only:
        args.wait = True  # read-only: what a person typing `status` wants is the answer
    publish = args.publish or args.wait
    if not publish:
        print(json.dumps(body, indent=2), file=stdout)
        return EXIT_OK
    if not args.pubsub_project:
        print("--pubsub-project (or $GCP_PROJECT) is needed to publish", file=stderr)
        return EXIT_INVALID

    request_id = request.request_id or ""
    from google.api_core import exceptions as gexc

    try:
        channel = RequestChannel(args.pubsub_project, args.topic, args.results_topic)
        if not args.wait:
            message_id = channel.publish(data, request_id)
            print(f"published {request.action} request {request_id} as message {message_id}", file=stderr)
            return EXIT_OK
        with channel.reply_subscription() as subscription:
            message_id = channel.publish(data, request_id)
            print(f"published {request.action} request {request_id} as message {message_id}; waiting…", file=stderr)
            reply = channel.await_reply(subscription, request_id, args.timeout)
    except (gexc.GoogleAPIError, TimeoutError) as exc:
        print(f"Pub/Sub error: {type(exc).__name__}: {exc}", file=stderr)
        emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
        where = f"the emulator at {emulator} (PUBSUB_EMULATOR_HOST)" if emulator else "Pub/Sub"
        print(
            f"is {where} reachable, and do --pubsub-project, --topic and --results-topic name what is deployed?",
            file=stderr,
        )
        return EXIT_PUBSUB
    if reply is None:
        print(f"no reply to request {request_id} within {args.timeout:g}s", file=stderr)
        return EXIT_NO_REPLY
    if request.action == "status":
        return _print_status(reply, as_json=args.json, stdout=stdout, stderr=stderr)
    print(json.dumps(reply, indent=2), file=stdout)
    return _exit_for(reply)


if __name__ == "__main__":
    sys.exit(main())
