"""Pure parts of ``shared.adapters.artifact_registry``: the in-place policy edits."""

from __future__ import annotations

from google.iam.v1 import policy_pb2

from shared.adapters.artifact_registry import READER_ROLE, _add_reader, _remove_reader

SA = "serviceAccount:puller@proj-1.iam.gserviceaccount.com"


def test_adding_joins_the_plain_reader_binding_not_a_conditional_one() -> None:
    policy = policy_pb2.Policy(version=3)
    conditional = policy.bindings.add(role=READER_ROLE, members=["user:a@example.com"])
    conditional.condition.expression = "request.time < timestamp('2030-01-01T00:00:00Z')"
    policy.bindings.add(role=READER_ROLE, members=["user:b@example.com"])

    assert _add_reader(policy, SA) is True
    assert _add_reader(policy, SA) is False

    assert [list(b.members) for b in policy.bindings] == [["user:a@example.com"], ["user:b@example.com", SA]]


def test_a_conditional_grant_alone_does_not_count_as_granted() -> None:
    policy = policy_pb2.Policy(version=3)
    conditional = policy.bindings.add(role=READER_ROLE, members=[SA])
    conditional.condition.expression = "true"

    assert _add_reader(policy, SA) is True

    assert [(b.HasField("condition"), list(b.members)) for b in policy.bindings] == [(True, [SA]), (False, [SA])]


def test_removing_from_several_plain_bindings_keeps_others() -> None:
    policy = policy_pb2.Policy()
    policy.bindings.add(role=READER_ROLE, members=[SA, "user:b@example.com"])
    policy.bindings.add(role=READER_ROLE, members=[SA])
    policy.bindings.add(role="roles/artifactregistry.writer", members=[SA])

    assert _remove_reader(policy, SA) is True
    assert _remove_reader(policy, SA) is False

    assert [(b.role, list(b.members)) for b in policy.bindings] == [
        (READER_ROLE, ["user:b@example.com"]),
        ("roles/artifactregistry.writer", [SA]),
    ]


def test_removing_a_user_does_not_touch_a_deleted_account_of_the_same_name() -> None:
    policy = policy_pb2.Policy()
    policy.bindings.add(role=READER_ROLE, members=["deleted:serviceAccount:a@example.com?uid=1"])

    assert _remove_reader(policy, "user:a@example.com") is False
    assert len(policy.bindings) == 1
