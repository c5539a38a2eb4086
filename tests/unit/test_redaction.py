import base64
import io
import json
import logging

from shared.core import logs
from shared.core.redaction import MASK, _registry, redact, redact_text, register_secret
from tests.unit.fakes import key_json

PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nabc\n-----END PRIVATE KEY-----\n"


def test_pem_blocks_are_masked_raw_and_json_escaped():
    assert "MIIEvQ" not in redact_text(f"key is {PEM} ok")
    assert "MIIEvQ" not in redact_text(json.dumps({"note": PEM}))


def test_key_file_json_fields_are_masked_but_ids_kept():
    text = json.dumps({"private_key_id": "abc123", "private_key": "xyz", "client_email": "a@b"})
    masked = redact_text(text)
    assert "abc123" in masked and "a@b" in masked and '"private_key": "xyz"' not in masked


def test_headers_tokens_and_basic_credentials():
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJib3QifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    text = f"Authorization: Bearer {jwt} and Basic X2pzb25fa2V5OnNlY3JldA== ya29.a0AfH6SMBabcdefghij password=hunter22 _json_key:{{x}}"
    masked = redact_text(text)
    for leaked in (jwt, "X2pzb25fa2V5OnNlY3JldA==", "ya29.a0AfH6SMBabcdefghij", "hunter22", "_json_key:{x}"):
        assert leaked not in masked
    assert masked.count(MASK) >= 5


def test_long_base64_is_masked_but_digests_are_not():
    blob = base64.b64encode(key_json().encode()).decode()
    digest = "sha256:" + "0123456789abcdef" * 4
    masked = redact_text(f"{blob} {digest}")
    assert blob not in masked and digest in masked


def test_registered_secrets_are_masked_in_any_form():
    secret = "correct horse battery staple"
    register_secret(secret)
    for form in (secret, base64.b64encode(secret.encode()).decode()):
        assert form not in redact_text(f"x {form} y")


def test_structures_are_walked_and_secret_keys_masked():
    value = redact({"token": "short", "nested": [{"password": "p"}, "Bearer abcdefghijkl"], "n": 3})
    assert value == {"token": MASK, "nested": [{"password": MASK}, f"Bearer {MASK}"], "n": 3}


def test_log_lines_cannot_carry_key_material():
    stream = io.StringIO()
    logs.configure("DEBUG", project="proj", stream=stream)
    logger = logging.getLogger("test.redaction")
    key = key_json("leaky")
    with logs.bound(trace="0af7651916cd43dd8448eb211c80319c", span="b7ad6b7169203331", function="f"):
        logs.log(
            logger, logging.ERROR, f"oops {key}", payload={"key": key, "b64": base64.b64encode(key.encode()).decode()}
        )
        try:
            raise ValueError(PEM)
        except ValueError:
            logger.exception("failed with the key in the exception")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    assert lines[0]["severity"] == "ERROR"
    assert lines[0]["logging.googleapis.com/trace"] == "projects/proj/traces/0af7651916cd43dd8448eb211c80319c"
    assert lines[0]["logging.googleapis.com/spanId"] == "b7ad6b7169203331"
    assert lines[0]["logging.googleapis.com/labels"] == {"function": "f"}
    text = stream.getvalue()
    assert "MIIfakeleaky" not in text and "MIIEvQ" not in text
    assert base64.b64encode(key.encode()).decode()[:40] not in text


def test_trace_parsing():
    assert logs.parse_trace("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") == (
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
    )
    assert logs.parse_trace(None, "105445aa7843bc8bf206b120001000/1;o=1") == ("105445aa7843bc8bf206b120001000", "1")
    assert logs.parse_trace("garbage") == (None, None)


# -- the clean-text memory (a performance change; it must never hide a new secret) --------


def test_a_text_found_clean_is_checked_again_once_a_new_secret_is_registered() -> None:
    secret = "unit-secret-" + "q7Zx" * 4
    text = f"the value {secret} in a reason"
    assert redact_text(text) == text  # now remembered as clean
    register_secret(secret)
    assert secret not in redact_text(text)


def test_registering_a_known_secret_again_does_not_forget_clean_texts() -> None:
    secret = "unit-known-" + "k3Yw" * 4
    register_secret(secret)
    generation = _registry.generation
    register_secret(secret)  # every push registers the key it tests
    assert _registry.generation == generation
