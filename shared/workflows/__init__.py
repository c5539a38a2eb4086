"""What the system does: push tests, provisioning, rotation, the sweep, status.

Workflows reach the outside world only through the interfaces in ``shared.ports``, so they run unchanged against in-memory fakes and the real adapters.
"""
