"""ExecutionFailed: mark a run FAILED when the execution that carries it fails, times out or is
stopped, whatever the cause. The target of an EventBridge rule on this stack's state machine.

Some failures end an execution without any state seeing them: a payload over 256 KB
(States.DataLimitExceeded), the 25,000-event history quota and other States.Runtime errors cannot
be caught by a Catch. Without this function such a run would stay RUNNING forever.

Event (events/execution_failed.json), as EventBridge delivers it:
    {"version": "0", "source": "aws.states",
     "detail-type": "Step Functions Execution Status Change",
     "detail": {"executionArn": "arn:aws:states:...:execution:snn-training:sample",
                "stateMachineArn": "arn:aws:states:...:stateMachine:snn-training",
                "name": "sample", "status": "FAILED",
                "input": "{\"run_id\": \"sample\", ...}",
                "error": "States.Runtime",
                "cause": "The execution reached the maximum number of history events (25000)."}}
Result:
    {"recorded": true, "status": "FAILED"}

Like RecordFailure, it marks only a RUNNING run carried by that execution (the run record names
it), once: an event for an execution that no longer carries the run, a duplicate event, or an
event for a run that failed already changes nothing.
"""

from __future__ import annotations

import json
import re
from typing import Any

from snn import keys, stages
from snn.errors import EventError
from snn.handlers import Event, handle

STATUSES = ("FAILED", "TIMED_OUT", "ABORTED")
SUFFIX = re.compile(r"-(e\d{7}(b\d{5})?|r\d+)$")


def parse(event: Any) -> Event:
    """The fields RecordFailure takes, from an EventBridge execution status change."""
    if not isinstance(event, dict) or event.get("source") != "aws.states":
        raise EventError("not a Step Functions event (source aws.states)")
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise EventError("the event has no detail object")
    status = detail.get("status")
    if status not in STATUSES:
        raise EventError(f"execution status {status!r} is not one of {', '.join(STATUSES)}")
    name = keys.check_execution_name(detail.get("name"))
    run_id = None
    try:
        execution_input = json.loads(detail.get("input") or "null")
        if isinstance(execution_input, dict):
            run_id = execution_input.get("run_id")
    except (TypeError, ValueError):
        pass
    if run_id is None:  # input left out of a large event: the name carries the run id
        run_id = SUFFIX.sub("", name)
    error = detail.get("error") or f"Execution{status.title().replace('_', '')}"
    cause = detail.get("cause") or f"execution {name} ended {status}"
    return {"run_id": run_id, "execution_name": name, "error": error, "cause": cause}


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    return handle(
        event,
        ("run_id", "execution_name", "error", "cause"),
        lambda ctx, e: stages.record_failure(ctx, **e),
        prepare=parse,
    )
