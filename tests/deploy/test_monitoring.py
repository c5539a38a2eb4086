"""The log-based metrics select the lines the functions really write, and only those.

The lines come from the functions' own code: each workflow runs through
``shared.app.entrypoint.handle_event`` (what every function's ``main.py`` calls) against the
unit tests' fakes, and every record is formatted by ``shared.core.logs.CloudLoggingFormatter``.
Each line is then read as Cloud Run reads a JSON line on stdout (docs/external-apis.md §9.2):
the special keys become the entry's severity and labels, the rest its ``jsonPayload``, and the
entry's resource is the function's Cloud Run service. The metric filters and extractors are
evaluated by :class:`Query`, which implements the part of the Logging query language they use,
so a field the functions rename breaks a test here, not an alert in production.

Also here: deploy creates the monitoring resources once (a second run updates them and creates
nothing), teardown removes them and leaves channels it did not make.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import subprocess
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from deploy import cron, monitoring
from deploy.deploy import main
from deploy.settings import DeploySettings, SettingsError, load, parse
from shared.adapters.pubsub import PubSubFanOut
from shared.app import entrypoint
from shared.core.logs import CloudLoggingFormatter
from shared.model.events import PubSubMessage
from shared.model.integrations import Annotation
from shared.model.record import timestamp
from shared.model.request import parse_request
from shared.model.results import Outcome
from shared.workflows.push import PushTester
from shared.workflows.reference_test import ReferenceTest, Verdict
from shared.workflows.rotation.messages import RotationMessages
from shared.workflows.status import StatusReport
from shared.workflows.sweep import Sweep
from tests.deploy import gcloud_cli
from tests.deploy.fake_cloud import FakeCloud
from tests.unit.fakes import (
    DIGEST,
    SECRET_ID,
    FakeDirectory,
    FakeKeys,
    FakePublisher,
    FakeRegistry,
    FakeSink,
    integration,
    integration_annotations,
    key_json,
)
from tests.unit.test_rotation import make_world

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "deploy" / "config.example.toml"
SETTINGS = load(EXAMPLE)
HOST = "us-central1-docker.pkg.dev"
IMAGE = f"{HOST}/proj/images/app"
#: Cloud Run lifts these keys of a JSON line out of ``jsonPayload`` (docs/external-apis.md §9.2).
SPECIAL = {"severity", "time", "logging.googleapis.com/labels", "logging.googleapis.com/trace"}
SPECIAL |= {"logging.googleapis.com/spanId"}


# -- the Logging query language, the part the metrics use ----------------------------------------------


class Query:
    """``path = "value"``, ``path : "value"`` (substring), ``path:*`` (present), AND, OR, parentheses;
    string comparisons ignore case (docs/external-apis.md §9.1).

    Anything else in a filter is a test failure: the metrics may not use more of the language
    than is checked here. A path through a list fans out over its elements, which the metrics
    avoid (how Logging compares repeated fields is not documented): a filter that relied on it
    would still pass here, so :func:`test_no_filter_goes_through_a_list` checks for it.
    """

    TOKEN = re.compile(
        r'\s*(?:(?P<paren>[()])|(?P<op>AND|OR)\b|(?P<cmp>[\w.]+)\s*(?P<sign>[=:])\s*(?P<value>"[^"]*"|\*))'
    )

    def __init__(self, text: str) -> None:
        self.tokens: list[re.Match[str]] = []
        position = 0
        while position < len(text.rstrip()):
            match = self.TOKEN.match(text, position)
            assert match, f"not in the supported subset: {text[position:]!r}"
            self.tokens.append(match)
            position = match.end()

    def matches(self, entry: dict[str, Any]) -> bool:
        self.at = 0
        result = self._or(entry)
        assert self.at == len(self.tokens), "unbalanced filter"
        return result

    def _or(self, entry: dict[str, Any]) -> bool:
        result = self._and(entry)
        while self.at < len(self.tokens) and self.tokens[self.at]["op"] == "OR":
            self.at += 1
            result = self._and(entry) or result
        return result

    def _and(self, entry: dict[str, Any]) -> bool:
        result = self._term(entry)
        while self.at < len(self.tokens) and self.tokens[self.at]["op"] == "AND":
            self.at += 1
            result = self._term(entry) and result
        return result

    def _term(self, entry: dict[str, Any]) -> bool:
        token = self.tokens[self.at]
        self.at += 1
        if token["paren"] == "(":
            result = self._or(entry)
            assert self.tokens[self.at]["paren"] == ")"
            self.at += 1
            return result
        assert token["cmp"], f"unexpected {token.group(0)!r}"
        values = list(values_at(entry, token["cmp"]))
        if token["value"] == "*":
            return bool(values)
        wanted = token["value"][1:-1]
        if token["sign"] == "=":
            return any(scalar(v).lower() == wanted.lower() for v in values)
        return any(wanted.lower() in scalar(v).lower() for v in values)


def values_at(node: Any, path: str) -> Iterator[Any]:
    """Every value at ``path``, fanning out over lists."""
    head, _, rest = path.partition(".")
    if isinstance(node, list):
        for item in node:
            yield from values_at(item, path)
        return
    if not isinstance(node, dict) or head not in node or node[head] is None:
        return
    if rest:
        yield from values_at(node[head], rest)
    elif isinstance(node[head], list):
        yield from node[head]
    else:
        yield node[head]


def scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


EXTRACT = re.compile(r'EXTRACT\((?P<path>[\w.]+)\)|REGEXP_EXTRACT\((?P<rpath>[\w.]+), "(?P<regex>(?:[^"\\]|\\.)*)"\)')


def extract(extractor: str, entry: dict[str, Any]) -> str | None:
    """A label or value extractor: ``EXTRACT(path)`` or ``REGEXP_EXTRACT(path, "re")`` (one group)."""
    match = EXTRACT.fullmatch(extractor)
    assert match, f"not a supported extractor: {extractor}"
    found = list(values_at(entry, match["path"] or match["rpath"]))
    if not found:
        return None
    value = scalar(found[0])
    if match["regex"] is None:
        return value
    captured = re.search(match["regex"].encode().decode("unicode_escape"), value)
    return captured.group(1) if captured else None


# -- the lines the functions write ------------------------------------------------------------------


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.setFormatter(CloudLoggingFormatter("my-gcp-project"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def as_entry(line: str, function_key: str) -> dict[str, Any]:
    """A formatter line as Cloud Run turns it into a LogEntry of the function's service."""
    payload = json.loads(line)
    entry: dict[str, Any] = {
        "severity": payload.get("severity", "DEFAULT"),
        "labels": payload.get("logging.googleapis.com/labels", {}),
        "resource": {"type": "cloud_run_revision", "labels": {"service_name": SETTINGS.function_name(function_key)}},
        "jsonPayload": {k: v for k, v in payload.items() if k not in SPECIAL},
    }
    return entry


