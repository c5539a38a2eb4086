"""Reliability and security evidence (issue 8): bad input, redelivery, concurrency, faults, leaks, limits."""
