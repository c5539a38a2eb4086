"""Running the plan: idempotent deploy, clean teardown, and the runner's judgement calls.

gcloud is replaced by tests/deploy/fake_cloud.py, which fails a ``create`` of anything that
exists (as gcloud does) — so a deploy that is not idempotent fails its second run here.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from deploy.deploy import main
from deploy.plan import Kind, Step
from deploy.runner import GcloudError, PlanRunner
from tests.deploy.fake_cloud import PROJECT_NUMBER, FakeCloud, error, not_found, ok

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "deploy" / "config.example.toml"
PROJECT = "my-gcp-project"
REGION = "us-central1"


@pytest.fixture
def cloud() -> FakeCloud:
    return FakeCloud(PROJECT, REGION, repositories={f"{PROJECT}/{REGION}/images"})


def deploy(cloud: FakeCloud, tmp_path: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main([*args, "--config", str(EXAMPLE), "--stage-dir", str(tmp_path / "staged")], run=cloud, out=out)
    return code, out.getvalue()


def changing(calls: list[tuple[str, ...]]) -> list[str]:
    """The calls that create something (the service-identity call is idempotent by design)."""
    return [" ".join(c[:4]) for c in calls if "create" in c and c[:2] != ("beta", "services")]


def test_deploy_creates_everything_once_and_a_second_run_changes_nothing(cloud: FakeCloud, tmp_path: Path) -> None:
    code, out = deploy(cloud, tmp_path)
    assert code == 0, out
    assert set(cloud.topics) == {
        "gcr",
        "dataloop-gar-requests",
        "dataloop-gar-rotation",
        "dataloop-gar-results",
        "dataloop-gar-dead-letter",
    }
    assert cloud.accounts == {
        f"dataloop-gar-{name}@{PROJECT}.iam.gserviceaccount.com"
        for name in ("on-push", "requests", "rotate", "trigger")
    }
    assert set(cloud.functions) == {"dataloop-gar-on-push", "dataloop-gar-requests", "dataloop-gar-rotate"}
    assert set(cloud.secrets) == {"dataloop-api-credentials"}
    assert cloud.jobs["dataloop-gar-sweep"]["message-body"] == '{"kind":"sweep"}'
    # the functions were staged before they were deployed, from the staged directories
    assert (tmp_path / "staged" / "on_push" / "main.py").is_file()
    assert cloud.functions["dataloop-gar-on-push"]["source"] == str(tmp_path / "staged" / "on_push")
    assert "Put the Dataloop API credentials in the secret dataloop-api-credentials" in out
    first = cloud.state()
    calls_before = len(cloud.calls)

    code, out = deploy(cloud, tmp_path)
    assert code == 0, out
    assert cloud.state() == first
    second = cloud.calls[calls_before:]
    assert changing(second) == []
    assert sum(c[:2] == ("functions", "deploy") for c in second) == 3  # code and settings are updated
    assert sum(c[:4] == ("scheduler", "jobs", "update", "pubsub") for c in second) == 1
    assert out.count("exists; left as it is") == 5 + 1 + 4 + 1  # topics, dead-letter sub, accounts, secret
    assert sum(c[:3] == ("iam", "roles", "update") for c in second) == 1  # the custom role is kept as the code needs


def env_vars(flag: str) -> dict[str, str]:
    """``--set-env-vars``'s value as gcloud reads it (its ``^DELIM^`` escape included)."""
    delimiter, value = (flag[1], flag[3:]) if flag.startswith("^") else (",", flag)
    return dict(pair.split("=", 1) for pair in value.split(delimiter))


def test_each_function_gets_its_concurrency_and_a_redeploy_restores_it(cloud: FakeCloud, tmp_path: Path) -> None:
    assert deploy(cloud, tmp_path)[0] == 0
    on_push, requests, rotate = (cloud.functions[f"dataloop-gar-{name}"] for name in ("on-push", "requests", "rotate"))
    assert (on_push["concurrency"], on_push["cpu"]) == ("8", "1")
    assert env_vars(on_push["set-env-vars"])["THREADS"] == "8"
    for function in (requests, rotate):
        assert function["concurrency"] == "1" and "cpu" not in function
        assert "THREADS" not in function["set-env-vars"]
    # someone changes them by hand in the console; the next deployment puts them back
    on_push["concurrency"], requests["concurrency"] = "80", "20"
    assert deploy(cloud, tmp_path)[0] == 0
    assert (on_push["concurrency"], requests["concurrency"], rotate["concurrency"]) == ("8", "1", "1")