def event(payload: object, **attributes: str) -> dict[str, Any]:
    message: dict[str, Any] = {"data": base64.b64encode(json.dumps(payload).encode()).decode(), "messageId": "m1"}
    if attributes:
        message["attributes"] = attributes
    return {"message": message}


class Canary:
    def __init__(self, passed: bool) -> None:
        self.passed = passed

    def run(self, service_id: str, image: str) -> Verdict:
        code = None if self.passed else "image-pull-failed"
        return Verdict("platform", self.passed, "ran" if self.passed else "ImagePullBackOff", code)


@pytest.fixture(scope="module")
def written() -> dict[str, list[dict[str, Any]]]:
    """Every line each scenario's function wrote, as LogEntries, by scenario."""
    handler = Lines()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    by_scenario: dict[str, list[dict[str, Any]]] = {}

    def run(name: str, key: str, kind: str, payload: object, workflow: Callable[[PubSubMessage], Outcome]) -> None:
        start = len(handler.lines)
        entrypoint.handle_event(kind, event(payload), workflow, FakeSink())
        by_scenario[name] = [as_entry(line, key) for line in handler.lines[start:]]

    try:
        push = {"action": "INSERT", "digest": f"{IMAGE}@{DIGEST}"}

        def tester(*, valid: set[str], canary: bool | None = None) -> PushTester:
            registry = FakeRegistry(images={(HOST, "proj/images/app"): {"v1": DIGEST}}, valid_keys=valid)
            found = integration(canary_service="svc-1") if canary is not None else integration()
            keys = FakeKeys({"dataloop-gar-team-a": {1: key_json("k1")}})
            made = Canary(bool(canary))
            return PushTester(FakeDirectory([found]), keys, ReferenceTest(registry), canary=lambda: made)  # type: ignore[arg-type,return-value]

        run("verdict passed", "on_push", "reference-test", push, tester(valid={"k1"}).handle)
        run("verdict credentials-refused", "on_push", "reference-test", push, tester(valid=set()).handle)
        pulled = {"action": "INSERT", "tag": f"{IMAGE}:v1"}
        run("verdict image-pull-failed", "on_push", "reference-test", pulled, tester(valid={"k1"}, canary=False).handle)
        other = {"action": "INSERT", "digest": f"{HOST}/proj/other/app@{DIGEST}"}
        run("verdict uncovered", "on_push", "reference-test", other, tester(valid={"k1"}).handle)
        run("verdict malformed", "on_push", "reference-test", {"action": 1}, tester(valid={"k1"}).handle)

        def rotation(*, roll_back: bool = False) -> RotationMessages:
            world = make_world()
            old = world.provision()
            if roll_back:
                world.registry.never = {f"{n:040x}" for n in range(0xA000, 0xA100)} - {old.key_id}
            sweep = Sweep(world.secrets, PubSubFanOut("t", publisher=FakePublisher()), clock=world.clock)
            return RotationMessages(world.rotation, sweep, world.secrets)

        rotate = {"kind": "rotate", "integration": SECRET_ID}
        run("rotation ok", "rotate", "rotation", rotate, rotation().handle)
        run("rotation rolled back", "rotate", "rotation", rotate, rotation(roll_back=True).handle)
        missing = {"kind": "rotate", "integration": "dataloop-gar-nobody"}
        run("rotation failed", "rotate", "rotation", missing, rotation().handle)

        def sweeping(*, expires_in: timedelta | None) -> RotationMessages:
            world = make_world()
            notes = integration_annotations(**{Annotation.ROTATED_AT: timestamp(world.clock() - timedelta(days=6))})
            if expires_in is not None:
                notes[Annotation.KEY_EXPIRES_AT] = timestamp(world.clock() + expires_in)
            world.secrets.put(SECRET_ID, notes)
            sweep = Sweep(world.secrets, PubSubFanOut("t", publisher=FakePublisher()), clock=world.clock)
            return RotationMessages(world.rotation, sweep, world.secrets)

        run("sweep nothing due", "rotate", "rotation", {"kind": "sweep"}, sweeping(expires_in=None).handle)
        expiring = sweeping(expires_in=timedelta(hours=12)).handle
        run("sweep key expiring", "rotate", "rotation", {"kind": "sweep"}, expiring)
        run(
            "sweep key expired", "rotate", "rotation", {"kind": "sweep"}, sweeping(expires_in=-timedelta(days=1)).handle
        )

        world = make_world()
        report = StatusReport(world.secrets, default_rotation_period_days=30.0, clock=world.clock)

        def status(message: PubSubMessage) -> Outcome:
            return report.status(parse_request(message.json()))  # type: ignore[arg-type]

        asked = {"version": 1, "action": "status", "name": "team-a"}
        run("request status failed", "requests", "request", asked, status)
        run("request malformed", "requests", "request", {"version": 1, "action": "dance"}, status)
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    return by_scenario


