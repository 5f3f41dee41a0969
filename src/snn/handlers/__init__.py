"""Lambda entry points, one module per function. Each is thin: read and validate the event, call
its stage in `snn.stages` on S3 and DynamoDB, return a small dict (keys, shapes, scalars; never a
matrix). Each module's docstring shows the event it takes and the result it returns; the same
events are in events/, for `sam local invoke`.

Configuration comes from the environment, the same for every function: SNN_BUCKET and SNN_TABLE
(set by template.yaml), SNN_BLAS_THREADS (how many threads numpy's BLAS may use), and
AWS_ENDPOINT_URL when a stage runs against an emulator.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger

from snn import blas, keys, stages
from snn.errors import EventError
from snn.stores import DynamoRunTable, S3Store, aws_client
from snn.stores.clients import invoked_as

logger = Logger(service="snn")

Event = dict[str, Any]
# by function too: the local engine runs every function in one process (`invoked_as`)
_contexts: dict[tuple[str | None, str, str, str | None], stages.Context] = {}

# The fields an event may carry, and their types. Integers must be >= 0.
FIELD_TYPES: dict[str, type] = {
    "run_id": str,
    "epoch": int,
    "batch": int,
    "layer": int,
    "shard": int,
    "parameters_key": str,
    "train_key": str,
    "test_key": str,
    "data_key": str,
    "error": str,
    "cause": str,
    "execution_name": str,
    "state_machine_arn": str,
    "execution_input": dict,
    "image_base64": str,
    "image_key": str,
}
LOGGED = ("run_id", "epoch", "batch", "layer", "shard", "execution_name")
# The fields of a step's events: of Loss and Commit, and of the stages of one shard.
STEP = ("run_id", "epoch", "batch")
SHARD = (*STEP, "layer", "shard")


class StepFunctionsExecutions:
    """Starting the next execution of the state machine (ContinueAsNew), idempotently."""

    def __init__(self, client: Any = None) -> None:
        self.client = client or aws_client("stepfunctions")

    def start(self, state_machine_arn: str, name: str, execution_input: str) -> None:
        """Start `name`. StartExecution is idempotent only while an execution of that name is
        running with the same input; otherwise it answers ExecutionAlreadyExists. An execution
        of that name with the same input, running or ended, is the one wanted: nothing to do.
        With another input, it is a conflict."""
        try:
            self.client.start_execution(
                stateMachineArn=state_machine_arn, name=name, input=execution_input
            )
        except self.client.exceptions.ExecutionAlreadyExists:
            arn = state_machine_arn.replace(":stateMachine:", ":execution:") + ":" + name
            existing = self.client.describe_execution(executionArn=arn)
            if json.loads(existing.get("input") or "null") != json.loads(execution_input):
                raise EventError(
                    f"execution {name} exists with another input; it cannot carry this run"
                ) from None


def stage_context() -> stages.Context:
    """The stores of this function, built once per container (per bucket, table and endpoint)."""
    bucket = os.environ.get("SNN_BUCKET")
    table = os.environ.get("SNN_TABLE")
    if not bucket or not table:
        raise EventError("SNN_BUCKET and SNN_TABLE must be set in the function's environment")
    key = (invoked_as.get(), bucket, table, os.environ.get("AWS_ENDPOINT_URL"))
    ctx = _contexts.get(key)
    if ctx is None:
        blas.use_threads(blas.from_environment())
        ctx = _contexts[key] = stages.Context(
            S3Store(bucket), DynamoRunTable(table), StepFunctionsExecutions()
        )
    return ctx


def reset() -> None:
    """Forget the stores (a new emulated account)."""
    _contexts.clear()


def read_event(event: Any, *names: str, optional: tuple[str, ...] = ()) -> Event:
    """The named fields of the event, each present and of its type (optional ones may be
    absent); the run id checked, as it becomes part of S3 keys. Anything else is an EventError
    that names the field."""
    if not isinstance(event, dict):
        raise EventError(f"the event must be a JSON object, got {type(event).__name__}")
    missing = [n for n in names if n not in event]
    if missing:
        raise EventError("event is missing " + ", ".join(missing))
    out = {}
    for n in (*names, *(o for o in optional if o in event)):
        v = event[n]
        kind = FIELD_TYPES[n]
        if not isinstance(v, kind) or isinstance(v, bool):
            raise EventError(f"event field {n} must be {kind.__name__}, got {v!r}")
        if kind is int and v < 0:
            raise EventError(f"event field {n} must be >= 0, got {v}")
        out[n] = v
    keys.check_run_id(out["run_id"])
    if "execution_name" in out:
        keys.check_execution_name(out["execution_name"])
    return out


def handle(
    event: Any,
    fields: tuple[str, ...],
    body: Callable[[stages.Context, Event], dict[str, Any]],
    optional: tuple[str, ...] = (),
    prepare: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Read the event's `fields` (after `prepare`, for an event of another service's shape),
    run `body` on this function's stores and return its result. A rejected event (malformed,
    or refused by the stage's preconditions) is logged as such and raised, so the caller sees
    the function fail."""
    logger.thread_safe_clear_keys()  # a warm container keeps the last call's keys
    try:
        parsed = read_event(prepare(event) if prepare else event, *fields, optional=optional)
        logger.thread_safe_append_keys(**{k: parsed[k] for k in LOGGED if k in parsed})
        result = body(stage_context(), parsed)
    except EventError as exc:
        logger.warning("rejected", reason=str(exc), error_type=type(exc).__name__)
        raise
    logger.debug("done", result=result)
    return result