def test_every_trigger_subscription_gets_the_dead_letter_policy(cloud: FakeCloud, tmp_path: Path) -> None:
    assert deploy(cloud, tmp_path)[0] == 0
    eventarc = {name: sub for name, sub in cloud.subscriptions.items() if name.startswith("eventarc-")}
    assert len(eventarc) == 3
    for name, sub in eventarc.items():
        assert sub["dead-letter-topic"] == f"projects/{PROJECT}/topics/dataloop-gar-dead-letter"
        assert sub["max-delivery-attempts"] == "10"
        assert sub["ack-deadline"] == "600"
        agent = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
        assert (f"subscription/{name}", agent, "roles/pubsub.subscriber") in {
            (b.resource, b.member, b.role) for b in cloud.bindings
        }


def test_each_function_account_gets_only_its_roles(cloud: FakeCloud, tmp_path: Path) -> None:
    assert deploy(cloud, tmp_path)[0] == 0

    def roles(account: str) -> set[tuple[str, str]]:
        return {(b.resource, b.role) for b in cloud.bindings_of(f"{account}@")}

    project = f"project/{PROJECT}"
    lock_role = f"projects/{PROJECT}/roles/dataloop_gar_canary_lock"
    assert roles("dataloop-gar-on-push") == {
        (project, "roles/secretmanager.secretAccessor"),
        (project, "roles/secretmanager.viewer"),
        (project, lock_role),
        ("secret/dataloop-api-credentials", "roles/secretmanager.secretAccessor"),
        ("topic/dataloop-gar-results", "roles/pubsub.publisher"),
    }
    # the canary lock role: exactly read and update, and only on the lock secrets (which provisioning
    # creates) and on the managed secrets (a changed push verdict), one name condition each
    assert cloud.roles["dataloop_gar_canary_lock"]["permissions"] == (
        "secretmanager.secrets.get,secretmanager.secrets.update"
    )
    lock_bindings = [b for b in cloud.bindings_of("dataloop-gar-on-push@") if b.role == lock_role]
    prefixes = sorted(c.split('startsWith("', 1)[1].split('"', 1)[0] for c in (b.condition for b in lock_bindings))
    assert prefixes == [
        f"projects/{PROJECT_NUMBER}/secrets/dataloop-gar-",
        f"projects/{PROJECT_NUMBER}/secrets/dataloop-gar_canary-",
    ]
    assert all(c.count("startsWith") == 1 and "resource.type" not in c for c in (b.condition for b in lock_bindings))
    assert not any(b.role == lock_role for b in cloud.bindings if "on-push" not in b.member)
    assert (f"repository/{PROJECT}/{REGION}/images", "roles/artifactregistry.admin") in roles("dataloop-gar-requests")
    assert (project, "roles/iam.serviceAccountCreator") in roles("dataloop-gar-requests")
    assert not any("serviceAccountCreator" in role for _, role in roles("dataloop-gar-rotate"))
    assert ("topic/dataloop-gar-rotation", "roles/pubsub.publisher") in roles("dataloop-gar-rotate")
    assert roles("dataloop-gar-trigger") == {
        (f"function/dataloop-gar-{name}", "roles/run.invoker") for name in ("on-push", "requests", "rotate")
    }
    # every Secret Manager role on the project is narrowed by a condition, with the real number
    for binding in cloud.bindings:
        if binding.resource == project and binding.role.startswith("roles/secretmanager."):
            assert binding.condition.startswith("expression=") and "${" not in binding.condition
            if "startsWith" in binding.condition:
                assert f'startsWith("projects/{PROJECT_NUMBER}/secrets/dataloop-gar-")' in binding.condition
    # the Secret Manager service agent may publish rotation notifications, with the real number
    assert (
        "topic/dataloop-gar-rotation",
        f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-secretmanager.iam.gserviceaccount.com",
        "roles/pubsub.publisher",
    ) in {(b.resource, b.member, b.role) for b in cloud.bindings}