def selected(written: dict[str, list[dict[str, Any]]], key: str) -> dict[str, list[dict[str, Any]]]:
    query = Query(monitoring.metric(SETTINGS, key).filter)
    found = {name: [e for e in entries if query.matches(e)] for name, entries in written.items()}
    return {name: entries for name, entries in found.items() if entries}


def labels(key: str, entry: dict[str, Any]) -> dict[str, str | None]:
    config = monitoring.metric(SETTINGS, key).config()
    return {label: extract(extractor, entry) for label, extractor in config.get("labelExtractors", {}).items()}


def test_every_scenario_ends_in_one_outcome_line(written: dict[str, list[dict[str, Any]]]) -> None:
    for name, entries in written.items():
        outcomes = [e for e in entries if "outcome" in e["jsonPayload"]]
        assert len(outcomes) == 1, (name, entries)


def test_verdicts_are_one_per_push_with_status_code_and_integration(written: dict[str, list[dict[str, Any]]]) -> None:
    found = selected(written, "verdicts")
    assert set(found) == {n for n in written if n.startswith("verdict ")}
    assert all(len(entries) == 1 for entries in found.values())
    got = {name: labels("verdicts", entries[0]) for name, entries in found.items()}
    assert got == {
        "verdict passed": {"status": "passed", "code": None, "integration": "team-a"},
        "verdict credentials-refused": {"status": "failed", "code": "credentials-refused", "integration": "team-a"},
        "verdict image-pull-failed": {"status": "failed", "code": "image-pull-failed", "integration": "team-a"},
        "verdict uncovered": {"status": "uncovered", "code": None, "integration": None},
        "verdict malformed": {"status": "rejected", "code": got["verdict malformed"]["code"], "integration": None},
    }
    assert got["verdict malformed"]["code"]  # a rejection has a code of its own


