"""Untrusted JSON is refused by its depth before CPython's recursive parser sees it.

A parse near the recursion limit is not only a ``RecursionError``: any finaliser the
garbage collector runs meanwhile fails too, which once surfaced as a random CI failure in
an unrelated test. So the contract tested here is that the parser is never entered for
a document past the limit, and that the depth count agrees with the real nesting.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core import json_text
from shared.core.errors import PermanentError
from shared.core.json_text import MAX_DEPTH, TooDeep, loads, nesting_exceeds
from shared.model.integrations import Annotation
from shared.model.keys import ServiceAccountKey
from shared.model.lease import Lease
from shared.model.record import RETIRED_KEYS, SecretRecord, retired_keys
from shared.workflows.provisioning.records import read_last_test, retired_key_ids, rotation_holder

DEEP = '{"a":' * 10_000 + "1" + "}" * 10_000


@pytest.fixture
def parser_must_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("the recursive parser was entered")

    monkeypatch.setattr(json_text.json, "loads", refuse)


@pytest.mark.parametrize("shape", ["[" * 65 + "]" * 65, '{"a":' * 65 + "1" + "}" * 65, DEEP, "[" * 100_000])
def test_a_document_past_the_limit_never_reaches_the_parser(parser_must_not_run: None, shape: str) -> None:
    with pytest.raises(TooDeep, match="deeper than 64 levels"):
        loads(shape)
    with pytest.raises(TooDeep):
        loads(shape.encode())


def test_the_limit_itself_parses() -> None:
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) == json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    assert loads('{"a":' * 3 + "1" + "}" * 3, max_depth=3) == {"a": {"a": {"a": 1}}}
    with pytest.raises(TooDeep, match="deeper than 2 levels"):
        loads('{"a":' * 3 + "1" + "}" * 3, max_depth=2)


def test_brackets_inside_strings_are_not_nesting() -> None:
    text = json.dumps({"k": "[" * 500 + '\\"{{{' + "{" * 500, "q": ['"[[', "\\"]})
    assert loads(text)["k"].startswith("[[[")


def test_an_unterminated_string_is_invalid_json_not_deep() -> None:
    with pytest.raises(ValueError) as caught:
        loads('{"a": "' + "[" * 200)
    assert not isinstance(caught.value, TooDeep)


def test_bytes_in_any_json_encoding_and_undecodable_bytes() -> None:
    assert loads(json.dumps({"a": [1]}).encode("utf-16")) == {"a": [1]}
    with pytest.raises(ValueError, match="not utf-8"):
        loads(b'{"a": "\xff\xfe\xfd"}')


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\abé', max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\', max_size=4), inner, max_size=3)
    ),
    max_leaves=40,
)


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


@given(json_values, st.integers(0, 8), st.booleans())
def test_the_count_agrees_with_the_real_nesting(value: Any, limit: int, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert nesting_exceeds(text, limit) == (depth_of(value) > limit)


# -- the callers that read what somebody else wrote ----------------------------------------------


def test_hand_edited_annotations_ten_thousand_deep_read_as_unreadable(parser_must_not_run: None) -> None:
    """An annotation anyone with secretmanager.secrets.update can write is read like a malformed one."""
    record = SecretRecord(
        name="projects/p/secrets/dataloop-gar-x",
        annotations={RETIRED_KEYS: DEEP, Annotation.ROTATION_LEASE: DEEP, Annotation.LAST_TEST: DEEP},
    )
    assert retired_key_ids(record) == []
    assert retired_keys(record.annotations) == {}
    assert Lease.from_annotations(record.annotations) is None
    assert read_last_test(record) == {"unreadable": True}
    from datetime import datetime

    assert rotation_holder(record, datetime.now(UTC)) is None


def test_a_key_payload_ten_thousand_deep_is_a_clear_refusal(parser_must_not_run: None) -> None:
    with pytest.raises(PermanentError, match="is not JSON"):
        ServiceAccountKey.from_json(DEEP, source="secret dataloop-gar-x")
