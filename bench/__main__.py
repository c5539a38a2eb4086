"""``python -m bench``: every performance measurement, as one table.

Needs what ``make demo`` needs (docker-registry, skopeo, the Pub/Sub emulator); takes a
few minutes on two cores. Ratios are comparable between machines, absolute times are not:
the table says which machine it ran on. Exits 1 if an event was not answered as expected
(the numbers would then be measuring a failure), otherwise 0, targets missed or not.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import machine
from bench.run import Config, run
from bench.table import render

COMMAND = "python -m bench"


def main(argv: list[str] | None = None) -> int:
    defaults = Config()
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=defaults.events, help="pushes per burst")
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="bursts per function (best counts)")
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="untimed pushes before the bursts")
    parser.add_argument("--cold-repeats", type=int, default=defaults.cold_repeats, help="cold starts per function")
    parser.add_argument("--images", type=int, default=defaults.images, help="distinct images in a burst")
    parser.add_argument("--integrations", type=int, default=defaults.integrations, help="managed secrets to sweep")
    parser.add_argument("--due", type=int, default=defaults.due, help="of which due for rotation")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (function logs)")
    args = parser.parse_args(argv)
    config = Config(
        events=args.events,
        rounds=args.rounds,
        warmup=args.warmup,
        cold_repeats=args.cold_repeats,
        images=args.images,
        integrations=args.integrations,
        due=args.due,
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    started = time.monotonic()
    try:
        report = run(config, workdir, progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    finally:
        if args.keep:
            print(f"working directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        render(
            report.rows,
            title=f"dataloop-gar performance (one run, {time.monotonic() - started:.0f} s)",
            machine=machine.describe(),
            command=COMMAND + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
        )
    )
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
