"""What is recorded about a test of an integration's key: the ``last-test`` annotation.

Provisioning's first test and an operator's ``test`` request both end in a registry-tier
verdict (:class:`shared.workflows.reference_test.ReferenceTest`); it is recorded on the
secret, which the ``status`` action reports, together with the registry's challenge
learnt on the way, so that a cold ``on_push`` instance need not ask for it again.
"""

from __future__ import annotations

from typing import Any

from shared.model.images import RegistryImage
from shared.model.integrations import Annotation
from shared.model.record import timestamp, update_record
from shared.ports import SecretStore
from shared.workflows.provisioning.records import last_test_annotation, now_utc
from shared.workflows.reference_test import Verdict


def summary(image: RegistryImage, verdict: Verdict, attempts: int) -> dict[str, Any]:
    """What is recorded (``last-test``) and replied about one test: never key material."""
    return {
        "at": timestamp(now_utc()),
        "image": str(image),
        "tier": verdict.tier,
        "passed": verdict.passed,
        "code": verdict.code,
        "reason": verdict.reason,
        "digest": verdict.digest,
        "key_id": verdict.key_id,
        "attempts": attempts,
    }


def record_test(secrets: SecretStore, secret_id: str, result: dict[str, Any], *, challenge: str | None = None) -> None:
    """Write ``result`` as the secret's ``last-test`` annotation (under the etag).

    With the registry's ``challenge`` learnt during the test, record it too
    (``registry-challenge``): a cold ``on_push`` instance then goes straight to the token
    endpoint instead of first asking the registry how to authenticate.
    """
    wanted = {Annotation.LAST_TEST: last_test_annotation(result)}
    if challenge:
        wanted[Annotation.REGISTRY_CHALLENGE] = challenge
    update_record(
        secrets,
        secret_id,
        lambda record: (
            None
            if all(record.annotations.get(k) == v for k, v in wanted.items())
            else {"annotations": {**record.annotations, **wanted}}
        ),
    )
