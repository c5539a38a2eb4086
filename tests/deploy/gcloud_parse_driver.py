"""Runs many command lines through one gcloud CLI object, for the offline parse check.

Executed by *gcloud's own Python* (not the project's), with gcloud's SDK root as the only
argument; reads a JSON list of argv lists on stdin and writes, for each, the exit status
and what gcloud printed. Starting gcloud costs about a second of CPU; building its CLI
once and executing every command in it costs a few milliseconds each. ``Execute`` is what
the ``gcloud`` command itself calls, so the parser, the validators and the error handling
are exactly the installed ones.

Only the standard library and gcloud's own modules may be imported here.
"""

import json
import os
import sys
import tempfile


def _load_cli(sdk_root):
    sys.path.insert(0, os.path.join(sdk_root, "lib"))
    import gcloud  # the SDK's lib/gcloud.py: puts gcloud's vendored packages on sys.path

    fix = getattr(gcloud, "_fix_google_module", None)
    if fix is not None:
        fix()
    reorder = getattr(gcloud, "reorder_sys_path", None)
    if reorder is not None:
        sys.path = reorder(sys.path)
    from googlecloudsdk import gcloud_main

    return gcloud_main.CreateCLI([])


def _execute(cli, argv):
    """Exit status and combined output of one command, captured at the file-descriptor level."""
    with tempfile.TemporaryFile(mode="w+") as capture:
        saved = os.dup(1), os.dup(2)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(capture.fileno(), 1)
        os.dup2(capture.fileno(), 2)
        try:
            cli.Execute(list(argv))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:  # a crash is a result too: report it, go on
            code = f"crash: {type(exc).__name__}: {exc}"
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        capture.seek(0)
        return code, capture.read()


def main():
    commands = json.load(sys.stdin)
    result_stream = os.fdopen(os.dup(1), "w")
    cli = _load_cli(sys.argv[1])
    results = []
    for argv in commands:
        code, output = _execute(cli, argv)
        results.append({"argv": argv, "exit": code, "output": output})
    json.dump(results, result_stream)
    result_stream.close()


if __name__ == "__main__":
    main()