def test_an_existing_gcr_topic_is_used_and_survives_teardown(cloud: FakeCloud, tmp_path: Path) -> None:
    cloud.topics["gcr"] = {}  # Artifact Registry's topic, made before us, without our label
    assert deploy(cloud, tmp_path)[0] == 0
    assert not any(c[:4] == ("pubsub", "topics", "create", "gcr") for c in cloud.calls)
    assert deploy(cloud, tmp_path, "teardown")[0] == 0
    assert set(cloud.topics) == {"gcr"}


def test_teardown_removes_what_deploy_made_and_can_run_again(cloud: FakeCloud, tmp_path: Path) -> None:
    assert deploy(cloud, tmp_path)[0] == 0
    code, out = deploy(cloud, tmp_path, "teardown")
    assert code == 0, out
    assert cloud.topics == {}  # gcr too: the deployment made it (labelled)
    assert cloud.accounts == set()
    assert cloud.functions == {} and cloud.jobs == {} and cloud.subscriptions == {}
    assert cloud.bindings_of("dataloop-gar-") == []
    assert set(cloud.roles) == {"dataloop_gar_canary_lock"}  # kept, bound to no one: its id could not be reused
    assert set(cloud.secrets) == {"dataloop-api-credentials"}  # kept: it holds your credential
    code, out = deploy(cloud, tmp_path, "teardown", "--delete-credentials")
    assert code == 0, out
    assert cloud.secrets == {}
    assert "already gone" in out


def test_a_refused_probe_stops_the_run_before_any_create(cloud: FakeCloud, tmp_path: Path, capsys) -> None:
    def refuse_topics(argv: tuple[str, ...]):
        if argv[:3] == ("pubsub", "topics", "describe"):
            return error("PERMISSION_DENIED: User not authorized to perform this action. (or it may not exist)")
        return None

    cloud.intercept = refuse_topics
    code, _ = deploy(cloud, tmp_path)
    assert code == 1
    assert not any(c[:3] == ("pubsub", "topics", "create") for c in cloud.calls)
    assert not any(c[:2] == ("functions", "deploy") for c in cloud.calls)
    err = capsys.readouterr().err
    assert "step 5/" in err and "PERMISSION_DENIED" in err and "run again" in err


def test_the_real_run_resolves_facts_and_never_uses_placeholders(cloud: FakeCloud, tmp_path: Path) -> None:
    assert deploy(cloud, tmp_path)[0] == 0
    for argv in cloud.calls:
        text = " ".join(argv)
        assert "${" not in text and "PROJECT_NUMBER" not in text and "SUBSCRIPTION_OF" not in text, text


# -- the runner's judgement calls -------------------------------------------------------------------


def test_new_accounts_get_time_to_become_visible_to_iam() -> None:
    answers = [not_found("Service account x does not exist"), not_found("Service account x does not exist"), ok()]
    calls: list[object] = []
    sleeps: list[float] = []

    def run(argv):
        calls.append(argv)
        return answers.pop(0)

    step = Step("grant", ("projects", "add-iam-policy-binding", "p"), settle=True)
    PlanRunner(run, out=io.StringIO(), sleep=sleeps.append, settle_waits=(1.0, 2.0, 4.0)).execute([step], {})
    assert len(calls) == 3 and sleeps == [1.0, 2.0]


def test_settling_gives_up_and_a_refusal_is_never_retried() -> None:
    runner = PlanRunner(
        lambda argv: not_found("x does not exist"), out=io.StringIO(), sleep=lambda s: None, settle_waits=(1.0,)
    )
    with pytest.raises(GcloudError, match=r"step 1/1 \(grant\) failed"):
        runner.execute([Step("grant", ("projects", "add-iam-policy-binding", "p"), settle=True)], {})
    calls = []

    def refuse(argv):
        calls.append(argv)
        return error("PERMISSION_DENIED: Permission 'iam.serviceAccounts.get' denied (or it may not exist)")

    runner = PlanRunner(refuse, out=io.StringIO(), sleep=lambda s: None)
    with pytest.raises(GcloudError, match="PERMISSION_DENIED"):
        runner.execute([Step("grant", ("projects", "add-iam-policy-binding", "p"), settle=True)], {})
    assert len(calls) == 1


