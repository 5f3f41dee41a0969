"""ContinueAsNew: carry a long run on in a new execution of the same state machine.

A Standard execution fails at 25,000 history events, so the state machine hands the run over
every few hundred or thousand steps (see snn.epoch.steps_per_execution). The next execution
gets the same input, starts at Init (which returns the plan from the committed epoch) and is
named after that step (its epoch, and its batch with mini-batches), so a retried hand-over
starts nothing twice.

Event (events/continue_as_new.json):
    {"run_id": "sample", "epoch": 58, "batch": 0, "execution_name": "sample",
     "state_machine_arn": "arn:aws:states:us-east-1:123456789012:stateMachine:snn-training",
     "execution_input": {"run_id": "sample", "parameters_key": "runs/sample/parameters.json",
                         "train_key": "uploads/<sha256>/train_catvnoncat.h5",
                         "test_key": "uploads/<sha256>/test_catvnoncat.h5"}}
Result:
    {"execution_name": "sample-e0000058"}

Refused, with nothing started or changed, unless the run is RUNNING at that step, is carried by
the calling execution, and the input is the run's own. The run record names the next execution
only once it exists; a retry that finds it named succeeds at once.
"""

import re
from typing import Any

from snn import stages
from snn.errors import EventError
from snn.handlers import Event, handle

STATE_MACHINE_ARN = re.compile(
    r"arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:[A-Za-z0-9_-]{1,80}"
)


def _continue(ctx: stages.Context, event: Event) -> dict[str, Any]:
    if not STATE_MACHINE_ARN.fullmatch(event["state_machine_arn"]):
        raise EventError(f"invalid state_machine_arn {event['state_machine_arn']!r}")
    return stages.continue_as_new(ctx, **event)


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    return handle(
        event,
        ("run_id", "epoch", "batch", "execution_name", "state_machine_arn", "execution_input"),
        _continue,
    )
