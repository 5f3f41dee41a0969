"""Driving a stack (deployed on AWS, or embedded in an emulator) through its public APIs:
upload the inputs, start the execution, follow the run, collect the run folder's contents.

The local and AWS engines run this same code; only the clients' endpoint differs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snn import store as keys
from snn.data import TEST_FILE, TRAIN_FILE
from snn.engines import OnEpoch
from snn.errors import RunFailed, SnnError
from snn.parameters import Parameters
from snn.report import RunResult, load_model

# AWS limits the local engine enforces (moto does not).
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_HISTORY_EVENTS = 25_000


@dataclass
class Stack:
    bucket: str
    table: str
    state_machine_arn: str
    s3: Any
    dynamodb: Any
    sfn: Any
    # Where execution histories come from, if not the public API (the local engine reads them
    # from its emulator directly, which is much cheaper for long histories).
    history_source: Callable[[str], list[dict[str, Any]]] | None = None

    @property
    def runs(self) -> keys.DynamoRunTable:
        return keys.DynamoRunTable(self.table, self.dynamodb)

    @property
    def objects(self) -> keys.S3Store:
        return keys.S3Store(self.bucket, self.s3)


def upload_inputs(stack: Stack, run_id: str, p: Parameters, data_dir: Path) -> dict[str, str]:
    """The execution input: the run id and the S3 keys of its parameters and data. The h5 files
    are stored by content (sha256), so runs on the same data share one copy."""
    keys.check_run_id(run_id)
    if stack.runs.get(run_id, ("status",)) is not None:
        raise SnnError(f"run {run_id} already exists in table {stack.table}")
    event = {"run_id": run_id, "parameters_key": keys.parameters_key(run_id)}
    for field, name in (("train_key", TRAIN_FILE), ("test_key", TEST_FILE)):
        data = (data_dir / name).read_bytes()
        key = keys.upload_key(hashlib.sha256(data).hexdigest(), name)
        stack.objects.put_bytes(key, data)
        event[field] = key
    stack.objects.put_bytes(event["parameters_key"], p.to_json().encode())
    return event


def start(stack: Stack, event: dict[str, str], name: str) -> str:
    response = stack.sfn.start_execution(
        stateMachineArn=stack.state_machine_arn, name=name, input=json.dumps(event)
    )
    return response["executionArn"]


def follow(
    stack: Stack,
    run_id: str,
    execution_arn: str,
    on_epoch: OnEpoch | None = None,
    poll_seconds: float = 0.2,
    check: Callable[[], None] | None = None,
    reported: int = 0,
) -> tuple[dict[str, Any], int]:
    """Wait for one execution to end, reporting each newly committed epoch's cost on the way
    (from epoch `reported` on). `check` runs at every poll (the local engine enforces AWS quotas
    there). Polls come quickly at first, then every `poll_seconds` (a short execution ends
    without waiting long; a long one is not slowed by its follower). Returns the execution's
    description and the number of epochs reported."""
    wait = min(0.05, poll_seconds)
    while True:
        description = stack.sfn.describe_execution(executionArn=execution_arn)
        record = stack.runs.get(run_id, ("committed_epoch",)) or {}
        committed = int(record.get("committed_epoch", 0))
        if committed > reported:
            costs = stack.runs.costs(run_id, range(reported, committed))
            while reported < committed and reported in costs:
                if on_epoch:
                    on_epoch(reported, costs[reported])
                reported += 1
        if description["status"] != "RUNNING":
            return description, reported
        if check:
            check()
        time.sleep(wait)
        wait = min(wait * 1.5, poll_seconds)


@dataclass
class Execution:
    """One execution of a run, as it ended, and what its history says (its events are not
    kept: a long run has hundreds of thousands)."""

    description: dict[str, Any]
    stats: dict[str, Any]

    @classmethod
    def of(cls, description: dict[str, Any], events: list[dict[str, Any]]) -> Execution:
        first, last = epoch_span(events)
        stats = {
            **execution_stats(events),
            "first_epoch": first,
            "last_epoch": last,
            "oversized": oversized_payload(events),
        }
        return cls(description, stats)

    @property
    def succeeded(self) -> bool:
        return self.description["status"] == "SUCCEEDED"


def execution_arn(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:") + ":" + name


def follow_run(
    stack: Stack,
    run_id: str,
    first_arn: str,
    on_epoch: OnEpoch | None = None,
    poll_seconds: float = 0.2,
    guard: Callable[[str], Callable[[], None]] | None = None,
    reported: int = 0,
    executions: list[Execution] | None = None,
    ended: Callable[[str], None] | None = None,
) -> list[Execution]:
    """Follow a run across its executions (a long run continues in new ones) until it ends or an
    execution fails. `guard(arn)` makes the per-poll check of each execution; each execution
    that ended is appended to `executions` (also when following is interrupted), then `ended`
    is told its ARN."""
    executions = [] if executions is None else executions
    arn = first_arn
    while True:
        description, reported = follow(
            stack, run_id, arn, on_epoch, poll_seconds, guard(arn) if guard else None, reported
        )
        executions.append(Execution.of(description, history(stack, arn)))
        if ended:
            ended(arn)
        record = stack.runs.get(run_id, ("status", "execution")) or {}
        if not executions[-1].succeeded or record.get("status") != "RUNNING":
            return executions
        following = record.get("execution")
        if not following or following == description["name"]:
            raise RunFailed(
                f"run {run_id}: execution {description['name']} ended, but the run is still "
                "RUNNING and names no next execution"
            )
        arn = execution_arn(stack.state_machine_arn, following)


def history(stack: Stack, execution_arn: str) -> list[dict[str, Any]]:
    if stack.history_source:
        return stack.history_source(execution_arn)
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
    while True:
        page = stack.sfn.get_execution_history(**kwargs)
        events.extend(page["events"])
        token = page.get("nextToken")
        if not token:
            return events
        kwargs["nextToken"] = token


def history_length(stack: Stack, execution_arn: str) -> int:
    """Events so far. On AWS one cheap call (the newest event's id); an emulator that ignores
    reverseOrder/maxResults answers with the whole history, which is counted instead."""
    if stack.history_source:
        return len(stack.history_source(execution_arn))
    events = stack.sfn.get_execution_history(
        executionArn=execution_arn, maxResults=1, reverseOrder=True
    )["events"]
    if len(events) > 1:
        return len(events)
    return int(events[0]["id"]) if events else 0


def execution_stats(events: list[dict[str, Any]]) -> dict[str, int]:
    """Counts from an execution history: what AWS bills (state transitions) and what ran."""
    return {
        "history_events": len(events),
        "state_transitions": sum(1 for e in events if e["type"].endswith("StateEntered")),
        "lambda_invocations": sum(
            1 for e in events if e["type"] in ("TaskScheduled", "LambdaFunctionScheduled")
        ),
        # invocations that failed (and, in a run that succeeded, were retried)
        "failed_invocations": sum(
            1 for e in events if e["type"] in ("TaskFailed", "LambdaFunctionFailed")
        ),
    }


def oversized_payload(events: list[dict[str, Any]]) -> str | None:
    """The first state whose input or output is over 256 KB, as AWS would have failed it."""
    for e in events:
        for details_name in ("stateEnteredEventDetails", "stateExitedEventDetails"):
            details = e.get(details_name)
            if not details:
                continue
            for field in ("input", "output"):
                size = len(details.get(field, "").encode())
                if size > MAX_PAYLOAD_BYTES:
                    return f"state {details.get('name')} {field} is {size} bytes"
    return None


def failed_state(events: list[dict[str, Any]]) -> str | None:
    """The innermost state that was running when the first failure happened."""
    current = None
    for e in events:
        details = e.get("stateEnteredEventDetails")
        if details:
            current = details["name"]
        elif e["type"].endswith("Failed"):
            return current
    return None


def failure_cause(stack: Stack, run_id: str, description: dict[str, Any]) -> RunFailed:
    """A few lines that say what failed, where, and in which run."""
    state = failed_state(history(stack, description["executionArn"]))
    error = description.get("error") or "unknown error"
    cause = (description.get("cause") or "").strip()
    with contextlib.suppress(json.JSONDecodeError, AttributeError):
        cause = json.loads(cause).get("errorMessage", cause)
    lines = [f"run {run_id} failed: execution {description['status'].lower()}", f"  error: {error}"]
    if cause:
        lines.append(f"  cause: {cause[:500]}")
    if state:
        lines.append(f"  state: {state}")
    return RunFailed("\n".join(lines))


def epoch_span(events: list[dict[str, Any]]) -> tuple[int | None, int | None]:
    """The first and last epoch an execution trained, from its history: Init's plan, and the
    epoch the last `EpochsLeft?` choice saw (the run's committed epoch at that point)."""
    first = last = None
    for e in events:
        exited = e.get("stateExitedEventDetails")
        if exited and exited["name"] == "Init" and first is None:
            first = json.loads(exited["output"])["progress"]["epoch"]
        entered = e.get("stateEnteredEventDetails")
        if entered and entered["name"] == "EpochsLeft?":
            last = json.loads(entered["input"])["progress"]["epoch"] - 1
    return first, last


def run_summary(executions: list[Execution]) -> dict[str, Any]:
    """metrics.json's account of the run's executions, counted from their real histories."""
    summary: dict[str, Any] = {
        "executions": [],
        "state_transitions": 0,
        "lambda_invocations": 0,
        "failed_invocations": 0,
    }
    for ex in executions:
        stats = ex.stats
        summary["executions"].append(
            {
                "name": ex.description["name"],
                "status": ex.description["status"],
                "history_events": stats["history_events"],
                "first_epoch": stats["first_epoch"],
                "last_epoch": stats["last_epoch"],
            }
        )
        for key in ("state_transitions", "lambda_invocations", "failed_invocations"):
            summary[key] += stats[key]
    return summary


def collect(
    stack: Stack, run_id: str, engine: str, wall_seconds: float, extra: dict[str, Any]
) -> RunResult:
    record = stack.runs.get(run_id)
    if record is None or record.get("status") != "SUCCEEDED":
        raise RunFailed(f"run {run_id} has not succeeded (status {record and record['status']})")
    weights = load_model(io.BytesIO(stack.objects.get_bytes(keys.model_key(run_id))))
    return RunResult(
        run_id=run_id,
        engine=engine,
        parameters=Parameters.from_json(record["parameters"]).to_dict(),
        costs=keys.costs_in_order(record),
        weights=weights,
        train_accuracy=float(record["train_accuracy"]),
        test_accuracy=float(record["test_accuracy"]),
        confusion_matrix={k: int(v) for k, v in record["confusion_matrix"].items()},
        wall_seconds=wall_seconds,
        extra=extra,
        neurons=stack.objects.get_bytes(keys.neurons_key(run_id)),
    )