def test_the_pull_alert_fires_on_exactly_the_two_codes(written: dict[str, list[dict[str, Any]]]) -> None:
    policy = next(p for p in monitoring.policies(SETTINGS) if p.key == "pull-refused")
    codes = {
        re.search(r'metric\.label\.code="([^"]+)"', c["conditionThreshold"]["filter"])[1]  # type: ignore[index]
        for c in policy.conditions
    }
    assert codes == {"credentials-refused", "image-pull-failed"}
    fired = {n for n, e in selected(written, "verdicts").items() if labels("verdicts", e[0])["code"] in codes}
    assert fired == {"verdict credentials-refused", "verdict image-pull-failed"}


def test_rotations_rollbacks_and_their_labels(written: dict[str, list[dict[str, Any]]]) -> None:
    rotations = selected(written, "rotations")
    assert set(rotations) == {"rotation ok", "rotation rolled back", "rotation failed"}
    got = {name: labels("rotations", entries[0]) for name, entries in rotations.items()}
    assert got["rotation ok"] == {"status": "ok", "code": None, "integration": "team-a"}
    assert got["rotation rolled back"] == {"status": "failed", "code": "key-never-worked", "integration": "team-a"}
    assert got["rotation failed"]["status"] == "failed" and got["rotation failed"]["code"]
    assert set(selected(written, "rotation-rollbacks")) == {"rotation rolled back"}


def test_the_sweep_metrics_see_expiring_and_expired_keys(written: dict[str, list[dict[str, Any]]]) -> None:
    sweeps = selected(written, "sweep-due")
    assert set(sweeps) == {"sweep nothing due", "sweep key expiring", "sweep key expired"}
    extractor = monitoring.metric(SETTINGS, "sweep-due").value_extractor or ""
    assert {n: extract(extractor, e[0]) for n, e in sweeps.items()} == {
        "sweep nothing due": "0",
        "sweep key expiring": "1",
        "sweep key expired": "1",
    }
    assert set(selected(written, "keys-expiring")) == {"sweep key expiring", "sweep key expired"}
    assert set(selected(written, "keys-expired")) == {"sweep key expired"}


SWEEPS = {"sweep nothing due", "sweep key expiring", "sweep key expired"}


def test_key_age_is_one_value_per_key_per_sweep_labelled_with_its_integration(
    written: dict[str, list[dict[str, Any]]],
) -> None:
    found = selected(written, "key-age")
    assert set(found) == SWEEPS
    extractor = monitoring.metric(SETTINGS, "key-age").value_extractor or ""
    for name, entries in found.items():
        (entry,) = entries  # one integration in each world: one line, and not the outcome line
        assert "outcome" not in entry["jsonPayload"] and entry["severity"] == "INFO"
        assert float(extract(extractor, entry) or "nan") == 6.0, name  # rotated six days before the sweep
        assert labels("key-age", entry) == {"integration": "team-a"}  # the name, as in the other metrics
        assert set(entry["jsonPayload"]["key_age"]) == {"integration", "secret", "age_days", "expires_at"}
        assert "private_key" not in json.dumps(entry)
    assert found["sweep nothing due"][0]["jsonPayload"]["key_age"]["expires_at"] is None
    assert found["sweep key expiring"][0]["jsonPayload"]["key_age"]["expires_at"].endswith("Z")


