"""The ``requests`` function's workflow: one message in, one ``request`` outcome out.

Every outcome carries the request's ``request_id`` and its action, including rejections
(the id is read even from an otherwise invalid request, so the operator waiting for a
reply gets it). Permanent failures become ``failed`` replies; only transient failures
escape, so that Pub/Sub redelivers and the idempotent workflows resume.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.core import logs
from shared.core.errors import PermanentError, RejectedMessage
from shared.model.events import PubSubMessage
from shared.model.images import is_loopback_host
from shared.model.policy import AccessPolicy, NotAllowed
from shared.model.request import (
    DeprovisionRequest,
    ImageTestRequest,
    InvalidRequest,
    ProvisionRequest,
    Request,
    RotateRequest,
    StatusRequest,
    parse_request,
)
from shared.model.results import Outcome, Status
from shared.workflows.provisioning.deprovision import Deprovisioner
from shared.workflows.provisioning.image_check import ImageCheck
from shared.workflows.provisioning.provision import Provisioner
from shared.workflows.provisioning.steps import KIND
from shared.workflows.status import StatusReport

if TYPE_CHECKING:  # the seam's type only: a request that never rotates loads no rotation code
    from shared.workflows.rotation.messages import Rotator

logger = logging.getLogger(__name__)


class RequestHandler:
    """Validates a request and hands it to the workflow for its action.

    Each workflow is built on first use, so a ``status`` request never pays for the
    Dataloop or rotation set-up. A provision request is held to the access policy before
    its workflow is even built, so a refused request makes no remote call at all.
    """

    def __init__(
        self,
        *,
        provisioner: Callable[[], Provisioner],
        deprovisioner: Callable[[], Deprovisioner],
        rotation: Callable[[], Rotator],
        image_check: Callable[[], ImageCheck],
        status: Callable[[], StatusReport],
        policy: AccessPolicy,
        allow_loopback_registries: bool = False,
    ) -> None:
        self._policy = policy
        self._allow_loopback = allow_loopback_registries
        self._provisioner = provisioner
        self._deprovisioner = deprovisioner
        self._rotation = rotation
        self._image_check = image_check
        self._status = status

    def handle(self, message: PubSubMessage) -> Outcome:
        """The outcome of the request in ``message``.

        Raises:
            TransientError: redeliver (the workflows resume where they stopped).
        """
        try:
            request = parse_request(message.data)
        except InvalidRequest as exc:
            return Outcome(
                KIND,
                Status.REJECTED,
                exc.reason,
                code=exc.code,
                subject={"action": exc.action} if exc.action else {},
                details={"errors": exc.errors},
                request_id=exc.request_id,
            )
        with logs.bound(request_id=request.request_id, action=request.action):
            try:
                outcome = self.dispatch(request)
            except NotAllowed as exc:
                outcome = Outcome(
                    KIND,
                    Status.REJECTED,
                    exc.reason,
                    code=exc.code,
                    details={"errors": [exc.reason], "field": exc.field},
                )
            except PermanentError as exc:  # includes RejectedMessage from deeper down
                status = Status.REJECTED if isinstance(exc, RejectedMessage) else Status.FAILED
                outcome = Outcome(KIND, status, exc.reason, code=exc.code)
        outcome.request_id = request.request_id
        outcome.subject.setdefault("action", request.action)
        name = getattr(request, "name", None)
        if name:
            outcome.subject.setdefault("name", name)
        return outcome

    def dispatch(self, request: Request) -> Outcome:
        if isinstance(request, ProvisionRequest):
            if is_loopback_host(request.registry_host) and not self._allow_loopback:
                raise NotAllowed(
                    "/registry_host",
                    "loopback registry hosts are accepted only on the local cloud (ALLOW_LOOPBACK_REGISTRIES)",
                )
            self._policy.check_provision(request)
            return self._provisioner().provision(request)
        if isinstance(request, DeprovisionRequest):
            return self._deprovisioner().deprovision(request)
        if isinstance(request, RotateRequest):
            return self._rotate(request)
        if isinstance(request, ImageTestRequest):
            return self._image_check().test(request)
        if isinstance(request, StatusRequest):
            return self._status().status(request)
        raise AssertionError(f"no workflow for {type(request).__name__}")  # parse_request builds only the above

    def _rotate(self, request: RotateRequest) -> Outcome:
        """Hand over to the rotation workflow and answer in the request's terms.

        The rotation's own outcome (``ok``, ``skipped`` when not due, ``failed``) is kept
        whole in ``details.rotation``; the reply is ``failed`` only when the rotation failed.
        """
        rotation = self._rotation().rotate(
            request.secret_id, force=request.force, dry_run=request.dry_run, request_id=request.request_id
        )
        status = rotation.status if rotation.status in (Status.FAILED, Status.REJECTED) else Status.OK
        details: dict[str, Any] = {
            "rotation": {
                "status": rotation.status.value,
                "reason": rotation.reason,
                "code": rotation.code,
                "details": rotation.details,
            }
        }
        return Outcome(
            KIND,
            status,
            rotation.reason,
            code=rotation.code,
            subject={"action": request.action, "name": request.name},
            details=details,
            durations_ms=dict(rotation.durations_ms),
            request_id=request.request_id,
        )
