"""Zero-downtime rotation of the service-account keys Dataloop pulls with.

Laid out like AWS Secrets Manager's rotation template, so that the protocol can be read
in one place and each part checked on its own: :mod:`.workflow` is the dispatcher
(admission, then the steps in order, then the report) and holds the protocol's
description; :mod:`.steps` the four steps; :mod:`.cleanup`, :mod:`.rollback`,
:mod:`.lease`, :mod:`.admission`, :mod:`.plan` and :mod:`.report` what the steps and the
dispatcher share; :mod:`.run` the state of one run; :mod:`.messages` what arrives on the rotation topic. Beside
this package: the test step's registry check, :mod:`shared.workflows.key_probe`, which
provisioning's first key passes too, and the scheduled fan-out, :mod:`shared.workflows.sweep`.

Import from the defining module: this package re-exports nothing, so that importing one
part never loads the rest. When a rotation is due is the model's
(:mod:`shared.model.schedule`), so the sweep and ``status`` need nothing from here.
"""