def test_key_age_is_a_distribution_in_days_with_90_days_a_bucket_bound() -> None:
    config = monitoring.metric(SETTINGS, "key-age").config()
    assert config["metricDescriptor"] == {
        "metricKind": "DELTA",
        "valueType": "DISTRIBUTION",
        "unit": "d",
        "labels": [
            {
                "key": "integration",
                "valueType": "STRING",
                "description": config["metricDescriptor"]["labels"][0]["description"],
            }
        ],
    }
    bounds = config["bucketOptions"]["explicitBuckets"]["bounds"]
    assert bounds == sorted(set(bounds)) and 30 in bounds and 90 in bounds


def test_the_sweep_outcome_counter_sees_every_sweep_and_its_status(written: dict[str, list[dict[str, Any]]]) -> None:
    found = selected(written, "sweeps")
    assert set(found) == SWEEPS
    assert all(len(entries) == 1 and labels("sweeps", entries[0]) == {"status": "ok"} for entries in found.values())


def test_the_sweep_stopped_policy_waits_twice_the_hourly_schedule_for_an_ok_sweep(
    written: dict[str, list[dict[str, Any]]],
) -> None:
    policy = next(p for p in monitoring.policies(SETTINGS) if p.key == "sweep-stopped")
    assert SETTINGS.rotation_schedule == "17 * * * *" and policy.enabled
    (condition,) = policy.config(SETTINGS)["conditions"]
    absent = condition["conditionAbsent"]
    assert absent["duration"] == "7200s"
    assert absent["filter"] == (
        'metric.type="logging.googleapis.com/user/dataloop-gar-sweeps" AND resource.type="cloud_run_revision" '
        'AND metric.label.status="ok"'
    )
    (aggregation,) = absent["aggregations"]
    assert aggregation["crossSeriesReducer"] == "REDUCE_SUM" and aggregation["groupByFields"] == []
    assert absent["trigger"] == {"count": 1}
    status = re.search(r'metric\.label\.status="([^"]+)"', absent["filter"])[1]  # type: ignore[index]
    assert {labels("sweeps", e[0])["status"] for e in selected(written, "sweeps").values()} == {status}
    text = policy.documentation
    assert "What to do:" in text and SETTINGS.scheduler_job in text and "gcloud scheduler jobs run" in text


@pytest.mark.parametrize(
    ("schedule", "time_zone", "duration", "enabled"),
    [
        ("*/5 * * * *", "Etc/UTC", 3600, True),  # our floor of an hour
        ("0 */6 * * *", "Etc/UTC", 12 * 3600, True),
        ("0 */6 * * *", "Europe/Amsterdam", 14 * 3600, True),  # a DST change makes one wait an hour longer
        ("0 */12 * * *", "Etc/UTC", 84600, True),  # twice is over the maximum; one missed sweep still shows
        ("0 3 * * *", "Etc/UTC", 84600, False),  # daily: every normal wait is longer than the maximum
        ("*/30 1-5 * * MON-FRI", "Europe/Amsterdam", 84600, False),  # skips days
        ("0 * 32 * *", "Etc/UTC", 84600, False),  # unreadable
    ],
)
def test_the_absence_duration_follows_the_schedule_within_the_documented_bounds(
    schedule: str, time_zone: str, duration: int, enabled: bool
) -> None:
    settings = DeploySettings(project="proj-123", region="us-central1", rotation_schedule=schedule, time_zone=time_zone)
    policy = next(p for p in monitoring.policies(settings) if p.key == "sweep-stopped")
    body = policy.config(settings)
    seconds = int(body["conditions"][0]["conditionAbsent"]["duration"].removesuffix("s"))
    assert seconds == duration and 120 <= seconds <= 84600 and seconds % 60 == 0
    assert body["enabled"] is enabled is policy.enabled
    assert ("This policy is disabled" in body["documentation"]["content"]) is not enabled


