"""RecordFailure: mark the run FAILED with the error the state machine caught (the execution then
fails with that error).

Event (events/record_failure.json):
    {"run_id": "sample", "execution_name": "sample", "error": "EventError",
     "cause": "{\"errorMessage\": \"...\", \"errorType\": \"EventError\"}"}
Result:
    {"recorded": true, "status": "FAILED"}

Only a RUNNING run carried by that execution is marked; otherwise nothing changes and the result
says so ({"recorded": false, "status": "SUCCEEDED"}, or "status": null for a run that Init never
created).
"""

from typing import Any

from snn import stages
from snn.handlers import handle


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    return handle(
        event,
        ("run_id", "execution_name", "error", "cause"),
        lambda ctx, e: stages.record_failure(ctx, **e),
    )
