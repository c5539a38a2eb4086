"""Secret hygiene: nothing the system writes carries a key, a token or a password.

Three kinds of evidence:

1. **the scanner works** -- each kind of secret this system handles is planted into a log
   line and into a result message, in the forms it travels in, and the scanner must catch
   every one (and must not cry wolf on the ordinary lines the system writes: digests, key
   ids, emails, request ids, the word "password" in an explanation);
2. **the production formatter masks each of them** -- the same planted lines, logged
   through ``shared.core.logs.CloudLoggingFormatter``, come out clean;
3. **the run leaks nothing** -- every reliability test is scanned after it ran (see the
   conftest), and the last test of the session scans every function log the run produced:
   the local cloud's functions (which served the whole e2e suite and the e2e tests here)
   and every functions-framework instance the wire and reliability tests started. Each
   outcome a function handled is in its log as the result message it published.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from localcloud.keyfiles import generate_key_file
from localcloud.stack import LocalCloud
from shared.core import logs
from shared.core.redaction import register_secret
from tests.reliability.conftest import harvest_local_cloud
from tests.reliability.figures import record
from tests.reliability.leaks import SecretScanner

KEY = generate_key_file("planted@test-project.iam.gserviceaccount.com")
PRIVATE_KEY = json.loads(KEY.json_text)["private_key"]
BOT_PASSWORD = "correct-horse-battery-staple-42"
API_KEY = "eyJhbGciOiJIUzI1NiJ9.eyJlbWFpbCI6ImJvdEBleGFtcGxlLmNvbSIsImV4cCI6OTk5OTk5OTk5OX0.c2lnbmF0dXJlLW9mLXRoZS1rZXk"
DOCKER_CONFIG = base64.b64encode(
    json.dumps({"auths": {"us-docker.pkg.dev": {"username": "_json_key", "password": KEY.json_text}}}).encode()
).decode()
BASIC = base64.b64encode(f"_json_key:{KEY.json_text}".encode()).decode()

#: kind -> the planted text, as it would sit inside a message or a field.
PLANTS: dict[str, str] = {
    "PEM private key": PRIVATE_KEY,
    "one line of the PEM body": PRIVATE_KEY.splitlines()[3],
    "key-file JSON": KEY.json_text,
    "key-file JSON inside a JSON string": json.dumps(KEY.json_text),
    "base64 of the key file": KEY.json_base64,
    "URL-safe base64 of the key file, unpadded": base64.urlsafe_b64encode(KEY.json_text.encode()).decode().rstrip("="),
    "docker config Dataloop stores": DOCKER_CONFIG,
    "Authorization: Bearer header": "Authorization: Bearer ya29.a0AfH6SMBx-planted-oauth-access-token",
    "Authorization: Basic _json_key header": f"Authorization: Basic {BASIC}",
    "Dataloop API key (a JWT)": API_KEY,
    "password field": f'{{"username": "bot@bot.dataloop.ai", "password": "{BOT_PASSWORD}"}}',
    "password as a query parameter": f"https://gate.example/token?username=bot&password={BOT_PASSWORD}",
    "bot password with no telling shape": f"login failed for bot with {BOT_PASSWORD}",
}
#: Lines of the kind the system does write, which a useful scanner must not flag.
ORDINARY = [
    "team-a: puller@proj.iam.gserviceaccount.com can pull us-central1-docker.pkg.dev/proj/images/app@sha256:"
    + "ab" * 32,
    '{"key_id": "0123456789abcdef0123456789abcdef01234567", "old_key_id": "fedcba9876543210fedcba9876543210fedcba98"}',
    "Check the Dataloop API key or the bot user's username/password (expired, revoked, or issued elsewhere?).",
    "registry 127.0.0.1:5000 answered HTTP 401 without a Bearer or Basic challenge this client can follow",
    'WWW-Authenticate: Bearer realm="https://us-docker.pkg.dev/v2/token",service="us-docker.pkg.dev"',
    '{"password": "[REDACTED]", "private_key": "[REDACTED]", "Authorization": "Bearer [REDACTED]"}',
    "x-request-id: 6f1c2b4e-8d0a-4c1e-9b7a-2f3d4e5a6b7c; event_id 1234567890123",
    base64.b64encode(json.dumps({"kind": "rotate", "integration": "dataloop-gar-team-a"}).encode()).decode(),
]


def scanner_knowing_the_plants() -> SecretScanner:
    scanner = SecretScanner()
    scanner.know_key_file(KEY.json_text)
    scanner.know(BOT_PASSWORD, "Dataloop bot password")
    scanner.know(API_KEY, "Dataloop API key")
    return scanner


def as_log_line(text: str) -> str:
    """The planted text as an unmasked Cloud Logging line would carry it (a bug's output)."""
    return json.dumps({"severity": "ERROR", "message": f"refused: {text}", "logger": "dataloop_gar"})


def as_result(text: str) -> str:
    return json.dumps({"schema": "dataloop-gar.result/v1", "status": "failed", "details": {"note": text}})


@pytest.mark.parametrize("kind", list(PLANTS))
@pytest.mark.parametrize("carrier", [as_log_line, as_result], ids=["log line", "result message"])
def test_the_scanner_catches_each_planted_secret(kind: str, carrier: Callable[[str], str]) -> None:
    record("hygiene: planted secrets the scanner must catch", inputs=1)
    found = scanner_knowing_the_plants().scan(carrier(PLANTS[kind]), "planted")
    assert found, f"the scanner missed a planted {kind}"
    assert all(PLANTS[kind] not in str(leak) for leak in found), "a finding must not repeat the secret"


def test_the_scanner_does_not_flag_what_the_system_ordinarily_writes() -> None:
    record("hygiene: planted secrets the scanner must catch", inputs=len(ORDINARY))
    scanner = scanner_knowing_the_plants()
    flagged = {line[:60]: [str(x) for x in scanner.scan(line, "ordinary")] for line in ORDINARY}
    assert {line: found for line, found in flagged.items() if found} == {}


def test_the_production_formatter_masks_every_planted_secret() -> None:
    """Logged through the formatter functions use (the exact values registered, as the code does)."""
    register_secret(BOT_PASSWORD)
    register_secret(KEY.json_text)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.CloudLoggingFormatter())
    logger = logging.getLogger("reliability.hygiene.planted")
    logger.addHandler(handler)
    logger.propagate = False  # only the formatter under test sees the planted lines
    try:
        for kind, text in PLANTS.items():
            logs.log(logger, logging.ERROR, f"refused: {text}", detail={"note": text, "kind": kind})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    lines = stream.getvalue().splitlines()
    record("hygiene: planted secrets the scanner must catch", inputs=len(lines))
    assert len(lines) == len(PLANTS)
    leaks = [
        str(leak) for i, line in enumerate(lines) for leak in scanner_knowing_the_plants().scan(line, list(PLANTS)[i])
    ]
    assert leaks == []