@pytest.mark.parametrize(
    ("schedule", "gap_minutes"),
    [
        ("17 * * * *", 60),
        ("0,50 * * * *", 50),  # 0 → 50, then 50 → the next hour's 0
        ("0 8,20 * * *", 12 * 60),
        ("0 0-23/5 * * *", 5 * 60),  # 20:00 → 00:00 is four hours, the others five
        ("0 * * JAN-DEC SUN-SAT", 60),  # names, every month and every weekday
        ("0 * 1 * 0-7", 60),  # day of month OR every weekday (7 is Sunday too): every day
        ("0 * */2 * *", None),  # every other day
        ("0 * 1 * SAT", None),  # the 1st OR Saturdays: not every day
        ("0 * * * 1-5", None),
        ("0 24 * * *", None),  # out of range: unreadable
        ("0 * * *", None),
    ],
)
def test_the_longest_gap_of_a_schedule_is_read_as_cloud_scheduler_reads_it(
    schedule: str, gap_minutes: int | None
) -> None:
    gap = cron.longest_gap(schedule, "Etc/UTC")
    assert gap == (None if gap_minutes is None else timedelta(minutes=gap_minutes))
    if gap is not None:
        assert cron.longest_gap(schedule, "Europe/Amsterdam") == gap + timedelta(hours=1)


def test_a_daily_schedule_makes_the_sweep_alert_disabled_and_the_dry_run_says_why(tmp_path: Path) -> None:
    config = tmp_path / "daily.toml"
    text = EXAMPLE.read_text()
    assert 'schedule = "17 * * * *"' in text
    config.write_text(text.replace('schedule = "17 * * * *"', 'schedule = "17 3 * * *"'))
    out = io.StringIO()
    assert main(["--config", str(config), "--dry-run"], out=out) == 0
    lines = [line for line in out.getvalue().splitlines() if line.startswith("# [") and "alert policy" in line]
    disabled = [line for line in lines if "DISABLED" in line]
    assert len(lines) == 5 and len(disabled) == 1
    assert "the rotation sweep stopped running" in disabled[0] and "waits up to 24 h between sweeps" in disabled[0]


def test_requests_are_counted_by_status_code_and_action(written: dict[str, list[dict[str, Any]]]) -> None:
    found = selected(written, "requests")
    assert set(found) == {"request status failed", "request malformed"}
    assert labels("requests", found["request status failed"][0]) == {
        "status": "failed",
        "code": "integration-not-found",
        "action": "status",
    }
    assert labels("requests", found["request malformed"][0])["status"] == "rejected"


def test_a_line_of_another_function_is_not_counted(written: dict[str, list[dict[str, Any]]]) -> None:
    """The same outcome from another service (a second deployment's prefix, say) is not ours."""
    entry = json.loads(json.dumps(written["verdict credentials-refused"][-1]))
    entry["resource"]["labels"]["service_name"] = "other-on-push"
    assert not Query(monitoring.metric(SETTINGS, "verdicts").filter).matches(entry)


def test_no_filter_goes_through_a_list(written: dict[str, list[dict[str, Any]]]) -> None:
    entries = [e for lines in written.values() for e in lines]
    for metric in monitoring.metrics(SETTINGS):
        for token in Query(metric.filter).tokens:
            if token["cmp"]:
                assert not any(through_list(e, token["cmp"]) for e in entries), (metric.key, token["cmp"])


def through_list(node: Any, path: str) -> bool:
    head, _, rest = path.partition(".")
    if isinstance(node, list):
        return True
    if not isinstance(node, dict) or head not in node:
        return False
    return isinstance(node[head], list) or (bool(rest) and through_list(node[head], rest))


def test_the_evaluator_is_strict_about_what_it_understands() -> None:
    entry = {"jsonPayload": {"a": {"b": [{"c": "x"}, {"c": "y"}]}, "n": 3}}
    assert Query('jsonPayload.a.b.c="y"').matches(entry)
    assert Query('jsonPayload.a.b.c:"X" AND jsonPayload.n="3"').matches(entry)
    assert not Query('jsonPayload.a.b.c="z" OR (jsonPayload.n:* AND jsonPayload.m:*)').matches(entry)
    with pytest.raises(AssertionError):
        Query("NOT jsonPayload.n>2")


