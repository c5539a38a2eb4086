"""The yardstick for cold starts: a functions-framework CloudEvent function that does nothing.

Whatever it costs to start (the interpreter, functions-framework, Flask, gunicorn) every
function pays too; ``on_push``'s cold start is reported as a multiple of this one.
"""

import functions_framework


@functions_framework.cloud_event
def hello(event):
    """Answer 200 and nothing else."""
    return None
