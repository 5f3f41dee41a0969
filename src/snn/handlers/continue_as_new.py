"""ContinueAsNew stage: carry a long run on in a new execution of the same state machine.

A Standard execution fails at 25,000 history events, so the state machine hands the run over
every few hundred or thousand epochs (see stages.epochs_per_execution). The next execution gets
the same input, starts at Init (which returns the plan from the committed epoch) and is named
after that epoch, so a retried hand-over starts nothing twice: Step Functions answers a start
with the same name and input with the execution that already exists.
"""

import json
import re
from typing import Any

from snn import stages
from snn.errors import EventError
from snn.handlers import stage
from snn.store import aws_client, execution_name

STATE_MACHINE_ARN = re.compile(
    r"arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:[A-Za-z0-9_-]{1,80}"
)
INPUT_FIELDS = {"run_id", "parameters_key", "train_key", "test_key"}


def _continue(
    ctx: stages.Context,
    run_id: str,
    epoch: int,
    state_machine_arn: str,
    execution_input: dict[str, Any],
) -> dict[str, Any]:
    if not STATE_MACHINE_ARN.fullmatch(state_machine_arn):
        raise EventError(f"invalid state_machine_arn {state_machine_arn!r}")
    if set(execution_input) != INPUT_FIELDS or execution_input["run_id"] != run_id:
        raise EventError(
            "execution_input must be the run's own input, with exactly "
            + ", ".join(sorted(INPUT_FIELDS))
        )
    p = ctx.parameters(run_id)
    record = ctx.runs.get(run_id, ("committed_epoch",)) or {}
    if int(record.get("committed_epoch", -1)) != epoch or not 0 <= epoch < p.epochs:
        raise EventError(
            f"run {run_id} is at epoch {record.get('committed_epoch')}: "
            f"cannot continue it from epoch {epoch}"
        )
    name = execution_name(run_id, epoch)
    ctx.runs.update(run_id, {"execution": name})
    aws_client("stepfunctions").start_execution(
        stateMachineArn=state_machine_arn,
        name=name,
        input=json.dumps(execution_input, sort_keys=True),
    )
    return {"execution_name": name}


handler = stage("run_id", "epoch", "state_machine_arn", "execution_input")(_continue)
