"""Shared code of the Dataloop <-> Google Artifact Registry functions.

Everything a function imports lives here so that a deployed function is its thin
``main.py`` plus this package. Modules that need a Google or HTTP library import it
where it is used, so that a function pays at cold start only for what it calls.
"""
