"""Following a run from this machine, across the executions that carry it (a long run
continues in new ones), reporting each committed epoch's cost as it comes. The local and AWS
engines follow the same way; the local engine adds its own checks at every poll."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from snn.engines import OnEpoch
from snn.engines.history import Failure, epoch_span, execution_stats, failure, oversized_payload
from snn.engines.stack import Events, Stack
from snn.errors import RunFailed


@dataclass
class Execution:
    """One execution of a run, as it ended, and what its history says (its events are not
    kept: a long run has hundreds of thousands)."""

    description: dict[str, Any]
    stats: dict[str, Any]
    failure: Failure | None = None

    @classmethod
    def of(cls, description: dict[str, Any], events: Events) -> Execution:
        first, last = epoch_span(events)
        stats = {
            **execution_stats(events),
            "first_epoch": first,
            "last_epoch": last,
            "oversized": oversized_payload(events),
        }
        ended = None
        if description["status"] != "SUCCEEDED":
            ended = failure(events, description.get("error"), description.get("cause"))
        return cls(description, stats, ended)

    @property
    def name(self) -> str:
        return self.description["name"]

    @property
    def successor(self) -> str | None:
        """The execution this one handed the run to (ContinueAsNew's result in its output), or
        None if it handed nothing over."""
        try:
            output = json.loads(self.description.get("output") or "null")
            name = output["continued"]["execution_name"]
        except (ValueError, TypeError, KeyError):
            return None
        return name if isinstance(name, str) and name else None

    @property
    def succeeded(self) -> bool:
        return self.description["status"] == "SUCCEEDED"

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.description["status"],
            "history_events": self.stats["history_events"],
            "first_epoch": self.stats["first_epoch"],
            "last_epoch": self.stats["last_epoch"],
        }


COUNTS = ("state_transitions", "lambda_invocations", "failed_invocations")


def run_summary(executions: list[Execution], prior: dict[str, Any] | None = None) -> dict[str, Any]:
    """metrics.json's account of the run's executions, counted from their real histories, after
    those of earlier processes (`prior`, for a resumed run)."""
    summary: dict[str, Any] = {"executions": list((prior or {}).get("executions", []))}
    for key in COUNTS:
        summary[key] = int((prior or {}).get(key, 0))
    for ex in executions:
        summary["executions"].append(ex.summary())
        for key in COUNTS:
            summary[key] += ex.stats[key]
    return summary


@dataclass
class Follower:
    """Follows one run: `follow(arn)` waits for each of its executions in turn, until the run
    ends or an execution ends without handing the run over. Polls come quickly at first, then
    every `poll_seconds` (a short execution ends without waiting long; a long one is not slowed
    by its follower). Subclasses add checks at every poll (`poll`) and at the end of each
    execution (`ended`)."""

    stack: Stack
    run_id: str
    on_epoch: OnEpoch | None = None
    poll_seconds: float = 1.0
    reported: int = 0  # epochs reported so far
    executions: list[Execution] = field(default_factory=list)

    def follow(self, first_arn: str) -> list[Execution]:
        arn = first_arn
        while True:
            description = self._wait(arn)
            execution = Execution.of(description, self.stack.history(arn))
            self.executions.append(execution)
            self.ended(arn, execution)
            if not execution.succeeded:
                return self.executions
            # The successor this execution started, from its own output: by the time the run
            # record is read, a short successor may have handed the run on again, or ended it.
            following = execution.successor
            if following is None:
                record = self.stack.runs.get(self.run_id, ("status", "execution")) or {}
                if record.get("status") != "RUNNING":
                    return self.executions
                following = record.get("execution")
                if not following or following == execution.name:
                    raise RunFailed(
                        f"run {self.run_id}: execution {execution.name} ended, but the run is "
                        "still RUNNING and names no next execution"
                    )
            arn = self.stack.execution_arn(following)

    def _wait(self, arn: str) -> dict[str, Any]:
        wait = min(0.05, self.poll_seconds)
        while True:
            description = self.stack.sfn.describe_execution(executionArn=arn)
            self.report()
            if description["status"] != "RUNNING":
                return description
            self.poll(arn)
            time.sleep(wait)
            wait = min(wait * 1.5, self.poll_seconds)

    def report(self) -> None:
        """Tell `on_epoch` the cost of every epoch committed since the last report."""
        record = self.stack.runs.get(self.run_id, ("committed_epoch",)) or {}
        committed = int(record.get("committed_epoch", 0))
        if committed <= self.reported:
            return
        costs = self.stack.runs.costs(self.run_id, range(self.reported, committed))
        while self.reported < committed and self.reported in costs:
            self.committed(self.reported, costs[self.reported])
            self.reported += 1

    def committed(self, epoch: int, cost: float) -> None:
        if self.on_epoch:
            self.on_epoch(epoch, cost)

    def poll(self, arn: str) -> None:
        """Called at every poll while execution `arn` runs."""

    def ended(self, arn: str, execution: Execution) -> None:
        """Called once execution `arn` has ended."""

    def last_failure(self) -> Failure | None:
        """Why the run's last execution failed, or None if it succeeded."""
        return self.executions[-1].failure if self.executions else None

    def failed(self, resume_hint: str = "") -> RunFailed:
        ended = self.last_failure() or Failure("unknown error", "the run did not succeed")
        return RunFailed(ended.line(self.run_id) + resume_hint)
