"""The dry run prints every command, runs none, and gcloud accepts every one of them.

The parse check feeds each printed command line to the installed gcloud (offline, empty
configuration, no credentials): a bad flag or value stops gcloud in its parser or its
validators, a good command gets as far as asking for credentials. Two settings files are
checked: the shipped example, and one that sets every option (so every branch of the plan
is printed: existing accounts, several projects and repositories, a build account, an
environment whose values hold commas, each form of concurrency and cpu).
"""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deploy import access, plan
from deploy.deploy import main
from deploy.settings import FUNCTIONS, DeploySettings, SettingsError, load, parse
from shared.model.policy import AccessPolicy
from tests.deploy import gcloud_cli

pytestmark = pytest.mark.timeout(120)

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "deploy" / "config.example.toml"
FULL = textwrap.dedent(
    """\
    project = "dlgar-full-test"
    region = "europe-west4"
    prefix = "dlgar"
    project_number = "987654321098"
    build_service_account = "builder@dlgar-full-test.iam.gserviceaccount.com"

    [dataloop]
    org_id = "org-1"
    base_url = "https://gate.example.test/api/v1"
    credentials_secret = "dataloop-bot"

    [topics]
    gcr = "gcr"
    requests = "dlgar-requests"
    rotation = "dlgar-rotation"
    results = "dlgar-results"
    dead_letter = "dlgar-dead-letter"

    [rotation]
    schedule = "*/30 1-5 * * MON-FRI"
    time_zone = "Europe/Amsterdam"

    [delivery]
    max_delivery_attempts = 5

    [access]
    account_projects = ["dlgar-full-test", "dlgar-accounts"]
    service_accounts = [
        "puller-a@dlgar-full-test.iam.gserviceaccount.com",
        "puller-b@other-proj.iam.gserviceaccount.com",
        "*@shared-pullers.iam.gserviceaccount.com",
    ]
    dataloop_org_ids = ["org-1", "org-2"]
    requesters = ["group:platform-team@example.com", "serviceAccount:ci@dlgar-full-test.iam.gserviceaccount.com"]
    created_account_prefix = "dl-pull-"
    canary_services = ["64f0c0ffee0000000000abcd"]
    repositories = ["europe-west4/images", "projects/registry-proj/locations/us/repositories/shared-images"]

    [functions.on_push]
    memory = "512Mi"
    timeout_seconds = 400
    max_instances = 3
    concurrency = 16
    cpu = "2"

    [functions.requests]
    memory = "1Gi"
    cpu = "500m"

    [functions.rotate]
    max_instances = 1
    concurrency = 2
    cpu = 1

    [monitoring]
    notification_emails = ["oncall@example.com", "platform-team@example.com"]
    notification_channels = ["projects/dlgar-full-test/notificationChannels/1234567890", "987654"]

    [env]
    LOG_LEVEL = "DEBUG"
    SKIP_TAG_PATTERNS = ["*.sig", "*.att", "sha256-*"]
    CANARY_TIMEOUT_SECONDS = 240
    DRY_RUN = false
    """
)
#: A command line of the dry run: ``gcloud …``, or a read in a comment, ``#   label: gcloud …``.
COMMAND_LINE = re.compile(r"^(?:#\s+[a-z_ ]+:\s+)?(?P<command>gcloud .*)$")


def dry_run(*args: str) -> str:
    out = io.StringIO()
    assert main([*args, "--dry-run"], out=out) == 0
    return out.getvalue()


def printed_commands(text: str) -> list[tuple[str, ...]]:
    commands = []
    for line in text.splitlines():
        match = COMMAND_LINE.match(line)
        if match:
            argv = shlex.split(match.group("command"))
            commands.append(tuple(argv[1:]))
    return commands


def planned_commands(steps: list[plan.Step], facts: dict[str, str]) -> list[tuple[str, ...]]:
    from deploy.runner import resolve

    return [resolve(argv, facts) for step in steps for argv in step.commands()]


