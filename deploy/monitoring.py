"""Alerts and a dashboard over what the functions log: log-based metrics, alert policies, one dashboard.

Every function ends an event in one structured line whose ``jsonPayload.outcome`` is the
result message (``shared.model.results.Outcome.to_message``), so the metrics are filters on
that object (all but one, below): a field the functions stop writing is a test failure in
tests/deploy/test_monitoring.py, which runs these filters on lines the code really writes.
The configs are data built from the settings alone (like the plan); deploy writes them as
files because ``--config-from-file`` and ``--policy-from-file`` read files
(docs/external-apis.md §9.4).

One metric reads another line. A distribution takes one number per entry (docs/external-apis.md
§9.1) and the sweep's result names only the oldest key, so the sweep logs each key's age on a
line of its own: ``key-age`` is a distribution of ``jsonPayload.key_age.age_days`` labelled by
integration, one value per key per sweep.

A sweep that stops running logs nothing at all, which no threshold on its lines can see: the
``sweep-stopped`` policy is a metric-absence condition on the ``sweeps`` counter, waiting
twice the schedule's longest gap between sweeps (docs/external-apis.md §9.6 for the bounds).
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from deploy.cron import longest_gap
from deploy.settings import DEPLOYED_BY_LABEL, DeploySettings

DASHBOARD_TEMPLATE = Path(__file__).with_name("dashboard.json")
#: Gen2 functions run as Cloud Run services; their stdout lines are entries of this resource.
RESOURCE = "cloud_run_revision"
#: An integration name starts every clause of a reference-test reason ("team-a: …").
INTEGRATION_IN_REASON = r"^([a-z0-9][a-z0-9-]*[a-z0-9]): "
#: How a rotation's reason says its pending key was undone (shared/workflows/rotation/rollback.py). Its
#: steps say it too, but how a comparison treats a repeated field is not documented (docs/external-apis.md
#: §9.1); ``:`` on a string is.
ROLLED_BACK = "rolled back version"
#: How the sweep's reason says it found a key already expired (shared/workflows/sweep.py); its
#: ``key_expired`` list says it too, but is a repeated field (as above).
EXPIRED = "with a key that has EXPIRED"
#: Alignment of every alert condition: an outcome is counted within five minutes.
ALIGNMENT = "300s"
#: Buckets of distributions of counts (integrations due per sweep).
COUNT_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500)
#: Buckets of key age, in days: the default period (30) and 90 (the age a key should never pass,
#: docs/external-apis.md §3.7) are bounds, so a percentile above them is above them, not an
#: interpolation across them (§9.1).
AGE_BUCKETS = (1, 7, 14, 30, 45, 60, 90, 180, 365)
#: A metric-absence condition waits at least this long (docs/external-apis.md §9.6)...
ABSENCE_MIN = timedelta(seconds=120)
#: ...and at most this: the smallest maximum the documentation has given (23.5 hours).
ABSENCE_MAX = timedelta(hours=23, minutes=30)
#: Our own floor: a log-based metric's point may arrive up to 10 minutes after its line, and a
#: sweep that failed once is redelivered; an hour covers both for any schedule.
SWEEP_ABSENCE_FLOOR = timedelta(hours=1)
#: How late a sweep's point may be in Monitoring (docs/external-apis.md §9.1): the absence must
#: wait at least the longest gap plus this.
METRIC_DELAY = timedelta(minutes=10)


@dataclass(frozen=True)
class Metric:
    """One log-based metric: a counter, or a distribution of one number per line."""

    key: str
    description: str
    filter: str
    labels: dict[str, tuple[str, str]] = field(default_factory=dict)  # label -> (extractor, description)
    value_extractor: str | None = None
    unit: str = "1"
    buckets: tuple[float, ...] = COUNT_BUCKETS

    def name(self, settings: DeploySettings) -> str:
        return f"{settings.prefix}-{self.key}"

    def metric_type(self, settings: DeploySettings) -> str:
        return f"logging.googleapis.com/user/{self.name(settings)}"

    def config(self) -> dict[str, Any]:
        """The LogMetric body ``gcloud logging metrics create/update --config-from-file`` takes."""
        descriptor: dict[str, Any] = {
            "metricKind": "DELTA",
            "valueType": "DISTRIBUTION" if self.value_extractor else "INT64",
            "unit": self.unit,
            "labels": [
                {"key": key, "valueType": "STRING", "description": why} for key, (_, why) in self.labels.items()
            ],
        }
        body: dict[str, Any] = {"description": self.description, "filter": self.filter, "metricDescriptor": descriptor}
        if self.labels:
            body["labelExtractors"] = {key: extractor for key, (extractor, _) in self.labels.items()}
        if self.value_extractor:
            body["valueExtractor"] = self.value_extractor
            body["bucketOptions"] = {"explicitBuckets": {"bounds": list(self.buckets)}}
        return body


def _services(settings: DeploySettings, *keys: str) -> str:
    names = [f'resource.labels.service_name="{settings.function_name(key)}"' for key in keys]
    return names[0] if len(names) == 1 else "(" + " OR ".join(names) + ")"


def _outcome_filter(settings: DeploySettings, kind: str, *keys: str, extra: str = "") -> str:
    clauses = [f'resource.type="{RESOURCE}"', _services(settings, *keys), f'jsonPayload.outcome.kind="{kind}"']
    if extra:
        clauses.append(extra)
    return " AND ".join(clauses)


STATUS = ("EXTRACT(jsonPayload.outcome.status)", "passed, failed, rejected, skipped, ignored, uncovered, ok")
CODE = ("EXTRACT(jsonPayload.outcome.code)", "the failure's code (README), empty when none")


def metrics(settings: DeploySettings) -> list[Metric]:
    """Every log-based metric, in the order deploy creates them."""
    s = settings
    return [
        Metric(
            "verdicts",
            "Reference-test outcomes of on_push, one per tested push",
            _outcome_filter(s, "reference-test", "on_push"),
            {
                "status": STATUS,
                "code": CODE,
                "integration": (
                    f'REGEXP_EXTRACT(jsonPayload.outcome.reason, "{INTEGRATION_IN_REASON}")',
                    "the (first) integration the verdict is about; empty when none covers the image",
                ),
            },
        ),
        Metric(
            "rotations",
            "Key-rotation outcomes (scheduled, SECRET_ROTATE, or requested)",
            _outcome_filter(s, "rotation", "rotate", "requests"),
            {
                "status": STATUS,
                "code": CODE,
                "integration": ("EXTRACT(jsonPayload.outcome.subject.integration)", "the integration rotated"),
            },
        ),
        Metric(
            "rotation-rollbacks",
            "Rotations whose new key was rolled back (the rotation failed; the old key stays)",
            _outcome_filter(s, "rotation", "rotate", "requests", extra=f'jsonPayload.outcome.reason:"{ROLLED_BACK}"'),
            {"integration": ("EXTRACT(jsonPayload.outcome.subject.integration)", "the integration rotated")},
        ),
        Metric(
            "requests",
            "Outcomes of provision, deprovision, rotate, test and status requests",
            _outcome_filter(s, "request", "requests"),
            {
                "status": STATUS,
                "code": CODE,
                "action": ("EXTRACT(jsonPayload.outcome.subject.action)", "the request's action"),
            },
        ),
        Metric(
            "sweep-due",
            "Integrations due for rotation per sweep (one value per sweep)",
            _outcome_filter(s, "rotation-sweep", "rotate"),
            value_extractor="EXTRACT(jsonPayload.outcome.details.due_count)",
        ),
        Metric(
            "sweeps",
            "Sweep outcomes by status (the sweep-stopped alert waits for one that is ok)",
            _outcome_filter(s, "rotation-sweep", "rotate"),
            {"status": STATUS},
        ),
        Metric(
            "key-age",
            "Age of each integration's current key, in days, once per sweep",
            " AND ".join([f'resource.type="{RESOURCE}"', _services(s, "rotate"), "jsonPayload.key_age.age_days:*"]),
            {
                "integration": (
                    "EXTRACT(jsonPayload.key_age.integration)",
                    "the integration's name, as in the other metrics",
                )
            },
            value_extractor="EXTRACT(jsonPayload.key_age.age_days)",
            unit="d",
            buckets=AGE_BUCKETS,
        ),
        Metric(
            "keys-expiring",
            "Sweeps that found a key expiring within the margin (its rotation is due because of it)",
            _outcome_filter(s, "rotation-sweep", "rotate", extra="jsonPayload.outcome.details.key_expiring:*"),
        ),
        Metric(
            "keys-expired",
            "Sweeps that found a key already expired: its rotation is overdue and Dataloop cannot pull",
            _outcome_filter(s, "rotation-sweep", "rotate", extra=f'jsonPayload.outcome.reason:"{EXPIRED}"'),
        ),
    ]


def metric(settings: DeploySettings, key: str) -> Metric:
    return next(m for m in metrics(settings) if m.key == key)


# -- alert policies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    key: str
    title: str
    documentation: str
    conditions: tuple[dict[str, Any], ...]
    #: Why the policy is created disabled (it would fire when nothing is wrong); None: enabled.
    disabled_because: str | None = None

    @property
    def enabled(self) -> bool:
        return self.disabled_because is None

    def display_name(self, settings: DeploySettings) -> str:
        return f"{settings.prefix}: {self.title}"

    def config(self, settings: DeploySettings) -> dict[str, Any]:
        """The AlertPolicy body; notification channels are given on the command line (their names are
        known only once deploy has found or created them)."""
        return {
            "displayName": self.display_name(settings),
            "documentation": {"content": self.documentation, "mimeType": "text/markdown"},
            "userLabels": {DEPLOYED_BY_LABEL[0]: DEPLOYED_BY_LABEL[1]},
            "combiner": "OR",
            "conditions": list(self.conditions),
            # Always written: an update replaces the policy, so one disabled by an earlier schedule
            # is enabled again by a schedule that allows it.
            "enabled": self.enabled,
            "alertStrategy": {"autoClose": "604800s"},
        }


def _count_above_zero(title: str, metric_filter: str) -> dict[str, Any]:
    return {
        "displayName": title,
        "conditionThreshold": {
            "filter": metric_filter,
            "comparison": "COMPARISON_GT",
            "thresholdValue": 0,
            "duration": "0s",
            "trigger": {"count": 1},
            "aggregations": [{"alignmentPeriod": ALIGNMENT, "perSeriesAligner": "ALIGN_SUM"}],
        },
    }


def _log_metric_filter(settings: DeploySettings, key: str, *labels: str) -> str:
    clauses = [f'metric.type="{metric(settings, key).metric_type(settings)}"', f'resource.type="{RESOURCE}"']
    return " AND ".join([*clauses, *labels])


@dataclass(frozen=True)
class SweepWatch:
    """How long the sweep-stopped alert waits, from the scheduler's schedule."""

    gap: timedelta | None  # the schedule's longest wait between sweeps; None: more than a day, or unreadable
    duration: timedelta
    disabled_because: str | None


