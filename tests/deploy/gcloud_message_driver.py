"""Decodes config files into the API messages gcloud itself sends, for the offline check.

Executed by *gcloud's own Python*, with gcloud's SDK root as the only argument; reads a JSON
list of ``[api, version, message, path]`` on stdin and writes, for each, the fields the
message does not know and any value it refuses (an unknown enum value, a wrong type). gcloud
would send an unknown field along unchecked and the API would refuse it on the day of the
deployment; here it fails a test instead.

Only the standard library and gcloud's own modules may be imported here.
"""

import json
import os
import sys


def _messages(sdk_root):
    sys.path.insert(0, os.path.join(sdk_root, "lib"))
    import gcloud  # the SDK's lib/gcloud.py: puts gcloud's vendored packages on sys.path

    fix = getattr(gcloud, "_fix_google_module", None)
    if fix is not None:
        fix()
    reorder = getattr(gcloud, "reorder_sys_path", None)
    if reorder is not None:
        sys.path = reorder(sys.path)
    from apitools.base.protorpclite import messages as protorpc
    from apitools.base.py import encoding
    from googlecloudsdk.api_lib.util import apis

    return apis, encoding, protorpc


def _unknown(message, protorpc, path=""):
    found = [f"{path}{name}" for name in message.all_unrecognized_fields()]
    for field in message.all_fields():
        value = message.get_assigned_value(field.name)
        if not isinstance(field, protorpc.MessageField) or value is None:
            continue
        for index, item in enumerate(value if field.repeated else [value]):
            where = f"{path}{field.name}[{index}]." if field.repeated else f"{path}{field.name}."
            found += _unknown(item, protorpc, where)
    return found


def main():
    apis, encoding, protorpc = _messages(sys.argv[1])
    results = []
    for api, version, name, path in json.load(sys.stdin):
        with open(path, encoding="utf-8") as file:
            body = json.load(file)
        try:
            message = encoding.DictToMessage(body, getattr(apis.GetMessagesModule(api, version), name))
            problems = _unknown(message, protorpc)
        except Exception as exc:  # a refused value is a result too
            problems = [f"{type(exc).__name__}: {exc}"]
        results.append({"path": path, "problems": problems})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