def function_deploys(settings: DeploySettings) -> dict[str, tuple[str, ...]]:
    """Each function's ``gcloud functions deploy`` argv, by function key."""
    return {spec.key: plan.function_deploy(settings, spec, "build/functions") for spec in FUNCTIONS}


def flags_of(argv: tuple[str, ...]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)


def env_of(argv: tuple[str, ...]) -> dict[str, str]:
    """The variables of a deploy command's ``--set-env-vars`` (gcloud's ``^DELIM^`` escape too)."""
    value = flags_of(argv)["set-env-vars"]
    delimiter = ","
    if value.startswith("^"):
        delimiter, value = value[1], value[3:]
    return dict(pair.split("=", 1) for pair in value.split(delimiter))


@pytest.fixture(scope="module")
def full_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("settings") / "full.toml"
    path.write_text(FULL)
    return path


@pytest.fixture(scope="module")
def every_printed_command(full_config: Path, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, ...]]:
    """Every command of both settings files; the monitoring configs they read are written where they
    say, as deploy writes them (gcloud reads ``--config-from-file`` while it parses)."""
    staged = tmp_path_factory.mktemp("staged")
    for config in (EXAMPLE, full_config):
        assert main(["monitoring", "--config", str(config), "--stage-dir", str(staged / config.stem)]) == 0
    texts = [
        dry_run("--config", str(EXAMPLE), "--stage-dir", str(staged / EXAMPLE.stem)),
        dry_run("teardown", "--config", str(EXAMPLE), "--stage-dir", str(staged / EXAMPLE.stem)),
        dry_run("--config", str(full_config), "--stage-dir", str(staged / full_config.stem)),
        dry_run("teardown", "--config", str(full_config), "--delete-credentials"),
    ]
    return list(dict.fromkeys(c for text in texts for c in printed_commands(text)))


@pytest.fixture(scope="module")
def gcloud_install(tmp_path_factory: pytest.TempPathFactory) -> gcloud_cli.Installation:
    return gcloud_cli.installation(tmp_path_factory.mktemp("gcloud-config"))


# -- what the dry run prints ------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["deploy", "teardown"])
def test_the_dry_run_prints_every_command_of_the_plan_in_order(action: str, full_config: Path) -> None:
    settings = load(full_config)
    staged = REPO_ROOT / "build" / "functions"
    steps = plan.deploy_steps(settings, source_root=str(staged), monitoring_dir=str(staged / "monitoring"))
    if action == "teardown":
        steps = plan.teardown_steps(settings)
    text = dry_run(action, "--config", str(full_config))
    assert printed_commands(text) == planned_commands(steps, plan.placeholders(settings))
    assert f"[{len(steps)}/{len(steps)}]" in text
    for step in steps:
        assert step.why in text


def test_the_dry_run_shows_lookups_and_their_placeholders() -> None:
    text = dry_run("--config", str(EXAMPLE))
    assert "#   lookup project_number: gcloud projects describe my-gcp-project" in text
    assert "service-PROJECT_NUMBER@gcp-sa-secretmanager.iam.gserviceaccount.com" in text
    assert "projects/my-gcp-project/subscriptions/SUBSCRIPTION_OF_ON_PUSH" in text
    assert "${" not in text  # every fact is resolved to a placeholder


def test_a_known_project_number_is_used_and_not_looked_up(full_config: Path) -> None:
    text = dry_run("--config", str(full_config))
    assert "lookup project_number" not in text
    assert 'resource.name.startsWith("projects/987654321098/secrets/dataloop-gar-")' in text
    assert "PROJECT_NUMBER" not in text


