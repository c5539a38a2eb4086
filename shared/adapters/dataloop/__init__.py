"""A client for Dataloop's REST API: registry integrations and services (docs/external-apis.md §5).

Built from what the dtlpy SDK sends, without depending on it: dtlpy pulls in numpy, aiohttp
and more at import, which a Cloud Function would pay for at every cold start. The shapes
the workflows reason about live in ``shared.model.dataloop``; this package is the wire.
"""