# -- deploy and teardown ----------------------------------------------------------------------------


def with_channels(tmp_path: Path) -> Path:
    config = tmp_path / "alerts.toml"
    text = EXAMPLE.read_text()
    for line in ("notification_emails = []", "notification_channels = []"):
        assert line in text
    text = text.replace("notification_emails = []", 'notification_emails = ["oncall@example.com"]')
    config.write_text(text.replace("notification_channels = []", 'notification_channels = ["42"]'))
    return config


def run(cloud: FakeCloud, config: Path, tmp_path: Path, *args: str) -> str:
    out = io.StringIO()
    code = main([*args, "--config", str(config), "--stage-dir", str(tmp_path / "staged")], run=cloud, out=out)
    assert code == 0, out.getvalue()
    return out.getvalue()


def test_deploy_makes_the_monitoring_once_and_teardown_removes_it(tmp_path: Path) -> None:
    config = with_channels(tmp_path)
    settings = load(config)
    cloud = FakeCloud("my-gcp-project", "us-central1", repositories={"my-gcp-project/us-central1/images"})
    someone_elses = "projects/my-gcp-project/notificationChannels/7"
    existing = "projects/my-gcp-project/notificationChannels/42"
    cloud.monitoring["notificationChannels"] = {
        someone_elses: {"displayName": "ops", "type": "email", "labels": {"email_address": "oncall@example.com"}},
        existing: {"displayName": "pager", "type": "pagerduty", "labels": {}},
    }
    run(cloud, config, tmp_path)
    assert set(cloud.metrics) == {m.name(settings) for m in monitoring.metrics(settings)}
    assert cloud.metrics["dataloop-gar-verdicts"] == monitoring.metric(settings, "verdicts").config()
    policies = cloud.monitoring["alertPolicies"]
    assert sorted(cast(str, p["displayName"]) for p in policies.values()) == sorted(
        p.display_name(settings) for p in monitoring.policies(settings)
    )
    ours = [n for n in cloud.monitoring["notificationChannels"] if n not in (someone_elses, existing)]
    assert len(ours) == 1
    for policy in policies.values():
        assert policy["channels"] == ["projects/my-gcp-project/notificationChannels/42", ours[0]]
    (board,) = cloud.monitoring["dashboards"].values()
    assert board["displayName"] == monitoring.dashboard_name(settings)
    first, calls = cloud.state(), len(cloud.calls)

    run(cloud, config, tmp_path)
    again = cloud.calls[calls:]
    assert cloud.state() == first
    assert not [c for c in again if "create" in c and c[:2] != ("beta", "services") and c[0] != "functions"]
    assert sum(c[:4] == ("alpha", "monitoring", "policies", "update") for c in again) == len(policies) == 5
    assert sum(c[:3] == ("monitoring", "dashboards", "update") for c in again) == 1

    run(cloud, config, tmp_path, "teardown")
    assert cloud.metrics == {}
    assert cloud.monitoring["alertPolicies"] == {} and cloud.monitoring["dashboards"] == {}
    assert list(cloud.monitoring["notificationChannels"]) == [someone_elses, existing]  # not ours: left