def test_the_deployment_is_what_the_issue_asks_for() -> None:
    commands = [" ".join(c) for c in printed_commands(dry_run("--config", str(EXAMPLE)))]
    deploys = [c for c in commands if c.startswith("functions deploy")]
    assert len(deploys) == 3
    for command in deploys:
        for flag in ("--gen2", "--runtime=python312", "--retry", "--memory=256Mi", "--ingress-settings=internal-only"):
            assert flag in command
        assert "--trigger-service-account=dataloop-gar-trigger@" in command
    by_name = {c.split()[2]: c for c in deploys}
    assert "--trigger-topic=gcr " in by_name["dataloop-gar-on-push"]
    assert "--entry-point=on_request" in by_name["dataloop-gar-requests"]
    assert "--timeout=540s" in by_name["dataloop-gar-rotate"]
    assert "--trigger-topic=dataloop-gar-rotation" in by_name["dataloop-gar-rotate"]
    for topic in ("gcr", "dataloop-gar-requests", "dataloop-gar-rotation", "dataloop-gar-results"):
        assert any(c.startswith(f"pubsub topics create {topic} ") for c in commands)
    assert any(c.startswith("pubsub topics create dataloop-gar-dead-letter") for c in commands)
    assert any(c.startswith("scheduler jobs create pubsub dataloop-gar-sweep") for c in commands)
    assert sum("--dead-letter-topic=" in c for c in commands) == 3
    # one service account per function, plus the triggers' identity
    assert sum(c.startswith("iam service-accounts create") for c in commands) == 4


def test_on_push_serves_eight_events_per_instance_on_one_vcpu_the_others_one() -> None:
    printed = [c for c in printed_commands(dry_run("--config", str(EXAMPLE))) if c[:2] == ("functions", "deploy")]
    by_name = {argv[2]: argv for argv in printed}
    on_push = by_name["dataloop-gar-on-push"]
    assert "--concurrency=8" in on_push and "--cpu=1" in on_push
    assert env_of(on_push)["THREADS"] == "8"  # functions-framework's gunicorn: 8 threads, not 4 per vCPU
    for name in ("dataloop-gar-requests", "dataloop-gar-rotate"):
        assert "--concurrency=1" in by_name[name]
        assert not any(a.startswith("--cpu") for a in by_name[name])
        assert "THREADS" not in env_of(by_name[name])
    # the same without any [functions] table, and for settings built without the file
    for settings in (
        parse({"project": "proj-123", "region": "us-central1"}),
        DeploySettings(project="proj-123", region="us-central1"),
    ):
        deploys = {key: flags_of(argv) for key, argv in function_deploys(settings).items()}
        assert [(d["concurrency"], d.get("cpu")) for d in deploys.values()] == [("8", "1"), ("1", None), ("1", None)]
        assert [settings.function_env(spec.key).get("THREADS") for spec in FUNCTIONS] == ["8", None, None]


def test_concurrency_and_cpu_can_be_set_per_function(full_config: Path) -> None:
    deploys = function_deploys(load(full_config))
    assert [(flags_of(a)["concurrency"], flags_of(a).get("cpu")) for a in deploys.values()] == [
        ("16", "2"),
        ("1", "500m"),
        ("2", "1"),  # cpu = 1 (a TOML integer) is taken as "1"
    ]
    assert [env_of(a).get("THREADS") for a in deploys.values()] == ["16", None, "2"]
    # on_push back to one event per instance: no cpu of its own and no THREADS unless asked for
    single = parse({"project": "proj-123", "region": "us-central1", "functions": {"on_push": {"concurrency": 1}}})
    on_push = function_deploys(single)["on_push"]
    assert "--concurrency=1" in on_push and not any(a.startswith("--cpu") for a in on_push)
    assert "THREADS" not in env_of(on_push)
    bigger = parse({"project": "proj-123", "region": "us-central1", "functions": {"on_push": {"cpu": "2.0"}}})
    assert {"--concurrency=8", "--cpu=2.0"} <= set(function_deploys(bigger)["on_push"])


