"""Provisioning requests: provision, deprovision, rotate, test and status of an integration.

``RequestHandler`` (handler.py) is the ``requests`` function's workflow; it validates with
shared.model.request and dispatches to ``Provisioner`` (provision.py), ``Deprovisioner``
(deprovision.py), the rotation workflow, ``ImageCheck`` (image_check.py) and
``StatusReport`` (shared/workflows/status.py).
"""

from shared.workflows.provisioning.deprovision import Deprovisioner
from shared.workflows.provisioning.handler import RequestHandler
from shared.workflows.provisioning.image_check import ImageCheck
from shared.workflows.provisioning.provision import Provisioner, account_display_name
from shared.workflows.provisioning.pull_check import PullCheck

__all__ = ["Deprovisioner", "ImageCheck", "Provisioner", "PullCheck", "RequestHandler", "account_display_name"]
