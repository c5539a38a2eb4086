"""Provisioning requests: provision, deprovision, rotate, test and status of an integration.

``RequestHandler`` (handler.py) is the ``requests`` function's workflow; it validates with
shared.requests_schema and dispatches to ``Provisioner`` (provision.py), ``Deprovisioner``
(deprovision.py), the rotation workflow, ``ImageCheck`` (image_check.py) and
``StatusReport`` (shared/status.py).
"""

from shared.provisioning.deprovision import Deprovisioner
from shared.provisioning.handler import RequestHandler
from shared.provisioning.image_check import ImageCheck
from shared.provisioning.provision import Provisioner, account_display_name
from shared.provisioning.pull_check import PullCheck

__all__ = ["Deprovisioner", "ImageCheck", "Provisioner", "PullCheck", "RequestHandler", "account_display_name"]
