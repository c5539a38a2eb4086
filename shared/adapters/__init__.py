"""Clients of the outside world: Google APIs, the Docker registry protocol, Dataloop.

Each adapter imports its client library where it is used, so a function pays at cold
start only for the adapters it calls.
"""