def test_a_lookup_that_prints_nothing_stops_the_run() -> None:
    runner = PlanRunner(lambda argv: ok("\n"), out=io.StringIO())
    step = Step("find the trigger", ("functions", "describe", "f"), kind=Kind.LOOKUP, fact="trigger_f")
    with pytest.raises(GcloudError, match="printed nothing; cannot continue without trigger_f"):
        runner.execute([step], {})


def test_a_fact_used_before_it_is_looked_up_is_a_plan_error() -> None:
    runner = PlanRunner(lambda argv: ok(), out=io.StringIO())
    with pytest.raises(GcloudError, match="uses the fact 'subscription_x' before a step looked it up"):
        runner.execute([Step("update", ("pubsub", "subscriptions", "update", "${subscription_x}"))], {})


# -- repositories in other projects ---------------------------------------------------------------

REGISTRY_PROJECT = "registry-proj"
OTHER_GCR = f"projects/{REGISTRY_PROJECT}/topics/gcr"
OTHER_SUBSCRIPTION = f"dataloop-gar-on-push-{REGISTRY_PROJECT}"


def two_project_config(tmp_path: Path) -> Path:
    text = EXAMPLE.read_text().replace(
        'repositories = ["us-central1/images"]',
        f'repositories = ["us-central1/images", "projects/{REGISTRY_PROJECT}/locations/us/repositories/shared"]',
    )
    assert REGISTRY_PROJECT in text
    path = tmp_path / "two-projects.toml"
    path.write_text(text)
    return path


@pytest.fixture
def two_projects(tmp_path: Path) -> FakeCloud:
    return FakeCloud(PROJECT, REGION, repositories={f"{PROJECT}/{REGION}/images", f"{REGISTRY_PROJECT}/us/shared"})


