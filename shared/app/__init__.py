"""The composition root: per-instance wiring and the behaviour every entry point shares.

The operator's entry point, ``python -m shared.cli``, stays at the top of the package
because people type its name.
"""
