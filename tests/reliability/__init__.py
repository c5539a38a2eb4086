"""Reliability and security evidence: bad input, redelivery, concurrency, faults, leaks, limits."""
