"""The demo a newcomer runs (``make demo``): the whole system, end to end, on a local cloud.

Nine numbered steps, each showing what it sends, what comes back and how long it took,
then a summary table; the local cloud is stopped however the run ends (success, failure,
Ctrl-C), and the last line says whether anything was left running. The exit status is 0
only if every step reached its expected outcome, so the README's demo command is also a
test (``tests/e2e/test_demo.py``).

The first six show the system working; the last three show what on-call sees when it
breaks: the current key is deleted by hand, the next push is refused, and the operator's
own commands (``shared.cli status`` and ``history``, run in this process so that whatever
they print is what the demo prints) report it. There the refusal *is* the expected outcome.

Everything goes through the same paths as in production: requests and rotations are
Pub/Sub messages to the functions, pushes are ``skopeo copy`` to a real registry whose
notification reaches ``on_push`` through the ``gcr`` topic, and verdicts are read back
from the results topic. Only key *ids* are printed; key files, API keys and passwords
never are.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import sys
import textwrap
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO
from unittest import mock

import requests

from localcloud.pubsub import CollectedMessage, Collector
from localcloud.stack import LOCATION, REPOSITORY, LocalCloud, PushedImage, all_stopped
from shared import cli
from shared.adapters.iam import ServiceAccounts, account_name
from shared.adapters.secrets import SecretManager
from shared.model.integrations import SECRET_PREFIX, Annotation
from shared.model.keys import ServiceAccountKey
from shared.model.push_verdict import PushVerdict

INTEGRATION = "team-a"
SECRET_ID = SECRET_PREFIX + INTEGRATION
SERVICE_ACCOUNT_ID = "dlgar-puller"
#: Generous bounds: each of these normally takes a second or two.
REPLY_TIMEOUT = 60.0
VERDICT_TIMEOUT = 30.0
RESTART_TIMEOUT = 20.0
#: The Logging stand-in reads the functions' log files when asked; a line may land a moment late.
HISTORY_TIMEOUT = 15.0
REFUSED = "credentials-refused"


class StepFailed(Exception):
    """A step did not reach its expected outcome; the message says what was seen instead."""


@dataclass
class StepRecord:
    number: int
    title: str
    status: str = "not run"  # passed, FAILED, stopped (Ctrl-C), not run
    seconds: float = 0.0
    summary: str = ""


@dataclass
class DemoState:
    """What later steps need from earlier ones. The old key file is kept only in memory."""

    service_account: str = ""
    integration_id: str = ""
    first_key_id: str = ""
    rotated_key_id: str = ""
    first_key_text: str = field(default="", repr=False)


class Demo:
    """Runs the scenario on a fresh :class:`LocalCloud` and reports on ``out``."""

    def __init__(self, out: TextIO | None = None, *, keep_logs: bool = False) -> None:
        self.out = out or sys.stdout
        self.keep_logs = keep_logs
        self.state = DemoState()
        self.cloud: LocalCloud | None = None
        self.results: Collector | None = None
        self._taken: set[str] = set()  # result message ids already matched by a step
        self.steps: list[tuple[str, Callable[[], str]]] = [
            ("Start the local cloud", self.start_cloud),
            (f"Provision integration {INTEGRATION!r} with one request message", self.provision),
            ("Push an image: the reference test proves Dataloop's key can pull it", self.first_push),
            ("Rotate the key with zero downtime", self.rotate),
            ("Push again: the reference test passes with the new key", self.second_push),
            ("Rotate again: the first key is deleted and refused, Dataloop still pulls", self.retire_old_key),
            ("Delete the current key by hand in IAM: the next push is refused", self.delete_current_key),
            ("On call: the status table shows the refused push and exits 5 (attention)", self.on_call_status),
            ("On call: the history reads the refusal back from Cloud Logging", self.on_call_history),
        ]
        self.records = [StepRecord(n, title) for n, (title, _) in enumerate(self.steps, start=1)]

    # -- output --------------------------------------------------------------------------
    def say(self, text: str = "", indent: int = 6) -> None:
        print(" " * indent + text if text else "", file=self.out, flush=True)

    # -- the run -------------------------------------------------------------------------
    def run(self) -> int:
        started = time.monotonic()
        self.say("dataloop-gar: the whole system on a local cloud (no Google or Dataloop account needed)", 0)
        self.say("=" * 86, 0)
        interrupted = False
        try:
            for record, (_, action) in zip(self.records, self.steps, strict=True):
                if not self._run_step(record, action):
                    break
        except KeyboardInterrupt:
            interrupted = True
            self.say()
            self.say("Interrupted.", 0)
        finally:
            leftovers = self._stop_cloud()
        self._summary(time.monotonic() - started, leftovers)
        if interrupted:
            return 130
        passed = all(r.status == "passed" for r in self.records) and not leftovers
        return 0 if passed else 1

    def _run_step(self, record: StepRecord, action: Callable[[], str]) -> bool:
        self.say()
        self.say(f"[{record.number}/{len(self.records)}] {record.title}", 0)
        begun = time.monotonic()
        try:
            record.summary = action()
            record.status = "passed"
        except KeyboardInterrupt:
            record.status, record.seconds = "stopped", time.monotonic() - begun
            raise
        except StepFailed as exc:
            record.status, record.summary = "FAILED", str(exc)
        except Exception as exc:
            record.status, record.summary = "FAILED", f"{type(exc).__name__}: {exc}"
            self.say("unexpected error:")
            for line in traceback.format_exc().splitlines()[-12:]:
                self.say(line, 8)
        record.seconds = time.monotonic() - begun
        mark = "ok" if record.status == "passed" else "FAILED"
        self.say(f"=> {mark}: {record.summary} ({record.seconds:.1f} s)")
        if record.status != "passed":
            self._point_at_logs()
        return record.status == "passed"

    def _point_at_logs(self) -> None:
        if self.cloud is None:
            return
        self.cloud.keep_workdir = True  # a failed run's logs are worth keeping
        self.say(f"logs kept in {self.cloud.workdir}/logs (functions) and {self.cloud.workdir}/registry")

    def _stop_cloud(self) -> list[str]:
        if self.cloud is None:
            return []
        self.say()
        self.say("Stopping the local cloud ...", 0)
        ports, pids = self.cloud.ports(), self.cloud.pids()
        self.cloud.stop()
        leftovers = all_stopped(ports, pids)
        if leftovers:
            self.say(f"left running: {'; '.join(leftovers)}")
        else:
            self.say(f"stopped {len(pids)} processes; all {len(ports)} ports closed")
        return leftovers

    def _summary(self, total: float, leftovers: list[str]) -> None:
        self.say()
        self.say("Summary", 0)
        width = max(len(r.title) for r in self.records)
        self.say(f"  #  {'step':<{width}}  {'result':<8} {'time':>7}", 0)
        self.say(f"  -  {'-' * width}  {'-' * 8} {'-' * 7}", 0)
        for r in self.records:
            seconds = f"{r.seconds:.1f} s" if r.status != "not run" else ""
            self.say(f"  {r.number}  {r.title:<{width}}  {r.status:<8} {seconds:>7}", 0)
        passed = sum(r.status == "passed" for r in self.records)
        verdict = "all steps passed" if passed == len(self.records) else f"{passed}/{len(self.records)} steps passed"
        if leftovers:
            verdict += "; the local cloud did not stop cleanly"
        self.say(f"Total {total:.1f} s: {verdict}.", 0)

    # -- helpers -------------------------------------------------------------------------
    @property
    def _cloud(self) -> LocalCloud:
        assert self.cloud is not None, "the local cloud is not running"
        return self.cloud

    @property
    def _results(self) -> Collector:
        assert self.results is not None, "no results subscription"
        return self.results

    def _wait_result(self, what: str, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first result matching ``predicate`` that no earlier step has already taken."""

        def matches(message: CollectedMessage) -> bool:
            return message.message_id not in self._taken and isinstance(message.json, dict) and predicate(message.json)

        try:
            found = self._results.wait_for(matches, timeout=timeout)
        except TimeoutError:
            raise StepFailed(f"no {what} on the results topic within {timeout:.0f} s") from None
        self._taken.add(found.message_id)
        return found.json

    def _push_and_wait_verdict(self, tag: str) -> tuple[dict[str, Any], float]:
        cloud = self._cloud
        reference = f"{cloud.registry_host}/{cloud.project}/{REPOSITORY}/app:{tag}"
        self.say(f"skopeo copy oci:<one-layer image> docker://{reference}")
        begun = time.monotonic()
        pushed = cloud.push("app", tag)
        self.say(f"pushed {pushed.digest[:19]}... in {time.monotonic() - begun:.1f} s")
        self.say(f"registry webhook -> bridge -> topic gcr: {self._wait_forwarded(pushed)}")
        verdict = self._wait_result(
            f"reference-test verdict for {pushed.by_digest}",
            lambda body: body.get("kind") == "reference-test" and pushed.digest in str(body.get("subject", {})),
            VERDICT_TIMEOUT,
        )
        return verdict, time.monotonic() - begun

    def _wait_forwarded(self, pushed: PushedImage, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in self._cloud.bridge.published:
                if item.message.digest == pushed.by_digest:
                    short = pushed.by_digest[: pushed.by_digest.index("@") + 20] + "..."
                    return f"message {item.message_id} {item.message.action} digest={short} tag={item.message.tag}"
            time.sleep(0.05)
        raise StepFailed(f"the registry's notification for {pushed.by_digest} never reached the bridge")

    def _secrets(self) -> SecretManager:
        """The project's Secret Manager adapter, as an operator would read the integration's secret."""
        return SecretManager(self._cloud.project, endpoint=self._cloud.secret_manager_url, timeout=5.0)

    def _current_key(self) -> ServiceAccountKey:
        """The key Dataloop is meant to hold: the secret's ``current`` version."""
        _, payload = self._secrets().access(SECRET_ID, "current")
        return ServiceAccountKey.from_json(payload, source=f"secret {SECRET_ID}")

    # -- the steps -----------------------------------------------------------------------
    def start_cloud(self) -> str:
        self.cloud = LocalCloud(keep_workdir=self.keep_logs, progress=lambda line: self.say(line))
        self.cloud.start()
        self.results = self.cloud.results_collector("demo")
        cloud = self.cloud
        self.say(f"registry host {cloud.registry_host}; GAR-like repository {cloud.seed.repository_path}")
        self.say(f"Dataloop org {cloud.seed.org_id}; canary service {cloud.seed.canary_service_id} runs")
        self.say(f"  {cloud.seed.runner_image.by_tag}", 8)
        self.say(f"IAM propagation delay {cloud.iam_propagation_delay_seconds:g} s; logs in {cloud.workdir}/logs")
        return f"{len(cloud.ports())} endpoints and {len(cloud.functions)} functions up"

    def provision(self) -> str:
        cloud = self._cloud
        request = {
            "version": 1,
            "action": "provision",
            "request_id": "demo-provision-1",
            "name": INTEGRATION,
            "org_id": cloud.seed.org_id,
            "project": cloud.project,
            "location": LOCATION,
            "repositories": [REPOSITORY],
            "registry_host": cloud.registry_host,
            "service_account": {"create": SERVICE_ACCOUNT_ID},
            # The canary's image is the one provisioning proves the new key can pull.
            "canary": {"image": cloud.seed.runner_image.by_tag, "service_id": cloud.seed.canary_service_id},
        }
        self.say(f"publish on {cloud.topics.requests}:")
        for line in textwrap.wrap(json.dumps(request), width=100, break_long_words=False):
            self.say(line, 8)
        begun = time.monotonic()
        cloud.publish(cloud.topics.requests, request)
        reply = self._wait_result(
            "reply to demo-provision-1", lambda body: body.get("request_id") == "demo-provision-1", REPLY_TIMEOUT
        )
        self.say(f"reply after {time.monotonic() - begun:.1f} s: {reply.get('status')}: {reply.get('reason')}")
        if reply.get("status") != "ok":
            raise StepFailed(f"provisioning answered {reply.get('status')}: {reply.get('reason')}")
        durations = reply.get("durations_ms") or {}
        for name, done in ((reply.get("details") or {}).get("steps") or {}).items():
            took = f"{durations[name] / 1000:5.2f} s" if isinstance(durations.get(name), (int, float)) else " " * 7
            self.say(f"  {name:<16} {took}  {_describe(done)}", 8)

        # What the request created, read back from the stand-ins and through the real APIs.
        email = f"{SERVICE_ACCOUNT_ID}@{cloud.project}.iam.gserviceaccount.com"
        self.state.service_account = email
        keys = cloud.iam.state.keys_of(email)
        readers = cloud.artifact_registry.state.readers(cloud.seed.repository_path)
        stored = [
            i for i in cloud.dataloop.stored_integrations(cloud.seed.org_id) if i["public"]["name"] == INTEGRATION
        ]
        secret = self._secrets().get_secret(SECRET_ID)
        if not keys or f"serviceAccount:{email}" not in readers or not stored:
            raise StepFailed("the reply said ok, but the service account, grant or Dataloop integration is missing")
        self.state.integration_id = stored[0]["public"]["id"]
        self.say(f"IAM: service account {email} with {len(keys)} user-managed key")
        self.say(f"Artifact Registry: roles/artifactregistry.reader on {cloud.seed.repository_path}")
        self.say(f"Secret Manager: {SECRET_ID}, aliases {dict(secret.version_aliases)}")
        self.say(f"Dataloop: private-registry integration {self.state.integration_id} for {cloud.registry_host}")
        return f"integration {INTEGRATION} provisioned with key {keys[-1].key_id[:12]}..."

    def first_push(self) -> str:
        first = self._current_key()
        self.state.first_key_id, self.state.first_key_text = first.key_id, first.json_text
        key_id, seconds = self._push_and_check("v1", first.key_id)
        return f"passed with key {key_id[:12]}..., push to verdict {seconds:.1f} s"

    def _push_and_check(self, tag: str, expected_key_id: str) -> tuple[str, float]:
        """Push, wait for on_push's verdict, show each tier; the key id the test used, and seconds taken."""
        verdict, seconds = self._push_and_wait_verdict(tag)
        detail = self._show_verdict(verdict, seconds)
        if verdict.get("status") != "passed":
            raise StepFailed(f"expected passed, got {verdict.get('status')}: {verdict.get('reason')}")
        key_id = str(detail.get("key_id") or "")
        if key_id != expected_key_id:
            raise StepFailed(f"the test used key {key_id}, not the current key {expected_key_id}")
        return key_id, seconds

    def _show_verdict(self, verdict: dict[str, Any], seconds: float) -> dict[str, Any]:
        """Every tier is shown before a step judges the verdict, so a surprise is visible where it happened."""
        self.say(f"on_push verdict after {seconds:.1f} s: {verdict.get('status')}")
        detail: dict[str, Any] = (verdict.get("details") or {}).get(INTEGRATION) or {}
        self.say(f"  registry tier: {detail.get('reason', verdict.get('reason'))}", 8)
        platform = detail.get("platform")
        if isinstance(platform, dict):
            self.say(f"  platform tier: {platform.get('reason')}", 8)
        return detail

    def rotate(self) -> str:
        old = self.state.first_key_id
        new = self._rotate()
        self.state.rotated_key_id = new
        self.say(f"old key {old[:12]}... -> new key {new[:12]}... (Dataloop's integration now holds the new one)")
        status, message = self._token_status(self.state.first_key_text)
        self.say(f"the old key is kept as 'previous' for the grace period: token endpoint says {status} {message}")
        if status != 200:
            raise StepFailed(f"the old key stopped working at once (HTTP {status}): that is downtime")
        return f"rotated {old[:8]}... -> {new[:8]}..., the old key still valid"

    def second_push(self) -> str:
        key_id, _ = self._push_and_check("v2", self.state.rotated_key_id)
        return f"passed with the new key {key_id[:12]}..."

    def retire_old_key(self) -> str:
        cloud = self._cloud
        first = self.state.first_key_id
        newest = self._rotate()
        remaining = [k.key_id for k in cloud.iam.state.keys_of(self.state.service_account)]
        if first in remaining:
            raise StepFailed(f"the first key {first} is still on the service account after its grace period")
        self.say(f"the first key {first[:12]}... is deleted (grace period {cloud.key_grace_period_seconds:g} s)")
        scope = f"repository:{cloud.project}/{REPOSITORY}/app:pull"
        self.say(f"GET {cloud.token_realm}?scope={scope}  (Basic _json_key:<first key file>)")
        status, message = self._token_status(self.state.first_key_text)
        self.say(f"-> {status} {message}")
        if status != 401:
            raise StepFailed(f"the deleted key got HTTP {status} from the token endpoint, not 401")

        self.say(f"Dataloop: restart canary service {cloud.seed.canary_service_id} (its runner image is private)")
        runtime = self._restart_canary()
        pull = next((p for p in reversed(cloud.dataloop.pulls) if p.service_id == cloud.seed.canary_service_id), None)
        self.say(f"-> runtime status: {runtime}")
        if pull is None or not pull.ok or pull.integration_id != self.state.integration_id:
            raise StepFailed(f"the canary's pull did not succeed with integration {self.state.integration_id}")
        self.say(f"   pulled with integration {pull.integration_id}, which holds key {newest[:12]}...")
        return "first key deleted and refused (401); Dataloop's restart pulled with the newest key"

    def delete_current_key(self) -> str:
        cloud = self._cloud
        email = self.state.service_account
        current = self._current_key().key_id
        self.say(f"gcloud iam service-accounts keys delete {current} --iam-account={email}")
        self.say(f"= IAM DeleteServiceAccountKey {account_name(email)}/keys/{current}", 8)
        begun = time.monotonic()
        with ServiceAccounts(endpoint=cloud.iam.target, timeout=5.0) as accounts:
            deleted = accounts.delete_key(email, current)
            remaining = [k.key_id for k in accounts.list_keys(email)]
        self.say(f"-> {'deleted' if deleted else 'already gone'} in {time.monotonic() - begun:.1f} s")
        self.say(f"keys on the service account now: {', '.join(k[:12] + '...' for k in remaining) or 'none'}")
        if not deleted or current in remaining:
            raise StepFailed(f"IAM still lists the key {current} after deleting it")
        self.say(f"Secret Manager's 'current' and Dataloop's integration still hold {current[:12]}...")

        verdict, seconds = self._push_and_wait_verdict("v3")
        detail = self._show_verdict(verdict, seconds)
        status, code = verdict.get("status"), verdict.get("code")
        if status != "failed" or code != REFUSED:
            raise StepFailed(f"expected failed {REFUSED}, got {status} {code}: {verdict.get('reason')}")
        if detail.get("key_id") != current:
            raise StepFailed(f"the test used key {detail.get('key_id')}, not the deleted current key {current}")
        recorded = PushVerdict.from_annotations(self._secrets().get_secret(SECRET_ID).annotations)
        if recorded is None:
            raise StepFailed(f"on_push recorded no verdict in {SECRET_ID}'s {Annotation.LAST_PUSH} annotation")
        word = "passed" if recorded.passed else f"failed {recorded.code}"
        self.say(
            f"Secret Manager: {SECRET_ID} annotation {Annotation.LAST_PUSH}: {word} since {recorded.since:%H:%M:%S}"
        )
        if recorded.passed or recorded.code != REFUSED:
            raise StepFailed(f"the {Annotation.LAST_PUSH} annotation says {word}, not failed {REFUSED}")
        return f"key {current[:12]}... deleted; the push failed {REFUSED}, recorded in {Annotation.LAST_PUSH}"

    def on_call_status(self) -> str:
        cloud = self._cloud
        argv = ["status", "--wait", "--timeout", "30", "--pubsub-project", cloud.project,
                "--topic", cloud.topics.requests, "--results-topic", cloud.topics.results]  # fmt: skip
        env = {"PUBSUB_EMULATOR_HOST": cloud.emulator.host_port}
        code, table, _ = self._run_cli(argv, env)
        if code != cli.EXIT_ATTENTION:
            raise StepFailed(f"status exited {code}, not {cli.EXIT_ATTENTION} (an integration needs someone)")
        row = next((line for line in table.splitlines() if line.split()[:1] == [INTEGRATION]), None)
        if row is None or f"FAILED {REFUSED}" not in row:
            raise StepFailed(f"the table has no row saying {INTEGRATION}'s last push FAILED {REFUSED}: {row!r}")
        return f"exit {code} (attention): {INTEGRATION}'s last push FAILED {REFUSED}"

    def on_call_history(self) -> str:
        cloud = self._cloud
        argv = ["history", "--name", INTEGRATION, "--since", "1h",
                "--project", cloud.project, "--logging-endpoint", cloud.cloud_logging.url]  # fmt: skip
        refused = re.compile(rf"\sreference-test\s+{re.escape(INTEGRATION)}\s+failed\s+{REFUSED}\s")
        deadline = time.monotonic() + HISTORY_TIMEOUT
        tries = 0
        while True:
            tries += 1
            code, lines, seconds = self._run_cli(argv, {}, show=False)
            found = [line for line in lines.splitlines() if refused.search(line)]
            if code != cli.EXIT_OK or found or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        self._show_command(argv, {}, lines, code, seconds)
        if code != cli.EXIT_OK:
            raise StepFailed(f"history exited {code}")
        if not found:
            raise StepFailed(f"no failed {REFUSED} verdict in the history within {HISTORY_TIMEOUT:.0f} s")
        again = f" (asked {tries} times)" if tries > 1 else ""
        return f"the {REFUSED} verdict is in the history{again}"

    def _run_cli(self, argv: list[str], env: Mapping[str, str], *, show: bool = True) -> tuple[int, str, float]:
        """The operator's command, run in this process; its exit code, its stdout and seconds taken.

        Its own output is what is shown (stdout and stderr interleaved, as a terminal would), so
        whatever the command prints, the demo prints, and no table is drawn twice.
        """
        screen = io.StringIO()
        stdout, stderr = _Tee(screen), _Tee(screen)
        begun = time.monotonic()
        with mock.patch.dict(os.environ, env):  # the Pub/Sub client finds the emulator by a variable
            code = cli.main(argv, stdout=stdout, stderr=stderr)
        seconds = time.monotonic() - begun
        if show:
            self._show_command(argv, env, screen.getvalue(), code, seconds)
        return code, stdout.getvalue(), seconds

    def _show_command(self, argv: list[str], env: Mapping[str, str], text: str, code: int, seconds: float) -> None:
        assignments = "".join(f"{name}={value} " for name, value in env.items())
        self.say(f"$ {assignments}python -m shared.cli {shlex.join(argv)}")
        for line in text.splitlines():
            self.say(line, 8)
        self.say(f"-> exit {code} after {seconds:.1f} s")

    def _rotate(self) -> str:
        """Ask the rotate function to rotate now; returns the new current key id."""
        cloud = self._cloud
        before = self._current_key().key_id
        self.say(f'publish on {cloud.topics.rotation}: {{"kind":"rotate","integration":"{SECRET_ID}","force":true}}')
        begun = time.monotonic()
        cloud.publish(cloud.topics.rotation, {"kind": "rotate", "integration": SECRET_ID, "force": True})
        result = self._wait_result(
            f"rotation result for {SECRET_ID}",
            lambda body: (
                body.get("kind") == "rotation"
                and body.get("status") != "ignored"  # Secret Manager's own events reach the same topic
                and (body.get("subject") or {}).get("integration") == INTEGRATION
            ),
            REPLY_TIMEOUT,
        )
        self.say(f"result after {time.monotonic() - begun:.1f} s: {result.get('status')}: {result.get('reason')}")
        if result.get("status") != "ok":
            raise StepFailed(f"rotation answered {result.get('status')}: {result.get('reason')}")
        steps = [s for s in (result.get("details") or {}).get("steps", []) if isinstance(s, dict)]
        for step in steps:
            self.say(
                f"  {step.get('step', '?'):<7} {step.get('duration_ms', 0) / 1000:5.2f} s  {step.get('note', '')}", 8
            )
        test_ms = next((s.get("duration_ms", 0) for s in steps if s.get("step") == "test"), 0)
        if test_ms >= 1000 * cloud.iam_propagation_delay_seconds:
            self.say("the test step waited for IAM to accept the new key before Dataloop was given it")
        after = self._current_key().key_id
        if after == before:
            raise StepFailed("the rotation reported ok but the current key did not change")
        remaining = [k.key_id[:12] + "..." for k in cloud.iam.state.keys_of(self.state.service_account)]
        self.say(f"keys on the service account now: {', '.join(remaining)}")
        return after

    def _token_status(self, key_text: str) -> tuple[int, str]:
        """Ask the registry's token endpoint for a pull token with a key file, as a kubelet would."""
        cloud = self._cloud
        params = {
            "service": cloud.token_endpoint.service,
            "scope": f"repository:{cloud.project}/{REPOSITORY}/app:pull",
        }
        answer = requests.get(cloud.token_realm, params=params, auth=("_json_key", key_text), timeout=10)
        return answer.status_code, _error_message(answer)

    def _restart_canary(self) -> str:
        from shared.adapters.dataloop.client import DataloopClient

        cloud = self._cloud
        service_id = cloud.seed.canary_service_id
        with DataloopClient(api_key=cloud.seed.admin_api_key, base_url=f"{cloud.dataloop_url}/api/v1") as client:
            since = datetime.now(UTC).replace(microsecond=0)
            client.services.restart(service_id)
            deadline = time.monotonic() + RESTART_TIMEOUT
            while time.monotonic() < deadline:
                entries = client.services.status(service_id).since(since)
                if entries and (entries[-1].status or entries[-1].reason == "ImagePullBackOff"):
                    latest = entries[-1]
                    if not latest.status:
                        raise StepFailed(f"the canary service could not pull: {latest.reason}: {latest.message}")
                    return f"running ({latest.message})"
                time.sleep(0.1)
        raise StepFailed(f"the canary service reported nothing within {RESTART_TIMEOUT:.0f} s of its restart")


class _Tee(io.StringIO):
    """One of a command's streams: kept on its own, and copied to the screen both share."""

    def __init__(self, screen: io.StringIO) -> None:
        super().__init__()
        self._screen = screen

    def write(self, text: str) -> int:
        self._screen.write(text)
        return super().write(text)


def _describe(done: Any) -> str:
    """A provisioning step's result on one line: a test verdict by its reason, a mapping as ``k: v``."""
    if isinstance(done, dict) and "reason" in done:
        tries = f" ({done['attempts']} tries)" if done.get("attempts") else ""
        return f"{'passed' if done.get('passed') else 'failed'}: {done['reason']}{tries}"
    if isinstance(done, dict):
        return ", ".join(f"{key}: {value}" for key, value in done.items())
    return str(done)


def _error_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("message", response.reason))
    return response.reason


def main(keep_logs: bool = False) -> int:
    return Demo(keep_logs=keep_logs).run()
