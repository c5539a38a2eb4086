"""The per-instance wiring builds each adapter once, even when a cold instance takes events in parallel."""

from __future__ import annotations

import threading
import time

from shared.app.runtime import _Once


def test_concurrent_first_callers_share_one_built_adapter() -> None:
    built: list[object] = []

    def slow_builder() -> object:
        time.sleep(0.05)  # importing a client library takes this long and more
        adapter = object()
        built.append(adapter)
        return adapter

    once = _Once(slow_builder)
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(once())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)

    assert len(built) == 1, "each concurrent first caller built its own (and its own token cache)"
    assert seen == built * 8


def test_cache_clear_builds_afresh() -> None:
    once = _Once(object)
    first = once()
    once.cache_clear()
    assert once() is not first and once() is once()


def test_reset_forgets_every_built_adapter() -> None:
    from shared.app import runtime

    builders = [v for v in vars(runtime).values() if isinstance(v, _Once)]
    assert len(builders) >= 10  # every builder of the module is one
    runtime.reset()  # must not trip over anything else in the module