def _seconds(duration: timedelta) -> str:
    return f"{int(duration.total_seconds())}s"


def _hours(duration: timedelta) -> str:
    hours, minutes = divmod(int(duration.total_seconds()) // 60, 60)
    return " ".join([*([f"{hours} h"] if hours else []), *([f"{minutes} min"] if minutes or not hours else [])])


def sweep_watch(settings: DeploySettings) -> SweepWatch:
    """Twice the longest gap between scheduled sweeps (one missed sweep is enough to notice, and a
    late one is not), at least an hour, at most what an absence condition may wait. When the
    schedule's own gaps do not fit under that maximum, the alert would fire between every two
    sweeps: the policy is then made disabled, saying why, rather than left out, so that deploy
    and teardown still manage one set of policies whatever the schedule."""
    gap = longest_gap(settings.rotation_schedule, settings.time_zone)
    if gap is None:
        why = (
            f"the schedule {settings.rotation_schedule!r} ({settings.time_zone}) does not sweep every day "
            "(or could not be read), so its sweeps can be further apart than the "
            f"{_hours(ABSENCE_MAX)} a metric-absence condition can wait"
        )
        return SweepWatch(None, ABSENCE_MAX, why)
    wanted = max(2 * gap, SWEEP_ABSENCE_FLOOR, ABSENCE_MIN)
    wanted = timedelta(minutes=-(-wanted.total_seconds() // 60))  # whole minutes, rounded up
    if wanted <= ABSENCE_MAX:
        return SweepWatch(gap, wanted, None)
    if gap + METRIC_DELAY <= ABSENCE_MAX:
        return SweepWatch(gap, ABSENCE_MAX, None)
    why = (
        f"the schedule {settings.rotation_schedule!r} ({settings.time_zone}) waits up to {_hours(gap)} between "
        f"sweeps, longer than the {_hours(ABSENCE_MAX)} a metric-absence condition can wait"
    )
    return SweepWatch(gap, ABSENCE_MAX, why)


def _sweep_stopped(settings: DeploySettings) -> Policy:
    s = settings
    watch = sweep_watch(s)
    job, region, project = s.scheduler_job, s.region, s.project
    expected = f"at most {_hours(watch.gap)} apart" if watch.gap else "not every day"
    disabled = (
        f"\n\nThis policy is disabled: {watch.disabled_because}. A schedule that sweeps every day, never more "
        f"than {_hours(ABSENCE_MAX - METRIC_DELAY)} apart, lets it work (change `[rotation] schedule` and deploy)."
        if watch.disabled_because
        else ""
    )
    return Policy(
        "sweep-stopped",
        "the rotation sweep stopped running",
        f"No sweep has ended `ok` for {_hours(watch.duration)}; the scheduler job `{job}` sweeps "
        f"`{s.rotation_schedule}` ({s.time_zone}), {expected}. Either the job did not publish "
        f'`{{"kind": "sweep"}}` on `{s.topics.rotation}` (paused, deleted, or refused), or the `rotate` function '
        f"(`{s.function_name('rotate')}`) did not run it or failed on it. Until a sweep runs, no integration "
        "is rotated when due: keys grow older than their period, and a key under an expiry policy expires.\n\n"
        f"What to do: check the job (`gcloud scheduler jobs describe {job} --location={region} "
        f"--project={project}`: its `state` must be `ENABLED`; `status` is its last attempt), then the "
        f"`rotate` function's errors around that time; once fixed, run a sweep now (`gcloud scheduler jobs run "
        f"{job} --location={region} --project={project}`) and read its `rotation-sweep` result. After a deploy "
        "the alert can fire only once a sweep has been counted (docs/external-apis.md §9.6)." + disabled,
        (
            {
                "displayName": f"no ok sweep for {_hours(watch.duration)}",
                "conditionAbsent": {
                    "filter": _log_metric_filter(s, "sweeps", 'metric.label.status="ok"'),
                    "duration": _seconds(watch.duration),
                    "trigger": {"count": 1},
                    # One series for the whole function: a deploy starts a new revision, whose
                    # series would otherwise leave the old one absent.
                    "aggregations": [
                        {
                            "alignmentPeriod": ALIGNMENT,
                            "perSeriesAligner": "ALIGN_SUM",
                            "crossSeriesReducer": "REDUCE_SUM",
                            "groupByFields": [],
                        }
                    ],
                },
            },
        ),
        watch.disabled_because,
    )


def policies(settings: DeploySettings) -> list[Policy]:
    s = settings
    dead_letter = s.dead_letter_subscription
    return [
        Policy(
            "pull-refused",
            "a pushed image cannot be pulled with the integration key",
            "A reference test of a pushed image failed with code `credentials-refused` (the registry answered "
            "401/403: key revoked, or no reader role) or `image-pull-failed` (the canary service reported "
            "`ErrImagePull` / `ImagePullBackOff`). Dataloop cannot pull that image with the integration's key.\n\n"
            "What to do: read the verdict (label `integration`; the `on_push` log line with "
            '`jsonPayload.outcome.kind="reference-test"` says which key and image), then send a `status` '
            "request for the integration; a revoked key or a missing `roles/artifactregistry.reader` on the "
            "repository is fixed by a `rotate` request or by re-sending `provision`.",
            (
                _count_above_zero(
                    "verdict credentials-refused",
                    _log_metric_filter(s, "verdicts", 'metric.label.code="credentials-refused"'),
                ),
                _count_above_zero(
                    "verdict image-pull-failed",
                    _log_metric_filter(s, "verdicts", 'metric.label.code="image-pull-failed"'),
                ),
            ),
        ),
        Policy(
            "rotation-failed",
            "a key rotation failed or was rolled back",
            "A key rotation ended `failed` (the reason says what to fix), or its pending key was rolled back "
            "(never accepted within `ROTATION_TEST_TIMEOUT_SECONDS`, or refused by Dataloop): the integration "
            "keeps its current key, which still works, but it was not replaced.\n\n"
            "What to do: read the `rotation` result (label `integration`; its `details.steps` says how far the "
            "run got), fix the cause, and send a `rotate` request; each step first checks whether it is already "
            "done, so a re-run repairs an interrupted one.",
            (
                _count_above_zero(
                    "rotation failed", _log_metric_filter(s, "rotations", 'metric.label.status="failed"')
                ),
                _count_above_zero("rotation rolled back", _log_metric_filter(s, "rotation-rollbacks")),
            ),
        ),
        Policy(
            "rotation-overdue",
            "a key rotation is overdue or a key expires within the margin",
            "The sweep found an integration whose key expires within the safety margin (`key_expiring`: its "
            "rotation is due because of the expiry) or has already expired (`key_expired`: the rotation is "
            "overdue and Dataloop cannot pull).\n\n"
            "What to do: look for a failed `rotation` result of those integrations (the sweep's result lists "
            "them), fix its cause, and send a `rotate` request; an expired key must be replaced before any pull "
            "works again.",
            (
                _count_above_zero("key expired (rotation overdue)", _log_metric_filter(s, "keys-expired")),
                _count_above_zero("key expires within the margin", _log_metric_filter(s, "keys-expiring")),
            ),
        ),
        Policy(
            "dead-letter",
            "events wait in the dead-letter subscription",
            f"An event reached `{s.topics.dead_letter}` after {s.max_delivery_attempts} delivery attempts: no "
            "function could handle it (a transient failure that never cleared, or a bug logged with its stack). "
            f"It is kept 7 days in `{dead_letter}`.\n\n"
            f"What to do: read the function's errors around that time, fix the cause, then pull the messages "
            f"from `{dead_letter}` (`gcloud pubsub subscriptions pull {dead_letter} --project={s.project}`) and "
            "publish them again on their topic, or acknowledge them.",
            (
                {
                    "displayName": "undelivered messages in the dead-letter subscription",
                    "conditionThreshold": {
                        "filter": 'metric.type="pubsub.googleapis.com/subscription/num_undelivered_messages" AND '
                        f'resource.type="pubsub_subscription" AND resource.label.subscription_id="{dead_letter}"',
                        "comparison": "COMPARISON_GT",
                        "thresholdValue": 0,
                        "duration": "0s",
                        "trigger": {"count": 1},
                        "aggregations": [{"alignmentPeriod": ALIGNMENT, "perSeriesAligner": "ALIGN_MAX"}],
                    },
                },
            ),
        ),
        _sweep_stopped(s),
    ]


# -- the dashboard ----------------------------------------------------------------------------------


def dashboard_name(settings: DeploySettings) -> str:
    return f"{settings.prefix}: verdicts, rotations, keys, dead letters"


def dashboard(settings: DeploySettings) -> dict[str, Any]:
    """deploy/dashboard.json with this deployment's metric types, subscription and title filled in."""
    values = {m.key.replace("-", "_"): m.metric_type(settings) for m in metrics(settings)}
    values.update(display_name=dashboard_name(settings), dead_letter_subscription=settings.dead_letter_subscription)
    text = string.Template(DASHBOARD_TEMPLATE.read_text(encoding="utf-8")).substitute(values)
    body: dict[str, Any] = json.loads(text)
    body["labels"] = {DEPLOYED_BY_LABEL[0]: DEPLOYED_BY_LABEL[1]}
    return body


# -- files ------------------------------------------------------------------------------------------


def files(settings: DeploySettings) -> dict[str, dict[str, Any]]:
    """Every config deploy passes to gcloud, by file name."""
    configs = {f"metric-{m.key}.json": m.config() for m in metrics(settings)}
    configs.update({f"policy-{p.key}.json": p.config(settings) for p in policies(settings)})
    configs["dashboard.json"] = dashboard(settings)
    return configs


def write(settings: DeploySettings, directory: Path) -> list[Path]:
    """Write the configs where the plan's commands read them; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, body in files(settings).items():
        path = directory / name
        path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written
