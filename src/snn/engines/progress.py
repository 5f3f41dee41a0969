"""How a run is going, as `progress.json` tells it (docs/serve.md has the format): the epochs
done and their costs, the executions, and, on the local engine, which states of the state
machine run now, how often each was entered and how long it took on average.

The follower keeps a `Progress` up to date; the run folder writes it atomically, at most once a
`every` seconds while the run goes and once more when it ends."""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from snn.run_folder import RunFolder, iso_now


class StateTracker:
    """Counts, mean durations and the states running now, from one execution's history events,
    read as they grow. Entries and exits of a state are paired first in, first out (the shards
    of a Map run alike)."""

    def __init__(self) -> None:
        self.entered: Counter[str] = Counter()
        self.exited: Counter[str] = Counter()
        self.seconds: dict[str, float] = defaultdict(float)
        self._open: dict[str, deque[float]] = defaultdict(deque)
        self._order: dict[str, int] = {}
        self._execution = ""
        # Mean durations measured elsewhere (a Task's, by the Lambda service that runs it),
        # preferred to the history's timestamps
        self.measured_ms: dict[str, float] = {}

    def feed(self, execution_arn: str, events: list[dict[str, Any]]) -> None:
        """Take in an execution's history events that follow those already fed."""
        if execution_arn != self._execution:  # a new execution: its history starts again
            self._execution = execution_arn
            self._open.clear()
        for event in events:
            kind = event["type"]
            stamp = _seconds(event.get("timestamp"))
            if kind.endswith("StateEntered"):
                name = event["stateEnteredEventDetails"]["name"]
                self.entered[name] += 1
                self._order.setdefault(name, len(self._order))
                self._open[name].append(stamp)
            elif kind.endswith("StateExited"):
                name = event["stateExitedEventDetails"]["name"]
                self.exited[name] += 1
                if self._open[name]:
                    self.seconds[name] += max(0.0, stamp - self._open[name].popleft())

    def stop(self) -> None:
        """The execution has ended: nothing runs any more."""
        self._open.clear()

    def states(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name in sorted(self.entered, key=self._order.__getitem__):
            done = self.exited[name]
            mean = round(1000 * self.seconds[name] / done, 3) if done else None
            out[name] = {
                "entered": self.entered[name],
                "running": len(self._open[name]),
                "mean_ms": self.measured_ms.get(name, mean),
            }
        return out

    def active(self) -> list[str]:
        """The states entered and not yet exited, outermost first."""
        return [n for n in sorted(self._open, key=self._order.__getitem__) if self._open[n]]


def _seconds(value: Any) -> float:
    """An event's timestamp in seconds: a datetime (GetExecutionHistory) or ISO 8601 text with
    milliseconds (the emulator's own history list); now, if it has none."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return time.time()
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return time.time()


@dataclass
class Progress:
    run_id: str
    engine: str
    parameters: dict[str, Any]
    epochs: int
    costs: list[float] = field(default_factory=list)
    status: str = "running"
    execution: dict[str, Any] | None = None
    executions: list[dict[str, Any]] = field(default_factory=list)
    tracker: StateTracker = field(default_factory=StateTracker)
    error: str | None = None
    resumable_from: int | None = None  # the epoch the saved resume state starts from
    started_at: str = field(default_factory=iso_now)
    data: str | None = None  # the data given with --data, so that the finished run names it
    inputs: int | None = None  # the values of one example: the network's input layer

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "engine": self.engine,
            "pid": os.getpid(),
            "status": self.status,
            "started_at": self.started_at,
            "updated_at": iso_now(),
            "parameters": self.parameters,
            "inputs": self.inputs,
            "epochs": self.epochs,
            "epoch": len(self.costs),
            "costs": self.costs,
            "execution": self.execution,
            "executions": self.executions,
            "states": self.tracker.states(),
            "active": self.tracker.active(),
            "error": self.error,
            "resumable_from": self.resumable_from,
            "data": self.data,
        }


class ProgressWriter:
    """Publishes a run's Progress into its folder, at most once every `every` seconds (and at
    once with `force`)."""

    def __init__(self, folder: RunFolder | None, progress: Progress, every: float = 1.0) -> None:
        self.folder, self.progress, self.every = folder, progress, every
        self._last = 0.0

    def epoch_done(self, epoch: int, cost: float) -> None:
        costs = self.progress.costs
        if epoch == len(costs):
            costs.append(cost)
        self.publish()

    def publish(self, force: bool = False) -> None:
        if self.folder is None:
            return
        now = time.monotonic()
        if force or now - self._last >= self.every:
            self._last = now
            self.folder.write_progress(self.progress.to_dict())

    def end(self, status: str, error: str | None = None) -> None:
        self.progress.status, self.progress.error = status, error
        self.progress.tracker.stop()
        self.publish(force=True)