def test_a_missing_channel_stops_the_deploy_before_anything_changes(tmp_path: Path) -> None:
    cloud = FakeCloud("my-gcp-project", "us-central1", repositories={"my-gcp-project/us-central1/images"})
    out = io.StringIO()
    config = with_channels(tmp_path)
    assert main(["--config", str(config), "--stage-dir", str(tmp_path / "staged")], run=cloud, out=out) == 1
    assert cloud.calls == [
        (
            "beta",
            "monitoring",
            "channels",
            "describe",
            "projects/my-gcp-project/notificationChannels/42",
            "--format=value(name)",
        )
    ]


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (
            {"notification_emails": ["not-an-address"]},
            "monitoring.notification_emails: 'not-an-address' does not match",
        ),
        (
            {"notification_channels": ["projects/p/channels/1"]},
            "monitoring.notification_channels: 'projects/p/channels/1'",
        ),
        ({"notification_email": []}, "monitoring.notification_email: unknown setting"),
    ],
)
def test_bad_monitoring_settings_are_refused(table: dict[str, Any], problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse({"project": "proj-123", "region": "us-central1", "monitoring": table})
    assert len(caught.value.problems) == 1 and caught.value.problems[0].startswith(problem), caught.value.problems


def test_without_channels_the_policies_exist_and_the_dry_run_says_nobody_is_notified() -> None:
    out = io.StringIO()
    assert main(["--config", str(EXAMPLE), "--dry-run"], out=out) == 0
    text = out.getvalue()
    policy_lines = [line for line in text.splitlines() if line.startswith("# [") and "alert policy" in line]
    assert len(policy_lines) == len(monitoring.policies(SETTINGS)) == 5
    assert all("notifies nobody" in line for line in policy_lines)
    assert not any("DISABLED" in line for line in policy_lines)  # an hourly sweep can be watched
    assert "--notification-channels" not in text


def test_each_policy_says_what_happened_and_what_to_do() -> None:
    for policy in monitoring.policies(SETTINGS):
        body = policy.config(SETTINGS)
        assert "What to do:" in body["documentation"]["content"]
        assert body["userLabels"] == {"deployed-by": "dataloop-gar"}
        assert body["enabled"] is True
        for condition in body["conditions"]:
            (kind,) = set(condition) - {"displayName"}
            if kind == "conditionThreshold":
                assert condition[kind]["thresholdValue"] == 0
            else:
                assert (kind, policy.key) == ("conditionAbsent", "sweep-stopped")


def test_the_dashboard_charts_every_metric_and_the_dead_letters() -> None:
    board = monitoring.dashboard(SETTINGS)
    text = json.dumps(board)
    assert "${" not in text
    for metric in monitoring.metrics(SETTINGS):
        assert metric.metric_type(SETTINGS) in text
    assert "num_undelivered_messages" in text and SETTINGS.dead_letter_subscription in text
    titles = [tile["widget"]["title"] for tile in board["mosaicLayout"]["tiles"]]
    assert any("by status" in t for t in titles) and any("by integration" in t for t in titles)


def test_another_prefix_names_other_metrics_and_services() -> None:
    other = DeploySettings(project="proj-123", region="us-central1", prefix="dlgar")
    verdicts = monitoring.metric(other, "verdicts")
    assert verdicts.name(other) == "dlgar-verdicts"
    assert 'resource.labels.service_name="dlgar-on-push"' in verdicts.filter


MESSAGE_DRIVER = Path(__file__).with_name("gcloud_message_driver.py")
#: Which API message each file is (docs/external-apis.md §9.3).
MESSAGES = {
    "metric": ("logging", "v2", "LogMetric"),
    "policy": ("monitoring", "v3", "AlertPolicy"),
    "dashboard": ("monitoring", "v1", "Dashboard"),
}


@pytest.mark.timeout(120)
def test_every_config_file_is_a_message_gcloud_knows_field_by_field(tmp_path: Path) -> None:
    """The parse check stops at credentials, before gcloud reads a file's fields: decode them here,
    with the message classes gcloud would send, so a misspelt field or enum fails now."""
    install = gcloud_cli.installation(tmp_path / "gcloud-config")
    paths = monitoring.write(load(with_channels(tmp_path)), tmp_path / "monitoring")
    requests = [[*MESSAGES[path.stem.split("-")[0]], str(path)] for path in paths]
    result = subprocess.run(
        [install.python, str(MESSAGE_DRIVER), install.sdk_root],
        input=json.dumps(requests),
        capture_output=True,
        text=True,
        env=gcloud_cli.offline_env(tmp_path / "gcloud-config"),
        timeout=100,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    verdicts = json.loads(result.stdout)
    assert len(verdicts) == len(paths) == len(monitoring.metrics(SETTINGS)) + len(monitoring.policies(SETTINGS)) + 1
    assert {Path(v["path"]).name: v["problems"] for v in verdicts} == {path.name: [] for path in paths}
