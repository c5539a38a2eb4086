"""Runs a plan's steps with gcloud, or prints them (the dry run).

The runner owns the judgement calls a plan cannot make by itself: whether a ``describe``
failed because the resource is absent (create it) or for any other reason (stop: a
permission or API problem must not be papered over by a create that fails more
confusingly); how long to wait for a just-created service account to become visible to
IAM; and that a teardown finding something already gone is done, not failed.
"""

from __future__ import annotations

import os
import re
import shlex
import string
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from deploy.plan import Kind, Step

#: gcloud's ways of saying "no such resource" (REST 404s, IAM's and Secret Manager's wording).
NOT_FOUND = re.compile(r"NOT_FOUND|not found|does not exist|was not found|404", re.IGNORECASE)
#: ... which must not be mistaken for a refusal that merely mentions existence.
REFUSED = re.compile(r"PERMISSION_DENIED|denied|403|has not been used|is disabled|UNAUTHENTICATED", re.IGNORECASE)
#: Long operations: a function build and rollout routinely takes minutes.
LONG_COMMANDS = (("functions", "deploy"), ("functions", "delete"), ("services", "enable"))
LONG_TIMEOUT_SECONDS = 1800.0
TIMEOUT_SECONDS = 300.0
#: Pauses while IAM catches up with a service account created moments ago.
SETTLE_WAITS = (5.0, 10.0, 20.0, 40.0)

Run = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


class GcloudError(RuntimeError):
    """A step failed; the message names the step, the command and what gcloud said."""


