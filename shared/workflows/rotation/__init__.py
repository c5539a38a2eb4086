"""Zero-downtime rotation of the service-account keys Dataloop pulls with.

- :mod:`shared.workflows.rotation.workflow` — :class:`KeyRotation`, the create → test → set → finish run;
- :mod:`shared.workflows.rotation.probe` — the test step: does a key pull yet?
- :mod:`shared.workflows.rotation.state` — what the secret records: aliases, lease, retired keys, due-ness;
- :mod:`shared.workflows.rotation.messages` — what arrives on the rotation topic and where it goes;
- :mod:`shared.workflows.sweep` (beside this package) — the scheduled fan-out.
"""
