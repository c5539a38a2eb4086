"""Provisioning requests: provision, deprovision, rotate, test and status of an integration.

``RequestHandler`` (handler.py) is the ``requests`` function's workflow; it validates with
shared.model.request and dispatches to ``Provisioner`` (provision.py), ``Deprovisioner``
(deprovision.py), the rotation workflow, ``ImageCheck`` (image_check.py) and
``StatusReport`` (shared/workflows/status.py). Nothing is re-exported here, so importing
one of them loads only the modules it needs and each name has one import path.
"""