def test_concurrency_above_one_needs_a_whole_vcpu_and_a_malformed_cpu_is_refused() -> None:
    base = {"project": "proj-123", "region": "us-central1"}
    functions = {
        "on_push": {"concurrency": 4, "cpu": "0.5"},
        "requests": {"cpu": "abc"},
        "rotate": {"concurrency": 0},
    }
    with pytest.raises(SettingsError) as caught:
        parse({**base, "functions": functions, "env": {"THREADS": 8}})
    assert caught.value.problems == [
        "functions.on_push.cpu: '0.5' vCPU is too little for functions.on_push.concurrency = 4: more than one "
        'event per instance needs 1 or more vCPUs (set cpu = "1" or more, or concurrency = 1)',
        'functions.requests.cpu: must be a number of vCPUs such as "1", "2", "0.5" or "500m" '
        "(or empty: derived from memory), got 'abc'",
        "functions.rotate.concurrency: must be a whole number from 1 to 1000, got 0",
        "env.THREADS: set by the deployment from the settings above; set it there",
    ]


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"cpu": ""}, "functions.on_push.cpu: empty (derived from memory) with functions.on_push.concurrency = 8"),
        ({"cpu": "500m"}, "functions.on_push.cpu: '500m' vCPU is too little for functions.on_push.concurrency = 8"),
        ({"concurrency": 1001}, "functions.on_push.concurrency: must be a whole number from 1 to 1000, got 1001"),
        ({"concurrency": "8"}, "functions.on_push.concurrency: must be a whole number from 1 to 1000, got '8'"),
        ({"cpu": "1.5"}, "functions.on_push.cpu: above 1 vCPU must be a whole number (such as 2 or 4), got '1.5'"),
        ({"cpu": "9"}, "functions.on_push.cpu: must be from 0.08 to 8 vCPUs, got '9'"),
        ({"concurrency": 1, "cpu": "0.05"}, "functions.on_push.cpu: must be from 0.08 to 8 vCPUs, got '0.05'"),
        ({"concurrency": 1, "cpu": "0.0805"}, "functions.on_push.cpu: below 1 vCPU goes in steps of 0.001"),
        ({"cpu": "1 "}, "functions.on_push.cpu: must be a number of vCPUs"),
        ({"cpu": "2 cpus"}, "functions.on_push.cpu: must be a number of vCPUs"),
        ({"cpu": True}, "functions.on_push.cpu: must be a number of vCPUs"),
        ({"cpu": ["1"]}, "functions.on_push.cpu: must be a number of vCPUs"),
    ],
)
def test_each_bad_concurrency_or_cpu_is_refused_naming_its_key(table: dict, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse({"project": "proj-123", "region": "us-central1", "functions": {"on_push": table}})
    assert len(caught.value.problems) == 1 and caught.value.problems[0].startswith(problem), caught.value.problems


@pytest.mark.parametrize(
    ("table", "flags"),
    [
        ({"concurrency": 1, "cpu": ""}, {"concurrency": "1"}),  # explicitly derived from memory
        ({"concurrency": 1, "cpu": ".5"}, {"concurrency": "1", "cpu": ".5"}),
        ({"concurrency": 1, "cpu": 0.25}, {"concurrency": "1", "cpu": "0.25"}),
        ({"concurrency": 1000, "cpu": "1000m"}, {"concurrency": "1000", "cpu": "1000m"}),
        ({"concurrency": 80, "cpu": "8"}, {"concurrency": "80", "cpu": "8"}),
    ],
)
def test_good_concurrency_and_cpu_values_reach_the_command(table: dict, flags: dict[str, str]) -> None:
    settings = parse({"project": "proj-123", "region": "us-central1", "functions": {"rotate": table}})
    emitted = flags_of(function_deploys(settings)["rotate"])
    assert {k: emitted[k] for k in ("concurrency", "cpu") if k in emitted} == flags


def test_the_dry_run_runs_nothing_and_stages_nothing(tmp_path: Path) -> None:
    """As a user runs it: a fake gcloud first on PATH would record any invocation."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "gcloud-was-called"
    fake = bin_dir / "gcloud"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {marker}\nexit 0\n')
    fake.chmod(0o755)
    stage_dir = tmp_path / "staged"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    for action in ("deploy", "teardown"):
        result = subprocess.run(
            [
                sys.executable,
                "deploy/deploy.py",
                action,
                "--config",
                str(EXAMPLE),
                "--dry-run",
                "--stage-dir",
                str(stage_dir),
            ],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "gcloud " in result.stdout
    assert not marker.exists()
    assert not stage_dir.exists()


# -- gcloud's own parser ----------------------------------------------------------------------------


def mutants_of(commands: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Emitted commands with one flag or value spoiled, each in a way gcloud must refuse."""
    deploy = next(c for c in commands if c[:2] == ("functions", "deploy"))
    update = next(c for c in commands if c[:3] == ("pubsub", "subscriptions", "update"))
    binding = next(c for c in commands if c[:2] == ("projects", "add-iam-policy-binding"))
    job = next(c for c in commands if c[:4] == ("scheduler", "jobs", "create", "pubsub"))
    assert any(a.startswith("--cpu=") for a in deploy)  # on_push's
    return [
        (*deploy, "--retries"),  # a flag that does not exist
        tuple("--trigger-topic=x" if a.startswith("--trigger-topic=") else a for a in deploy),  # invalid topic id
        tuple("--max-delivery-attempts=101" if a.startswith("--max-delivery-attempts") else a for a in update),
        tuple("--condition=expression=true" if a.startswith("--condition") else a for a in binding),  # no title
        tuple(a.replace("projects/my-gcp-project/topics/", "") if a.startswith("--topic=") else a for a in job),
        tuple("--concurrency=1001" if a.startswith("--concurrency=") else a for a in deploy),  # above gcloud's bound
        tuple(a for a in deploy if not a.startswith("--memory=")),  # --cpu is only valid with --memory
    ]


@pytest.fixture(scope="module")
def verdicts(
    every_printed_command: list[tuple[str, ...]], gcloud_install: gcloud_cli.Installation
) -> dict[tuple[str, ...], gcloud_cli.Verdict]:
    """gcloud's verdict on every printed command and on every mutant, in one pass."""
    commands = every_printed_command + mutants_of(every_printed_command)
    return {v.argv: v for v in gcloud_cli.run_many(gcloud_install, commands)}


def test_every_printed_command_is_accepted_by_the_installed_gcloud(
    every_printed_command: list[tuple[str, ...]], verdicts: dict[tuple[str, ...], gcloud_cli.Verdict]
) -> None:
    assert len(every_printed_command) > 100
    refused = [
        f"gcloud {shlex.join(v.argv)}\n    -> exit {v.exit}: {v.output.strip()[:400]}"
        for v in (verdicts[argv] for argv in every_printed_command)
        if not v.parsed
    ]
    assert not refused, "gcloud refuses these commands:\n" + "\n".join(refused)


def test_the_parse_check_catches_bad_flags_and_values(
    every_printed_command: list[tuple[str, ...]], verdicts: dict[tuple[str, ...], gcloud_cli.Verdict]
) -> None:
    """The check above could fail: mutations of emitted commands are refused."""
    mutants = [verdicts[argv] for argv in mutants_of(every_printed_command)]
    assert [v.parsed for v in mutants] == [False] * len(mutants), [v.output[:200] for v in mutants]
    assert mutants[0].exit == 2 and "unrecognized arguments: --retries" in mutants[0].output
    assert "argument --concurrency: Value must be less than or equal to 1000" in mutants[5].output
    assert "argument --cpu: --memory must be specified" in mutants[6].output


def test_the_fast_check_agrees_with_the_gcloud_executable(
    every_printed_command: list[tuple[str, ...]],
    verdicts: dict[tuple[str, ...], gcloud_cli.Verdict],
    gcloud_install: gcloud_cli.Installation,
    tmp_path: Path,
) -> None:
    """Calibration: the in-process driver answers as the ``gcloud`` command does."""
    good = next(c for c in every_printed_command if c[:2] == ("functions", "deploy"))
    bad = mutants_of(every_printed_command)[0]
    slow = [gcloud_cli.run_one(gcloud_install, argv, tmp_path) for argv in (good, bad)]
    fast = [verdicts[good], verdicts[bad]]
    assert [(v.exit, v.parsed) for v in fast] == [(v.exit, v.parsed) for v in slow] == [(1, True), (2, False)]


# -- settings: checked whole, before anything runs --------------------------------------------------


def test_every_settings_problem_is_reported_at_once(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        textwrap.dedent(
            """\
            project = "X"
            region = "moon"
            colour = "blue"
            [dataloop]
            credentials_secret = "dataloop-gar-credentials"
            [topics]
            requests = "gcr"
            [rotation]
            schedule = "hourly"
            [delivery]
            max_delivery_attempts = 3
            [access]
            repositories = ["images"]
            [functions.on_push]
            memory = "lots"
            timeout_seconds = 900
            [env]
            GCP_PROJECT = "other"
            IAM_ENDPOINT = "127.0.0.1:1"
            COLOUR = "blue"
            """
        )
    )
    with pytest.raises(SettingsError) as caught:
        load(bad)
    text = str(caught.value)
    for fragment in (
        "project:",
        "region:",
        "colour: unknown setting",
        "credentials_secret: must not start with 'dataloop-gar-'",
        "topics: every topic must be different",
        "rotation.schedule",
        "max_delivery_attempts",
        "access.repositories",
        "functions.on_push.memory",
        "functions.on_push.timeout_seconds",
        "env.GCP_PROJECT: set by the deployment",
        "env.IAM_ENDPOINT: only for the local cloud",
        "env.COLOUR: not a variable the functions read",
    ):
        assert fragment in text
    assert len(caught.value.problems) == 13
    assert main(["--config", str(bad), "--dry-run"], out=io.StringIO()) == 2


def test_the_functions_own_checks_apply_to_the_environment() -> None:
    base = {"project": "proj-123", "region": "us-central1"}
    with pytest.raises(SettingsError, match=r"env: the functions would refuse this environment: LOG_LEVEL"):
        parse({**base, "env": {"LOG_LEVEL": "chatty"}})


def test_a_timeout_shorter_than_the_functions_bounded_wait_is_refused() -> None:
    base = {"project": "proj-123", "region": "us-central1"}
    with pytest.raises(SettingsError, match=r"functions.on_push.timeout_seconds: 300 s leaves no room for CANARY"):
        parse({**base, "functions": {"on_push": {"timeout_seconds": 300}}})
    with pytest.raises(SettingsError, match=r"functions.requests.timeout_seconds.*ROTATION_TEST_TIMEOUT_SECONDS"):
        parse({**base, "functions": {"requests": {"timeout_seconds": 300}}})
    shorter_wait = parse(
        {**base, "functions": {"on_push": {"timeout_seconds": 300}}, "env": {"CANARY_TIMEOUT_SECONDS": 200}}
    )
    assert shorter_wait.function("on_push").timeout_seconds == 300


def test_on_push_waits_for_another_pushs_canary_test_within_its_timeout_too() -> None:
    base = {"project": "proj-123", "region": "us-central1", "functions": {"on_push": {"timeout_seconds": 300}}}
    assert parse({**base, "env": {"CANARY_TIMEOUT_SECONDS": 200, "CANARY_LEASE_WAIT_SECONDS": 40}})
    with pytest.raises(SettingsError, match=r"CANARY_TIMEOUT_SECONDS \+ CANARY_LEASE_WAIT_SECONDS=260 s"):
        parse({**base, "env": {"CANARY_TIMEOUT_SECONDS": 200, "CANARY_LEASE_WAIT_SECONDS": 60}})


def test_account_projects_default_to_the_deployment_project_and_overrides_win(full_config: Path) -> None:
    assert parse({"project": "proj-123", "region": "us-central1"}).account_projects == ("proj-123",)
    assert (
        parse({"project": "proj-123", "region": "us-central1", "access": {"account_projects": []}}).account_projects
        == ()
    )
    settings = load(EXAMPLE, project="ci-project-1", region="asia-east1")
    assert settings.account_projects == ("ci-project-1",)
    assert [r.path for r in settings.repositories] == [
        "projects/ci-project-1/locations/us-central1/repositories/images"
    ]
    assert settings.region == "asia-east1"


def test_environment_values_with_commas_use_gcloud_escaping(full_config: Path) -> None:
    settings = load(full_config)
    for spec in FUNCTIONS:
        flag = plan.env_flag(settings.function_env(spec.key))
        assert flag.startswith("--set-env-vars=^|^")
        pairs = dict(item.split("=", 1) for item in flag.removeprefix("--set-env-vars=^|^").split("|"))
        assert pairs == settings.function_env(spec.key)
        assert pairs["SKIP_TAG_PATTERNS"] == "*.sig,*.att,sha256-*"
        assert pairs["DRY_RUN"] == "false"
    # THREADS is each function's own; everything else is the same for all three
    envs = [settings.function_env(spec.key) for spec in FUNCTIONS]
    assert [env.pop("THREADS", None) for env in envs] == ["16", None, "2"]
    assert envs[0] == envs[1] == envs[2]
    assert plan.env_flag({"A": "1", "B": "2"}) == "--set-env-vars=A=1,B=2"


def test_the_deployment_readme_shows_the_roles_the_code_grants() -> None:
    """deploy/README.md's table is the generated one, so the documentation cannot drift."""
    readme = (REPO_ROOT / "deploy" / "README.md").read_text()
    assert access.roles_table(load(EXAMPLE)) in readme


# -- the trust boundary ---------------------------------------------------------------------------


def test_the_dry_run_prints_who_may_publish_requests_and_the_policy_the_functions_get(full_config: Path) -> None:
    out = io.StringIO()
    assert main(["--config", str(full_config), "--dry-run"], out=out) == 0
    text = out.getvalue()
    commands = [m["command"] for line in text.splitlines() if (m := COMMAND_LINE.match(line))]
    publishers = [c for c in commands if c.startswith("gcloud pubsub topics add-iam-policy-binding dlgar-requests ")]
    assert sorted(flags_of(tuple(shlex.split(c)))["member"] for c in publishers) == [
        "group:platform-team@example.com",
        "serviceAccount:ci@dlgar-full-test.iam.gserviceaccount.com",
    ]
    assert all("--role=roles/pubsub.publisher" in c for c in publishers)
    assert "Who may publish requests on topic dlgar-requests" in text
    assert "  - group:platform-team@example.com" in text
    settings = load(full_config)
    assert '"created_account_prefix": "dl-pull-"' in text and '"org-2"' in text
    assert '"canary_services": [\n      "64f0c0ffee0000000000abcd"\n    ]' in text
    # the functions are given exactly the policy printed, and every function the same one
    for spec in FUNCTIONS:
        policy = AccessPolicy.from_json(settings.function_env(spec.key)["ACCESS_POLICY"])
        assert policy == settings.access_policy()
    policy = settings.access_policy()
    assert policy.org_ids == {"org-1", "org-2"}
    assert policy.repositories == {
        "projects/dlgar-full-test/locations/europe-west4/repositories/images",
        "projects/registry-proj/locations/us/repositories/shared-images",
    }
    assert policy.deployment_accounts == {
        *(f"dlgar-{k}@dlgar-full-test.iam.gserviceaccount.com" for k in ("on-push", "requests", "rotate", "trigger")),
        "builder@dlgar-full-test.iam.gserviceaccount.com",
    }


def test_without_requesters_nobody_is_granted_publishing_and_the_dry_run_says_so() -> None:
    out = io.StringIO()
    assert main(["--config", str(EXAMPLE), "--dry-run"], out=out) == 0
    assert "topics add-iam-policy-binding dataloop-gar-requests" not in out.getvalue()
    assert "nobody is granted it here" in out.getvalue()


def test_an_adoptable_project_pattern_gets_project_wide_key_administration_an_email_only_its_account(
    full_config: Path,
) -> None:
    grants = access.function_grants(load(full_config))["rotate"]
    key_admin = {(g.kind, g.resource) for g in grants if g.role == "roles/iam.serviceAccountKeyAdmin"}
    assert key_admin == {
        ("service-account", "puller-a@dlgar-full-test.iam.gserviceaccount.com"),
        ("service-account", "puller-b@other-proj.iam.gserviceaccount.com"),
        ("project", "dlgar-full-test"),
        ("project", "dlgar-accounts"),
        ("project", "shared-pullers"),
    }


@pytest.mark.parametrize(
    "access_table, problem",
    [
        ({"created_account_prefix": "dataloop-"}, "starts with access.created_account_prefix 'dataloop-'"),
        ({"created_account_prefix": "x"}, "access.created_account_prefix"),
        ({"requesters": ["allUsers"]}, "access.requesters: 'allUsers' does not match"),
        ({"requesters": ["allAuthenticatedUsers"]}, "access.requesters"),
        ({"service_accounts": ["*@*.iam.gserviceaccount.com"]}, "access.service_accounts"),
        ({"service_accounts": ["dataloop-gar-rotate@p-123456.iam.gserviceaccount.com"]}, "deployment's own"),
        ({"dataloop_org_ids": ["org 1"]}, "access.dataloop_org_ids"),
        ({"canary_services": ["svc/../x"]}, "access.canary_services"),
    ],
)
def test_access_settings_that_would_open_the_boundary_are_refused(access_table: dict, problem: str) -> None:
    with pytest.raises(SettingsError) as raised:
        parse({"project": "p-123456", "region": "us-central1", "access": access_table})
    assert any(problem in p for p in raised.value.problems), raised.value.problems


def test_a_repository_in_another_project_is_checked_first_and_wired_to_on_push(full_config: Path) -> None:
    text = dry_run("--config", str(full_config))
    commands = [" ".join(c) for c in printed_commands(text)]
    first_change = next(i for i, line in enumerate(text.splitlines()) if line.startswith("gcloud "))
    checks = [line for line in text.splitlines()[:first_change] if line.startswith("#   check: ")]
    channels = [line for line in checks if " monitoring channels describe " in line]  # tests/deploy/test_monitoring.py
    assert len(channels) == 2
    checks = [line for line in checks if line not in channels]
    assert checks == [
        "#   check: gcloud projects describe registry-proj '--format=value(projectId)'",
        "#   check: gcloud pubsub topics describe gcr --project=registry-proj '--format=value(name)'",
    ]
    assert "pubsub topics create gcr --labels=deployed-by=dataloop-gar --project=registry-proj" in commands
    (create,) = [c for c in commands if c.startswith("pubsub subscriptions create dlgar-on-push-registry-proj ")]
    assert "--topic=projects/registry-proj/topics/gcr" in create and "--push-endpoint=ON_PUSH_URL" in create
    assert "--push-auth-service-account=dlgar-trigger@dlgar-full-test.iam.gserviceaccount.com" in create
    assert "--project=dlgar-full-test" in create  # beside the function: internal traffic
    teardown = [" ".join(c) for c in printed_commands(dry_run("teardown", "--config", str(full_config)))]
    assert "pubsub subscriptions delete dlgar-on-push-registry-proj --project=dlgar-full-test --quiet" in teardown
    assert "pubsub topics delete gcr --project=registry-proj --quiet" in teardown
    # the example wires only its own project: nothing of this is printed for it
    assert "check:" not in dry_run("--config", str(EXAMPLE)) and "ON_PUSH_URL" not in dry_run("--config", str(EXAMPLE))
