"""Lambda entry points, one module per stage. Each is thin: validate the event, call the stage
in `snn.stages` on S3 and DynamoDB, return a small dict (keys, shapes, scalars; no matrices).

Configuration comes from the environment, the same for every function: SNN_BUCKET and
SNN_TABLE (set by template.yaml), and AWS_ENDPOINT_URL when a stage runs against an emulator.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger

from snn import stages
from snn.errors import EventError
from snn.store import DynamoRunTable, S3Store, check_run_id

logger = Logger(service="snn")

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
_contexts: dict[tuple[str, str, str | None], stages.Context] = {}


def stage_context() -> stages.Context:
    """The stores of this function, built once per container (per bucket, table and endpoint)."""
    bucket = os.environ.get("SNN_BUCKET")
    table = os.environ.get("SNN_TABLE")
    if not bucket or not table:
        raise EventError("SNN_BUCKET and SNN_TABLE must be set in the function's environment")
    key = (bucket, table, os.environ.get("AWS_ENDPOINT_URL"))
    ctx = _contexts.get(key)
    if ctx is None:
        ctx = _contexts[key] = stages.Context(S3Store(bucket), DynamoRunTable(table))
    return ctx


def reset() -> None:
    """Forget the stores (tests that start a new emulated account)."""
    _contexts.clear()


FIELD_TYPES: dict[str, type] = {
    "run_id": str,
    "epoch": int,
    "layer": int,
    "shard": int,
    "parameters_key": str,
    "train_key": str,
    "test_key": str,
    "error": str,
    "cause": str,
    "execution_name": str,
    "state_machine_arn": str,
    "execution_input": dict,
}


def read_event(event: Any, *names: str, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """The named fields of the event, each present and of its type (optional ones may be
    absent); the run id checked as it becomes part of S3 keys. Anything else is an EventError
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
    check_run_id(out["run_id"])
    return out


def stage(
    *names: str, optional: tuple[str, ...] = ()
) -> Callable[[Callable[..., dict[str, Any]]], Handler]:
    """Make a Lambda handler of a stage function that takes (context, **fields)."""

    def wrap(fn: Callable[..., dict[str, Any]]) -> Handler:
        @functools.wraps(fn)
        def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
            fields = read_event(event, *names, optional=optional)
            logger.thread_safe_clear_keys()  # a warm container keeps the last call's keys
            logger.thread_safe_append_keys(
                **{k: v for k, v in fields.items() if k in ("run_id", "epoch", "layer", "shard")}
            )
            try:
                result = fn(stage_context(), **fields)
            except EventError as exc:
                logger.warning("rejected", reason=str(exc))
                raise
            logger.debug("done", result=result)
            return result

        return handler

    return wrap
