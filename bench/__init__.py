"""The performance benchmark: ``python -m bench`` prints one table.

Modules: :mod:`bench.run` (the run and its table), one per measurement
(:mod:`bench.coldstart`, :mod:`bench.burst`, :mod:`bench.sweep`), and the tools they share
(:mod:`bench.cloud`, :mod:`bench.launch`, :mod:`bench.load`, :mod:`bench.proxy`,
:mod:`bench.notifications`, :mod:`bench.table`, :mod:`bench.machine`). The functions it
measures ``on_push`` against live here too: ``hello/`` (cold-start yardstick), ``naive/``,
``bare/`` and ``bare_publish/`` (burst yardsticks, sharing :mod:`bench.baseline`).
"""
