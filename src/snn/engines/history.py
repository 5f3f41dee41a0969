"""What an execution's history says: what it cost (transitions, invocations), which epochs it
trained, and, when it failed, which state's failure ended it, after its retries, at which epoch,
layer and shard. Pure functions over the events GetExecutionHistory returns."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

Events = list[dict[str, Any]]

# AWS limits the local engine enforces (moto does not).
MAX_PAYLOAD_BYTES = 256 * 1024

TASK_FAILED = ("TaskFailed", "LambdaFunctionFailed", "TaskTimedOut", "LambdaFunctionTimedOut")


def execution_stats(events: Events) -> dict[str, int]:
    """Counts from an execution history: what AWS bills (state transitions) and what ran."""
    return {
        "history_events": len(events),
        "state_transitions": sum(1 for e in events if e["type"].endswith("StateEntered")),
        "lambda_invocations": sum(
            1 for e in events if e["type"] in ("TaskScheduled", "LambdaFunctionScheduled")
        ),
        # invocations that failed (and, in a run that succeeded, were retried)
        "failed_invocations": sum(1 for e in events if e["type"] in TASK_FAILED),
    }


LOOP = "StepsLeft?"


def epoch_span(events: Events) -> tuple[int | None, int | None]:
    """The first and last epoch an execution trained (a part of, with mini-batches), from its
    history: Init's plan, and the position the last `StepsLeft?` choice saw (the run's
    committed step at that point)."""
    first = last = None
    for e in events:
        exited = e.get("stateExitedEventDetails")
        if exited and exited["name"] == "Init" and first is None:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                first = json.loads(exited["output"])["progress"]["epoch"]
        entered = e.get("stateEnteredEventDetails")
        if entered and entered["name"] == LOOP:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                progress = json.loads(entered["input"])["progress"]
                last = progress["epoch"] - (1 if progress.get("batch", 0) == 0 else 0)
    return first, last


def oversized_payload(events: Events) -> str | None:
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


@dataclass(frozen=True)
class Failure:
    """Why an execution failed: the error and cause it ended with, and the state (with its
    event's epoch, layer and shard) whose failure ended it, if a state's failure did."""

    error: str
    cause: str
    state: str | None = None
    where: dict[str, int] | None = None

    def line(self, run_id: str) -> str:
        """One line for the user."""
        place = ""
        if self.state:
            at = self.where or {}
            parts = [f"{k} {at[k]}" for k in ("batch", "layer", "shard") if k in at]
            place = f" at epoch {at['epoch']}" if "epoch" in at else ""
            place += f" in {self.state}" + (f" ({', '.join(parts)})" if parts else "")
        return f"run {run_id} failed{place}: {self.error}: {self.message}"

    @property
    def message(self) -> str:
        """The cause, or the error message inside a Lambda function error's JSON cause."""
        text = self.cause.strip()
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            text = json.loads(text).get("errorMessage", text)
        return " ".join(str(text).split())[:500]


def failure(events: Events, error: str | None, cause: str | None) -> Failure:
    """The failure that ended an execution: the last failed task whose error and cause are the
    ones the execution ended with (the state machine's Catch passes them on unchanged, so a
    fault that a Retry absorbed, or a sibling's, cannot be mistaken for it), and that task's
    state and event."""
    error = error or "unknown error"
    cause = cause or ""
    by_id = {e["id"]: e for e in events}
    for e in reversed(events):
        details = _failed_details(e)
        if details is None or details.get("error") != error or details.get("cause", "") != cause:
            continue
        entered = _entered(by_id, e)
        if entered is not None:
            name, task_input = entered
            return Failure(error, cause, name, _where(task_input))
    return Failure(error, cause)


def _failed_details(event: dict[str, Any]) -> dict[str, Any] | None:
    if event["type"] not in TASK_FAILED:
        return None
    for key, value in event.items():
        if key.endswith("EventDetails") and isinstance(value, dict):
            return value
    return None


def _entered(by_id: dict[int, dict[str, Any]], event: dict[str, Any]) -> tuple[str, str] | None:
    """The state a task event belongs to: back along previousEventId to its TaskStateEntered."""
    seen = 0
    current = by_id.get(event.get("previousEventId", -1))
    while current is not None and seen < 64:
        details = current.get("stateEnteredEventDetails")
        if details and current["type"] == "TaskStateEntered":
            return details["name"], details.get("input", "")
        current = by_id.get(current.get("previousEventId", -1))
        seen += 1
    return None


def _where(task_input: str) -> dict[str, int]:
    """The epoch, layer and shard of a task's input, as far as it has them."""
    try:
        data = json.loads(task_input)
    except (TypeError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    if isinstance(data.get("progress"), dict):  # a top-level state's input carries the plan
        data = {**data, "epoch": data["progress"].get("epoch")}
    if isinstance(data.get("progress"), dict):
        data = {**data, "batch": data["progress"].get("batch")}
    found = {
        k: data[k] for k in ("epoch", "batch", "layer", "shard") if isinstance(data.get(k), int)
    }
    if found.get("batch") == 0:  # a run without mini-batches has only batch 0: not worth saying
        del found["batch"]
    return found
