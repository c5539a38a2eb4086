"""The access policy: what it admits, what it refuses, and that a refusal costs no remote call."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.core.errors import ConfigError
from shared.model.events import PubSubMessage
from shared.model.policy import DEFAULT_CREATED_ACCOUNT_PREFIX, AccessPolicy, NotAllowed, never_touched
from shared.model.request import parse_request
from shared.model.results import Status
from shared.workflows.provisioning.handler import RequestHandler

PROJECT = "my-proj"
OTHER = "other-proj"
ORG = "org-1"
DEPLOYMENT = tuple(f"dataloop-gar-{k}@{PROJECT}.iam.gserviceaccount.com" for k in ("on-push", "requests", "rotate"))

POLICY = AccessPolicy.from_json(
    json.dumps(
        {
            "org_ids": [ORG],
            "repositories": [
                f"projects/{PROJECT}/locations/us-central1/repositories/images",
                f"projects/{PROJECT}/locations/us-central1/repositories/models",
            ],
            "account_projects": [PROJECT],
            "service_accounts": [f"puller@{OTHER}.iam.gserviceaccount.com", f"*@{PROJECT}.iam.gserviceaccount.com"],
            "deployment_accounts": list(DEPLOYMENT),
            "canary_services": ["canary-svc-1"],
        }
    )
)
CANARY_IMAGE = f"us-central1-docker.pkg.dev/{PROJECT}/images/canary:v1"


def provision(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "version": 1,
        "action": "provision",
        "request_id": "r-1",
        "name": "team-a",
        "org_id": ORG,
        "project": PROJECT,
        "location": "us-central1",
        "repositories": ["images"],
        "service_account": {"create": "dlgar-team-a"},
    }
    body.update(overrides)
    return body


class NoWorkflow:
    """Builders that count: a workflow that is never built can make no remote call."""

    def __init__(self) -> None:
        self.built: list[str] = []

    def __call__(self, name: str) -> Any:
        def build() -> Any:
            self.built.append(name)
            raise AssertionError(f"the {name} workflow must not be built for a refused request")

        return build


def handler(policy: AccessPolicy, counter: NoWorkflow) -> RequestHandler:
    return RequestHandler(
        provisioner=counter("provision"),
        deprovisioner=counter("deprovision"),
        rotation=counter("rotation"),
        image_check=counter("test"),
        status=counter("status"),
        policy=policy,
    )


def send(policy: AccessPolicy, body: dict[str, Any]) -> tuple[Any, NoWorkflow]:
    counter = NoWorkflow()
    outcome = handler(policy, counter).handle(PubSubMessage(data=json.dumps(body).encode(), message_id="m"))
    return outcome, counter


# -- every refused value, rejected before anything is called -----------------------------------------

REFUSED = {
    "an org the policy does not list": ({"org_id": "someone-elses-org"}, "/org_id"),
    "a repository the policy does not list": ({"repositories": ["images", "secret-stuff"]}, "/repositories/1"),
    "a listed repository id in another location": ({"location": "europe-west4"}, "/repositories/0"),
    "the default compute account": (
        {"service_account": {"email": "123456789012-compute@developer.gserviceaccount.com"}},
        "/service_account/email",
    ),
    "the App Engine default account": (
        {"service_account": {"email": f"{PROJECT}@appspot.gserviceaccount.com"}},
        "/service_account/email",
    ),
    "a Google-managed service agent": (
        {"service_account": {"email": "service-123456789012@gcp-sa-secretmanager.iam.gserviceaccount.com"}},
        "/service_account/email",
    ),
    "the requests function's own account, by email": (
        {"service_account": {"email": DEPLOYMENT[1]}},
        "/service_account/email",
    ),
    "the rotate function's own account, to create": (
        {"service_account": {"create": "dataloop-gar-rotate"}},
        "/service_account/create",
    ),
    "an account id without the created-account prefix": (
        {"service_account": {"create": "team-a-puller"}},
        "/service_account/create",
    ),
    "an account in a project the policy does not list": (
        {"service_account": {"email": "puller@evil-proj-1.iam.gserviceaccount.com"}},
        "/service_account/email",
    ),
    "an account of a listed project that is not adoptable": (
        {"service_account": {"email": f"builder@{OTHER}.iam.gserviceaccount.com"}},
        "/service_account/email",
    ),
    "a Dataloop service not set aside as a canary": (
        {"canary": {"image": CANARY_IMAGE, "service_id": "production-service"}},
        "/canary/service_id",
    ),
}


@pytest.mark.parametrize("overrides, field", REFUSED.values(), ids=list(REFUSED))
def test_a_refused_value_is_rejected_naming_its_field_before_any_workflow_is_built(
    overrides: dict[str, Any], field: str
) -> None:
    outcome, counter = send(POLICY, provision(**overrides))

    assert outcome.status is Status.REJECTED, outcome.reason
    assert outcome.code == "not-allowed"
    assert outcome.details["field"] == field and outcome.reason.startswith(f"{field}: ")
    assert outcome.request_id == "r-1" and outcome.subject["action"] == "provision"
    assert counter.built == [], "a refused request must make no remote call"


def test_an_allowed_request_reaches_the_workflow() -> None:
    for overrides in (
        {},
        {"service_account": {"email": f"puller@{OTHER}.iam.gserviceaccount.com"}},
        {"service_account": {"email": f"existing-sa@{PROJECT}.iam.gserviceaccount.com"}},
        {"repositories": ["images", "models"]},
        {"canary": {"image": CANARY_IMAGE, "service_id": "canary-svc-1"}},
        {"canary": {"image": CANARY_IMAGE}},  # registry tier only: no service is touched
    ):
        counter = NoWorkflow()
        with pytest.raises(AssertionError, match="provision workflow"):
            handler(POLICY, counter).handle(PubSubMessage(data=json.dumps(provision(**overrides)).encode()))
        assert counter.built == ["provision"], overrides


def test_a_repository_whose_project_is_not_wired_is_rejected_as_such_before_any_workflow_is_built() -> None:
    outcome, counter = send(POLICY, provision(project=OTHER))

    assert (outcome.status, outcome.code, counter.built) == (Status.REJECTED, "project-not-wired", [])
    assert outcome.details["field"] == "/repositories/0"
    assert f"project {OTHER}" in outcome.reason and "gcr topic" in outcome.reason


def test_the_wired_projects_are_those_the_policy_names_else_those_of_its_repositories() -> None:
    other_repository = f"projects/{OTHER}/locations/us-central1/repositories/images"
    listed_not_wired = AccessPolicy(
        org_ids=frozenset([ORG]), repositories=frozenset([other_repository]), gcr_projects=frozenset([PROJECT])
    )
    wired_not_listed = AccessPolicy(
        org_ids=frozenset([ORG]), repositories=POLICY.repositories, gcr_projects=frozenset([PROJECT, OTHER])
    )

    assert POLICY.wired_projects == {PROJECT}
    assert send(listed_not_wired, provision(project=OTHER))[0].code == "project-not-wired"
    # A wired project does not list its repositories: each one still has to be named.
    assert send(wired_not_listed, provision(project=OTHER))[0].code == "not-allowed"


def test_without_a_policy_nothing_is_provisioned() -> None:
    closed = AccessPolicy.from_json("")

    outcome, counter = send(closed, provision())

    assert (outcome.status, outcome.code, counter.built) == (Status.REJECTED, "not-allowed", [])
    assert "ACCESS_POLICY" in outcome.reason


def test_other_actions_are_not_judged_at_the_door() -> None:
    """Their targets are records, checked where they are read (rotation, deprovision)."""
    for body in (
        {"version": 1, "action": "status"},
        {"version": 1, "action": "deprovision", "name": "team-a"},
    ):
        counter = NoWorkflow()
        with pytest.raises(AssertionError):
            handler(AccessPolicy.from_json(""), counter).dispatch(parse_request(body))
        assert len(counter.built) == 1


# -- the fixed rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "email",
    [
        "123456789012-compute@developer.gserviceaccount.com",
        f"{PROJECT}@appspot.gserviceaccount.com",
        "service-123456789012@gcp-sa-artifactregistry.iam.gserviceaccount.com",
        "123456789012@cloudservices.gserviceaccount.com",
        "123456789012@cloudbuild.gserviceaccount.com",
        f"firebase-adminsdk-x1y2z@{PROJECT}.iam.gserviceaccount.com.evil.example",
        "",
    ],
)
def test_google_accounts_are_never_touched_whatever_the_policy(email: str) -> None:
    everything = AccessPolicy(
        org_ids=frozenset([ORG]),
        account_projects=frozenset([PROJECT]),
        service_accounts=("*@*",),
    )
    assert never_touched(email) is not None
    assert everything.refusal_of_account(email, create=False) is not None


def test_the_deployments_own_accounts_are_never_touched_even_when_adoptable_by_pattern() -> None:
    for email in DEPLOYMENT:
        assert POLICY.may_adopt(email)  # "*@my-proj…" matches them
        assert "deployment's own" in (POLICY.refusal_of_account(email, create=False) or "")


def test_a_record_naming_an_org_or_account_outside_the_policy_is_refused() -> None:
    POLICY.check_record(org_id=ORG, service_account=f"dlgar-team-a@{PROJECT}.iam.gserviceaccount.com", secret_id="s")
    with pytest.raises(NotAllowed, match="dataloop-org"):
        POLICY.check_record(
            org_id="other-org", service_account=f"dlgar-a1@{PROJECT}.iam.gserviceaccount.com", secret_id="s"
        )
    with pytest.raises(NotAllowed, match="service-account"):
        POLICY.check_record(org_id=ORG, service_account=DEPLOYMENT[2], secret_id="s")
    with pytest.raises(NotAllowed, match="service-account"):
        POLICY.check_record(org_id=ORG, service_account=None, secret_id="s")


# -- parsing --------------------------------------------------------------------------------------


def test_the_policy_round_trips_through_its_json() -> None:
    assert AccessPolicy.from_json(POLICY.to_json()) == POLICY
    assert POLICY.created_account_prefix == DEFAULT_CREATED_ACCOUNT_PREFIX
    assert POLICY.projects == {PROJECT, OTHER}
    wired = AccessPolicy.from_json(json.dumps({**json.loads(POLICY.to_json()), "gcr_projects": [PROJECT, OTHER]}))
    assert wired.gcr_projects == {PROJECT, OTHER} and AccessPolicy.from_json(wired.to_json()) == wired
    assert "gcr_projects" not in json.loads(POLICY.to_json())


@pytest.mark.parametrize(
    "text, problem",
    [
        ("{", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"org_ids": "org-1"}', "org_ids: must be a list"),
        ('{"repositories": ["images"]}', "repositories: 'images' does not match"),
        ('{"service_accounts": ["*@*"]}', "service_accounts: '*@*' does not match"),
        ('{"created_account_prefix": "x"}', "created_account_prefix"),
        ('{"owners": []}', "owners: unknown setting"),
        ('{"canary_services": ["../x"]}', "canary_services: '../x' does not match"),
        ('{"gcr_projects": ["Not A Project"]}', "gcr_projects: 'Not A Project' does not match"),
        (
            '{"created_account_prefix": "dataloop-", "deployment_accounts": ["dataloop-gar-rotate@my-proj.iam.gserviceaccount.com"]}',
            "start with the created-account prefix",
        ),
    ],
)
def test_a_bad_policy_stops_the_function_with_every_problem(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        AccessPolicy.from_json(text)
    assert any(problem in p for p in raised.value.problems), raised.value.problems


@pytest.mark.parametrize("host", ["127.0.0.1:5000", "localhost:5000", "127.0.0.1"])
def test_a_loopback_registry_host_is_rejected_unless_the_local_cloud_switch_is_on(host: str) -> None:
    body = provision(registry_host=host)
    outcome, counter = send(POLICY, body)
    assert (outcome.status, outcome.code, outcome.details["field"]) == (
        Status.REJECTED,
        "not-allowed",
        "/registry_host",
    )
    assert counter.built == []

    allowed = RequestHandler(
        provisioner=NoWorkflow()("provision"),
        deprovisioner=NoWorkflow()("deprovision"),
        rotation=NoWorkflow()("rotation"),
        image_check=NoWorkflow()("test"),
        status=NoWorkflow()("status"),
        policy=POLICY,
        allow_loopback_registries=True,
    )
    with pytest.raises(AssertionError, match="provision workflow"):
        allowed.handle(PubSubMessage(data=json.dumps(body).encode()))


def test_loopback_hosts_are_recognised_in_every_spelling() -> None:
    from shared.model.images import is_loopback_host

    for host in ("127.0.0.1:5000", "LOCALHOST:1", "127.1.2.3:80", "[::1]:5000", "localhost."):
        assert is_loopback_host(host), host
    for host in ("us-central1-docker.pkg.dev", "localhost.evil.example", "127.0.0.1.nip.io", "10.0.0.1:5000"):
        assert not is_loopback_host(host), host
