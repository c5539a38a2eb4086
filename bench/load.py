"""A burst of deliveries at fixed concurrency, from its own process.

The load generator runs apart from the bench process, which also serves the Secret Manager,
token and Dataloop stand-ins: in one interpreter the senders' threads would take the GIL
from the stand-ins and slow the very peers being measured. Each sender keeps one
keep-alive connection, as Eventarc's push client does, and takes the next delivery as
soon as its previous one is answered.

Run as ``python -m bench.load`` with a JSON spec on stdin (``url``, ``concurrency``,
``deliveries``: ``[{"headers", "body"}]``); prints one JSON result on stdout.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:  # the load process imports nothing heavy: it starts once per burst
    from bench.notifications import Delivery

REQUEST_TIMEOUT = 60.0


@dataclass(frozen=True)
class BurstResult:
    """How a burst went: wall time from first send to last answer, statuses, latency percentiles."""

    seconds: float
    statuses: dict[int, int]
    p50_ms: float
    p99_ms: float

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    @property
    def all_ok(self) -> bool:
        return set(self.statuses) == {200}


def burst(url: str, deliveries: Sequence[Delivery], concurrency: int, *, timeout: float = 600.0) -> BurstResult:
    """Send ``deliveries`` to ``url`` from a separate process; see the module docstring.

    Raises:
        RuntimeError: the load process failed.
    """
    spec = {"url": url, "concurrency": concurrency, "deliveries": [d.to_json() for d in deliveries]}
    completed = subprocess.run(
        [sys.executable, "-m", "bench.load"],
        cwd=Path(__file__).resolve().parent.parent,  # the repository root, where `bench` is importable
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"load generator failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    result = json.loads(completed.stdout)
    return BurstResult(
        seconds=result["seconds"],
        statuses={int(k): v for k, v in result["statuses"].items()},
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
    )


def _run(url: str, deliveries: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    lock = threading.Lock()
    cursor = iter(deliveries)
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    failures: list[str] = []
    ready = threading.Barrier(concurrency + 1)

    def sender() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT)
        ready.wait()
        while True:
            with lock:
                item = next(cursor, None)
            if item is None:
                break
            body = item["body"].encode()
            started = time.perf_counter()
            try:
                connection.request("POST", path, body=body, headers=item["headers"])
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                # The server may close an idle keep-alive connection between two requests.
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT)
                try:
                    connection.request("POST", path, body=body, headers=item["headers"])
                    response = connection.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException) as again:
                    with lock:
                        failures.append(f"{type(exc).__name__} then {type(again).__name__}: {again}")
                    status = 0
            elapsed = time.perf_counter() - started
            with lock:
                statuses[status] += 1
                latencies.append(elapsed)
        connection.close()

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    return {
        "seconds": seconds,
        "statuses": dict(statuses),
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "failures": failures[:5],
    }


def main() -> None:
    spec = json.load(sys.stdin)
    json.dump(_run(spec["url"], spec["deliveries"], int(spec["concurrency"])), sys.stdout)


if __name__ == "__main__":
    main()