def gcloud_runner(executable: str = "gcloud") -> Run:
    """Run gcloud as a subprocess, prompts disabled, with a timeout per command."""
    env = {**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}

    def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        long = any(tuple(argv[: len(prefix)]) == prefix for prefix in LONG_COMMANDS)
        try:
            return subprocess.run(  # noqa: S603 - argv is built by the plan, never by a shell
                [executable, *argv],
                capture_output=True,
                text=True,
                env=env,
                timeout=LONG_TIMEOUT_SECONDS if long else TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess([executable, *argv], 124, "", f"timed out after {exc.timeout:g} s")

    return run


def resolve(argv: Sequence[str], facts: Mapping[str, str]) -> tuple[str, ...]:
    """Substitute ``${fact}`` in every argument."""
    try:
        return tuple(string.Template(arg).substitute(facts) if "${" in arg else arg for arg in argv)
    except KeyError as exc:
        raise GcloudError(f"the plan uses the fact {exc.args[0]!r} before a step looked it up") from None


def quoted(argv: Sequence[str]) -> str:
    return shlex.join(("gcloud", *argv))


class PlanRunner:
    """Executes or prints a plan, numbering each step and saying why it is there."""

    def __init__(
        self,
        run: Run | None = None,
        *,
        out: TextIO = sys.stdout,
        sleep: Callable[[float], None] = time.sleep,
        settle_waits: Sequence[float] = SETTLE_WAITS,
    ) -> None:
        self._run = run or gcloud_runner()
        self._out = out
        self._sleep = sleep
        self._settle_waits = tuple(settle_waits)

    # -- the dry run ----------------------------------------------------------------------------
    def print_plan(self, steps: Sequence[Step], facts: Mapping[str, str]) -> None:
        """Print every command of every step, facts shown as their placeholders.

        Commands that change something start their line with ``gcloud``; reads (probes,
        lookups) and alternatives are comment lines ``#   <label>: gcloud …``.
        """
        total = len(steps)
        for number, step in enumerate(steps, 1):
            self._say(f"# [{number}/{total}] {step.why}")
            if step.kind is Kind.LOOKUP:
                self._say(f"#   lookup {step.fact}: {quoted(resolve(step.argv, facts))}")
                self._say(f"#   (the dry run uses {step.fact} = {facts[step.fact or '']})")
                continue
            if step.kind is Kind.CHECK:
                self._say(f"#   check: {quoted(resolve(step.argv, facts))}")
                self._say("#   (stops the run unless it succeeds" + (" or finds nothing)" if step.missing_ok else ")"))
                continue
            if step.probe is not None:
                condition = "if present" if step.kind is Kind.DELETE else "if absent"
                if step.expect is not None:
                    condition = f"if it prints {step.expect!r}"
                if step.fact is not None:
                    condition = "if it prints a name" if step.kind is Kind.DELETE else "if it prints nothing"
                self._say(f"#   probe: {quoted(resolve(step.probe, facts))}")
                if step.fact is not None:
                    self._say(
                        f"#   (prints the name as {step.fact}; the dry run uses {step.fact} = {facts[step.fact]})"
                    )
                self._say(f"#   {condition}:")
            self._say(quoted(resolve(step.argv, facts)))
            if step.otherwise is not None:
                self._say(f"#   otherwise: {quoted(resolve(step.otherwise, facts))}")

    # -- the real run ---------------------------------------------------------------------------
    def execute(self, steps: Sequence[Step], facts: dict[str, str]) -> None:
        """Run the plan in order; stop at the first failure.

        Raises:
            GcloudError: with the step, the command and gcloud's own message.
        """
        total = len(steps)
        for number, step in enumerate(steps, 1):
            self._say(f"[{number}/{total}] {step.why}")
            try:
                self._execute(step, facts)
            except GcloudError as exc:
                raise GcloudError(f"step {number}/{total} ({step.why}) failed:\n{exc}") from None

    def _execute(self, step: Step, facts: dict[str, str]) -> None:
        if step.kind in (Kind.CREATE, Kind.DELETE) and step.fact is not None:
            self._by_search(step, facts)  # its commands name the fact the search finds
            return
        argv = resolve(step.argv, facts)
        if step.kind is Kind.LOOKUP:
            value = self._call(argv).stdout.strip()
            if not value:
                raise GcloudError(f"{quoted(argv)} printed nothing; cannot continue without {step.fact}")
            facts[step.fact or ""] = value
            self._say(f"    {step.fact} = {value}")
        elif step.kind is Kind.CHECK:
            if not self._present(argv, None) and not step.missing_ok:
                raise GcloudError(f"{quoted(argv)} found nothing")
            self._say("    ok")
        elif step.kind is Kind.RUN:
            self._call(argv, settle=step.settle, missing_ok=step.missing_ok)
        elif step.kind is Kind.CREATE:
            if not self._present(resolve(step.probe or (), facts), None):
                self._call(argv, settle=step.settle)
            elif step.otherwise is not None:
                self._call(resolve(step.otherwise, facts), settle=step.settle)
            else:
                self._say("    exists; left as it is")
        elif step.kind is Kind.DELETE:
            if self._present(resolve(step.probe or (), facts), step.expect):
                self._call(argv, missing_ok=True)
            else:
                self._say("    not there (or not ours); nothing to delete")

    def _by_search(self, step: Step, facts: dict[str, str]) -> None:
        """A resource the server names: the search prints its name (the fact), or nothing if absent."""
        fact = step.fact or ""
        found = self._call(resolve(step.probe or (), facts)).stdout.strip().splitlines()
        if found:
            facts[fact] = found[0].strip()
            self._say(f"    {fact} = {facts[fact]}")
        if step.kind is Kind.DELETE:
            if found:
                self._call(resolve(step.argv, facts), missing_ok=True)
            else:
                self._say("    not there (or not ours); nothing to delete")
        elif not found:
            made = self._call(resolve(step.argv, facts)).stdout.strip()
            if not made:
                raise GcloudError(f"{quoted(step.argv)} printed no name; cannot continue without {fact}")
            facts[fact] = made.splitlines()[0].strip()
            self._say(f"    {fact} = {facts[fact]}")
        elif step.otherwise is not None:
            self._call(resolve(step.otherwise, facts))
        else:
            self._say("    exists; left as it is")

    def _present(self, probe: tuple[str, ...], expect: str | None) -> bool:
        result = self._run(probe)
        if result.returncode == 0:
            return expect is None or result.stdout.strip() == expect
        if NOT_FOUND.search(result.stderr) and not REFUSED.search(result.stderr):
            return False
        raise GcloudError(f"{quoted(probe)} failed (exit {result.returncode}):\n{_tail(result.stderr)}")

    def _call(
        self, argv: tuple[str, ...], *, settle: bool = False, missing_ok: bool = False
    ) -> subprocess.CompletedProcess[str]:
        self._say(f"    $ {quoted(argv)}")
        waits = list(self._settle_waits) if settle else []
        while True:
            result = self._run(argv)
            if result.returncode == 0:
                return result
            missing = bool(NOT_FOUND.search(result.stderr)) and not REFUSED.search(result.stderr)
            if missing and missing_ok:
                self._say("    already gone")
                return result
            if missing and waits:
                wait = waits.pop(0)
                self._say(f"    not visible yet (IAM is eventually consistent); retrying in {wait:g} s")
                self._sleep(wait)
                continue
            raise GcloudError(f"{quoted(argv)} failed (exit {result.returncode}):\n{_tail(result.stderr)}")

    def _say(self, line: str) -> None:
        print(line, file=self._out, flush=True)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