# -- the whole run ------------------------------------------------------------------------------------------


#: Log files of this project's functions: ``run_function``'s ``TARGET-N.log`` and a local cloud's ``NAME.log``.
FUNCTION_LOGS = frozenset({"on_push", "on_request", "requests", "rotate"})


def function_logs(local_cloud: LocalCloud, basetemp: Path) -> dict[str, str]:
    """Every functions-framework log of this session: the local cloud's and the ones tests started."""
    found = {f"local cloud {name}": function.log_text() for name, function in local_cloud.functions.items()}
    seen = {Path(function.log_path).resolve() for function in local_cloud.functions.values()}
    for path in sorted(basetemp.rglob("*.log")):
        if path.stem.split("-")[0] in FUNCTION_LOGS and path.resolve() not in seen:
            found[str(path.relative_to(basetemp))] = path.read_text(errors="replace")
    return found


@pytest.mark.e2e
def test_every_function_log_of_this_run_is_free_of_secrets(
    local_cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Runs last (see the conftest): the local cloud's functions served every e2e test of the run.

    It also sends its own few events first (a status request, a push, a malformed message), so
    the scan has something to read even when this module runs alone, and scans the result
    messages those events published, as read back from the results topic.
    """
    collector = local_cloud.results_collector("hygiene")
    try:
        request_id = f"hygiene-{uuid.uuid4().hex[:8]}"
        local_cloud.publish(local_cloud.topics.requests, {"version": 1, "action": "status", "request_id": request_id})
        local_cloud.publish(local_cloud.topics.gcr, b'{"action": "INSERT", "tag": 42}')
        pushed = local_cloud.push("hygiene", "v1")
        collector.wait_for_json(timeout=60, request_id=request_id)
        collector.wait_for(lambda m: pushed.digest in m.data.decode(errors="replace"), timeout=60)
        collector.drain(quiet_seconds=1.0)
    finally:
        local_cloud.delete_subscription(collector)
    published = [(f"published result {m.message_id}", m.data.decode(errors="replace")) for m in collector.messages]

    scanner = SecretScanner()
    harvest_local_cloud(scanner, local_cloud)
    texts = function_logs(local_cloud, tmp_path_factory.getbasetemp())
    lines = [(f"{where}:{n}", line) for where, text in texts.items() for n, line in enumerate(text.splitlines(), 1)]
    outcomes = sum(1 for _, line in lines if '"outcome": {' in line)
    scanned, leaks = scanner.scan_all([*lines, *published])
    record("hygiene: every function log of the run", inputs=scanned, leaks=len(leaks))
    assert scanner.known_count > 0 and outcomes >= 3 and len(published) >= 3, (scanner.known_count, outcomes, published)
    assert leaks == [], [str(leak) for leak in leaks[:10]]
