"""The local cloud: stand-ins for Google and Dataloop APIs, for the demo and the tests.

Development and test infrastructure only; nothing here ships inside a deployed function.
Each stand-in speaks the real service's wire format and status codes (docs/external-apis.md)
so that the project's real client libraries are what the tests exercise.
"""
