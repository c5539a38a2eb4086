"""Deploy the functions to Google Cloud with one idempotent command, or take them down again.

    python deploy/deploy.py --config deploy/config.toml [--dry-run]
    python deploy/deploy.py teardown --config deploy/config.toml [--dry-run] [--delete-credentials]
    python deploy/deploy.py roles --config deploy/config.toml      # the README's roles table
    python deploy/deploy.py monitoring --config deploy/config.toml # write the alert and dashboard configs, to read

``deploy`` enables the APIs, creates the topics (``gcr`` only if absent), the dead-letter
subscription, one service account per function and one for the triggers, grants each only
what it needs, stages and deploys the three gen2 functions with Pub/Sub triggers (retry
on, bounded by a dead-letter policy), creates or updates the scheduler job, and the log-based
metrics, alert policies, notification channels and dashboard (deploy/README.md, "Alerts and the
dashboard"). A repository
in another project gets that project's ``gcr`` topic delivered to ``on_push`` by a push
subscription (checked before anything changes; deploy/README.md, "Repositories in other
projects"). Running it again updates what changed and creates nothing twice. ``--dry-run`` prints every command,
with the reason for it, and runs none (it needs neither gcloud credentials nor network).

``--project``/``--region``/``--project-number`` override the file (Cloud Build passes its
substitutions this way). Exit status: 0 done, 1 a command failed (re-run to resume), 2 the
settings are invalid.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy import access, monitoring, plan, stage
from deploy.runner import GcloudError, PlanRunner, Run, gcloud_runner
from deploy.settings import DeploySettings, SettingsError, load

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
#: Beside the staged functions: the metric, policy and dashboard files the plan's commands read.
MONITORING_SUBDIR = "monitoring"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python deploy/deploy.py",
        description="Deploy dataloop-gar to Google Cloud (idempotent), or tear it down.",
    )
    parser.add_argument("action", nargs="?", default="deploy", choices=("deploy", "teardown", "roles", "monitoring"))
    parser.add_argument("--config", type=Path, required=True, help="settings file (see deploy/config.example.toml)")
    parser.add_argument("--dry-run", action="store_true", help="print every command and why; run none")
    parser.add_argument("--project", help="override the settings' project")
    parser.add_argument("--region", help="override the settings' region")
    parser.add_argument("--project-number", help="skip the project-number lookup (and show it in a dry run)")
    parser.add_argument(
        "--delete-credentials",
        action="store_true",
        help="teardown: also delete the Dataloop credentials secret (kept by default: it holds your credential)",
    )
    parser.add_argument(
        "--stage-dir",
        type=Path,
        default=stage.DEFAULT_OUT,
        help=f"where function sources are staged before upload (default {stage.DEFAULT_OUT})",
    )
    return parser


def next_steps(settings: DeploySettings) -> str:
    """What a person does after the first deployment: credentials, then an integration."""
    s = settings
    org = s.dataloop_org_id or "ORG_ID"
    repository = s.repositories[0] if s.repositories else None
    location = repository.location if repository else s.region
    repo_id = repository.repository if repository else "REPOSITORY"
    return "\n".join(
        [
            "Deployed. Next:",
            f"  1. Put the Dataloop API credentials in the secret {s.dataloop_credentials_secret} (once):",
            "       printf '%s' '{\"api_key\": \"…\"}' | "
            f"gcloud secrets versions add {s.dataloop_credentials_secret} --data-file=- --project={s.project}",
            "  2. Provision an integration and wait for the answer:",
            f"       GCP_PROJECT={s.project} REQUESTS_TOPIC={s.topics.requests} RESULTS_TOPIC={s.topics.results} \\",
            f"       python -m shared.cli provision --name team-a --org {org} --project {s.project} \\",
            f"         --location {location} --repository {repo_id} --create-sa {s.created_account_prefix}team-a --wait",
        ]
    )


def trust_summary(settings: DeploySettings) -> str:
    """Who may ask, and what they may ask for: the two halves of the trust boundary, in words."""
    s = settings
    requesters = [g.member for g in access.requester_grants(s)]
    lines = [f"Who may publish requests on topic {s.topics.requests} (roles/pubsub.publisher):"]
    lines += [f"  - {member}" for member in requesters] or [
        "  - nobody is granted it here ([access] requesters is empty): only principals with project-wide "
        "Pub/Sub rights (owners, editors) can"
    ]
    lines.append("Access policy passed to every function (ACCESS_POLICY), enforced on every request and record:")
    if not s.dataloop_org_ids:
        lines.append(
            "  (no Dataloop organization is allowed: set [access] dataloop_org_ids or [dataloop] org_id, "
            "or every provision request is rejected)"
        )
    policy = json.loads(s.access_policy().to_json())
    lines += [f"  {line}" for line in json.dumps(policy, indent=2).splitlines()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, run: Run | None = None, out: TextIO = sys.stdout) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load(args.config, project=args.project, region=args.region, project_number=args.project_number)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:
        print(f"cannot read {args.config}: {exc}", file=sys.stderr)
        return EXIT_INVALID

    if args.action == "roles":
        print(access.roles_table(settings), file=out)
        return EXIT_OK

    stage_dir = args.stage_dir.resolve()
    monitoring_dir = stage_dir / MONITORING_SUBDIR
    if args.action == "monitoring":
        for path in monitoring.write(settings, monitoring_dir):
            print(path, file=out)
        return EXIT_OK
    if args.action == "deploy":
        steps = plan.deploy_steps(settings, source_root=str(stage_dir), monitoring_dir=str(monitoring_dir))
    else:
        steps = plan.teardown_steps(settings, delete_credentials=args.delete_credentials)

    if args.dry_run:
        PlanRunner(run=_refuse, out=out).print_plan(steps, plan.placeholders(settings))
        if args.action == "deploy":
            print(
                f"\nThe monitoring configs these commands read are written to {monitoring_dir} when deploy runs; "
                f"to read them now: python deploy/deploy.py monitoring --config {args.config}",
                file=out,
            )
            print("\n" + trust_summary(settings), file=out)
        return EXIT_OK

    if run is None:
        executable = shutil.which("gcloud")
        if executable is None:
            print("gcloud is not on PATH: install the Google Cloud CLI (https://cloud.google.com/sdk)", file=sys.stderr)
            return EXIT_FAILED
        run = gcloud_runner(executable)
    facts = {"project_number": settings.project_number} if settings.project_number else {}
    try:
        if args.action == "deploy":
            for key, path in stage.stage_all(stage_dir).items():
                print(f"staged {key}: {path}", file=out)
            monitoring.write(settings, monitoring_dir)
            print(f"wrote the monitoring configs: {monitoring_dir}", file=out)
        PlanRunner(run=run, out=out).execute(steps, facts)
    except (GcloudError, stage.StageError) as exc:
        print(
            f"\n{exc}\n\nNothing is left half-made that a re-run cannot finish: fix the cause and run again.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if args.action == "deploy":
        print("\n" + next_steps(settings), file=out)
    else:
        print(
            "\nTorn down. Managed integrations were not touched (deprovision them while the functions run).", file=out
        )
    return EXIT_OK


def _refuse(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """The dry run's gcloud: printing the plan must never execute any of it."""
    raise RuntimeError(f"the dry run must not run gcloud, but tried: {' '.join(argv)}")


if __name__ == "__main__":
    sys.exit(main())