def deploy_two(cloud: FakeCloud, tmp_path: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    config = two_project_config(tmp_path)
    code = main([*args, "--config", str(config), "--stage-dir", str(tmp_path / "staged")], run=cloud, out=out)
    return code, out.getvalue()


def test_another_projects_gcr_topic_is_created_and_pushed_to_on_push_as_the_trigger_account(
    two_projects: FakeCloud, tmp_path: Path
) -> None:
    cloud = two_projects
    code, out = deploy_two(cloud, tmp_path)
    assert code == 0, out
    assert cloud.topics[OTHER_GCR] == {"deployed-by": "dataloop-gar"}
    subscription = cloud.subscriptions[OTHER_SUBSCRIPTION]
    assert subscription["topic"] == OTHER_GCR
    assert subscription["push-endpoint"] == "https://dataloop-gar-on-push-abcdefghij-ez.a.run.app"
    assert subscription["push-auth-service-account"] == f"dataloop-gar-trigger@{PROJECT}.iam.gserviceaccount.com"
    assert subscription["dead-letter-topic"] == f"projects/{PROJECT}/topics/dataloop-gar-dead-letter"
    assert (subscription["max-delivery-attempts"], subscription["ack-deadline"]) == ("10", "600")
    agent = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
    assert (f"subscription/{OTHER_SUBSCRIPTION}", agent, "roles/pubsub.subscriber") in {
        (b.resource, b.member, b.role) for b in cloud.bindings
    }
    # the trigger account may invoke on_push: the token the subscription presents is its own
    assert ("function/dataloop-gar-on-push", "roles/run.invoker") in {
        (b.resource, b.role) for b in cloud.bindings_of("dataloop-gar-trigger@")
    }
    # the functions are told which projects are wired, so provisioning refuses any other
    policy = env_vars(cloud.functions["dataloop-gar-requests"]["set-env-vars"])["ACCESS_POLICY"]
    assert f'"gcr_projects":["{PROJECT}","{REGISTRY_PROJECT}"]' in policy

    first, calls_before = cloud.state(), len(cloud.calls)
    assert deploy_two(cloud, tmp_path)[0] == 0
    assert cloud.state() == first and changing(cloud.calls[calls_before:]) == []
    assert any(c[:4] == ("pubsub", "subscriptions", "update", OTHER_SUBSCRIPTION) for c in cloud.calls[calls_before:])


def test_teardown_removes_the_other_projects_subscription_and_the_gcr_topic_it_made_there(
    two_projects: FakeCloud, tmp_path: Path
) -> None:
    cloud = two_projects
    assert deploy_two(cloud, tmp_path)[0] == 0
    code, out = deploy_two(cloud, tmp_path, "teardown")
    assert code == 0, out
    assert cloud.topics == {} and cloud.subscriptions == {}
    assert cloud.bindings_of("gcp-sa-pubsub") == []


def test_another_projects_existing_gcr_topic_is_used_and_survives_teardown(
    two_projects: FakeCloud, tmp_path: Path
) -> None:
    cloud = two_projects
    cloud.topics[OTHER_GCR] = {}  # made by Artifact Registry (or its owners), not by us
    assert deploy_two(cloud, tmp_path)[0] == 0
    assert not any(
        c[:4] == ("pubsub", "topics", "create", "gcr") and f"--project={REGISTRY_PROJECT}" in c for c in cloud.calls
    )
    assert cloud.subscriptions[OTHER_SUBSCRIPTION]["topic"] == OTHER_GCR
    assert deploy_two(cloud, tmp_path, "teardown")[0] == 0
    assert set(cloud.topics) == {OTHER_GCR} and OTHER_SUBSCRIPTION not in cloud.subscriptions


@pytest.mark.parametrize(
    "refusal",
    [
        "hidden project",
        "PERMISSION_DENIED: User not authorized to perform this action.",
        "FAILED_PRECONDITION: Cloud Pub/Sub API has not been used in project registry-proj before or it is disabled.",
    ],
)
def test_a_project_that_cannot_be_wired_stops_the_deploy_before_anything_changes(
    two_projects: FakeCloud, tmp_path: Path, refusal: str, capsys
) -> None:
    cloud = two_projects
    if refusal == "hidden project":
        cloud.hidden_projects.add(REGISTRY_PROJECT)
    else:

        def refuse(argv: tuple[str, ...]):
            if argv[:3] == ("pubsub", "topics", "describe") and f"--project={REGISTRY_PROJECT}" in argv:
                return error(refusal)
            return None

        cloud.intercept = refuse
    code, _ = deploy_two(cloud, tmp_path)
    assert code == 1
    assert all(c[:2] == ("projects", "describe") or c[2] == "describe" for c in cloud.calls), cloud.calls
    assert cloud.state() == FakeCloud(PROJECT, REGION).state()
    err = capsys.readouterr().err
    assert REGISTRY_PROJECT in err and ("step 1/" in err or "step 2/" in err)


def test_teardown_deletes_the_canary_services_lock_secrets_it_can_tell_are_locks(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    config = tmp_path / "canaries.toml"
    text = EXAMPLE.read_text().replace("canary_services = []", 'canary_services = ["svc-a", "svc-b", "svc-c"]')
    assert "svc-a" in text
    config.write_text(text)
    run = ["--config", str(config), "--stage-dir", str(tmp_path / "staged")]
    assert main(run, run=cloud, out=io.StringIO()) == 0
    cloud.secrets["dataloop-gar_canary-svc-a"] = {"labels": "dataloop-gar=canary-lock"}  # as provisioning makes it
    cloud.secrets["dataloop-gar_canary-svc-b"] = {"labels": "team=payments"}  # same name, not a lock of ours
    # svc-c: no integration used it, so it has no lock

    out = io.StringIO()
    assert main(["teardown", *run], run=cloud, out=out) == 0, out.getvalue()

    assert "dataloop-gar_canary-svc-a" not in cloud.secrets
    assert cloud.secrets["dataloop-gar_canary-svc-b"] == {"labels": "team=payments"}
    assert ("secrets", "delete", "dataloop-gar_canary-svc-b") not in {c[:3] for c in cloud.calls}
