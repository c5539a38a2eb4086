"""Zero-downtime rotation of the service-account keys Dataloop pulls with.

- :mod:`shared.rotation.workflow` — :class:`KeyRotation`, the create → test → set → finish run;
- :mod:`shared.rotation.probe` — the test step: does a key pull yet?
- :mod:`shared.rotation.state` — what the secret records: aliases, lease, retired keys, due-ness;
- :mod:`shared.rotation.messages` — what arrives on the rotation topic and where it goes;
- :mod:`shared.sweep` (beside this package) — the scheduled fan-out.
"""

from shared.rotation.messages import RotationMessages
from shared.rotation.probe import KeyProbe, ProbeResult
from shared.rotation.workflow import KIND, KeyRotation, LeaseLost, StepReport

__all__ = ["KIND", "KeyProbe", "KeyRotation", "LeaseLost", "ProbeResult", "RotationMessages", "StepReport"]
