"""The domain: images, keys, messages, the managed record, the access policy, outcomes.

Nothing here performs I/O or imports an adapter; workflows and adapters both build on it.
"""
