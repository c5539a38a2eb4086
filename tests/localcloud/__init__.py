"""The stand-ins' own conformance tests: each follows the real API it plays, errors included."""
