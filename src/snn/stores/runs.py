"""The run table: one record per run and one small item per epoch's cost, in DynamoDB (Lambda,
local and AWS engines) or in a dictionary (the direct engine). Both behave alike, conditions
included, so every engine runs the same stage code.

Every write that changes a run's state is conditional on the state it expects (`when`), and a
write whose values are already in place is a no-op, so a replayed stage changes nothing and an
out-of-order one is refused with nothing written. Costs are stored as the float's exact repr:
DynamoDB's numbers are decimals and would round.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Protocol

from snn import keys
from snn.errors import EventError
from snn.stores.matrices import MissingObject

# Field -> the value it must have; a tuple -> any of these values, None standing for "absent".
When = dict[str, Any]


class ConditionFailed(EventError):
    """The run record is not in the state a write expects; nothing was written."""

    def __init__(self, message: str, record: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.record = record or {}


# The series a run records, one small item per value: the cost of each epoch, the summed cost of
# each mini-batch (step), the validation cost after each epoch.
SERIES = {"cost": keys.cost_entry, "loss": keys.loss_entry, "valid": keys.validation_entry}


class RunTable(Protocol):
    def create(self, run_id: str, record: dict[str, Any]) -> dict[str, Any]: ...
    def get(self, run_id: str, fields: tuple[str, ...] = ()) -> dict[str, Any] | None: ...
    def values(self, run_id: str, series: str, numbers: range) -> dict[int, float]: ...
    def record(self, run_id: str, series: str, number: int, value: float) -> None: ...
    def commit(self, run_id: str, step: int, fields: dict[str, Any] | None = None) -> int: ...
    def update(self, run_id: str, fields: dict[str, Any], when: When | None = None) -> None: ...
    def claim(self, run_id: str, token: str) -> bool: ...

    # the costs of epochs, the series every engine reports
    def costs(self, run_id: str, epochs: range) -> dict[int, float]: ...
    def record_cost(self, run_id: str, epoch: int, cost: float) -> None: ...


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def new_record(run_id: str, parameters_json: str, **fields: Any) -> dict[str, Any]:
    stamp = now()
    return {
        "run_id": run_id,
        "parameters": parameters_json,
        "status": "RUNNING",
        "committed_epoch": 0,
        "committed_step": 0,
        "created_at": stamp,
        "updated_at": stamp,
        **fields,
    }


def costs_in_order(record: dict[str, Any]) -> list[float]:
    """The cost of every epoch, from a record read with its costs."""
    costs = record.get("costs", {})
    return [float(costs[str(e)]) for e in range(len(costs))]


def holds(record: dict[str, Any], when: When) -> bool:
    for name, expected in when.items():
        options = expected if isinstance(expected, tuple) else (expected,)
        if record.get(name) not in options:
            return False
    return True


def describe(when: When) -> str:
    def one(value: Any) -> str:
        return "absent" if value is None else repr(value)

    return " and ".join(
        f"{name} {'in ' + ', '.join(map(one, v)) if isinstance(v, tuple) else one(v)}"
        for name, v in when.items()
    )


def commit_refused(run_id: str, step: int, record: dict[str, Any]) -> int:
    """What a refused commit of `step` means, given the record as it is."""
    committed = int(record.get("committed_step", -1))
    if committed == step + 1:
        return committed  # a duplicate: the step is already committed, nothing to do
    if record.get("status") != "RUNNING":
        raise ConditionFailed(f"run {run_id} is {record.get('status')}, not RUNNING", record)
    raise ConditionFailed(f"run {run_id} is at step {committed}; cannot commit step {step}")


class Series:
    """What both tables derive from `values` and `record`."""

    def costs(self, run_id: str, epochs: range) -> dict[int, float]:
        return self.values(run_id, "cost", epochs)  # type: ignore[attr-defined]

    def record_cost(self, run_id: str, epoch: int, cost: float) -> None:
        self.record(run_id, "cost", epoch, cost)  # type: ignore[attr-defined]


def update_refused(run_id: str, fields: dict[str, Any], when: When, record: dict[str, Any]) -> None:
    """After a refused update: fine if every field already has its value (a replay), else the
    state the record is in is not the one the update expects."""
    if all(record.get(k) == v for k, v in fields.items()):
        return
    raise ConditionFailed(
        f"run {run_id} is not in the state this needs ({describe(when)}): status "
        f"{record.get('status')}, epoch {record.get('committed_epoch')}",
        record,
    )


def _copied(value: Any) -> Any:
    """A copy that shares nothing mutable: a record holds JSON values (dicts, lists, strings,
    numbers, None), so a plain recursive copy does what copy.deepcopy does, several times
    faster; anything else goes to copy.deepcopy."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if type(value) is dict:
        return {k: _copied(v) for k, v in value.items()}
    if type(value) is list:
        return [_copied(v) for v in value]
    return copy.deepcopy(value)


class MemoryRunTable(Series):
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    def create(self, run_id: str, record: dict[str, Any]) -> dict[str, Any]:
        key = (run_id, keys.RUN_ENTRY)
        if key not in self.items:
            self.items[key] = _copied({k: v for k, v in record.items() if k != "costs"})
            for epoch, cost in record.get("costs", {}).items():
                self.record_cost(run_id, int(epoch), float(cost))
        return _copied(self.items[key])

    def get(self, run_id: str, fields: tuple[str, ...] = ()) -> dict[str, Any] | None:
        item = self.items.get((run_id, keys.RUN_ENTRY))
        if item is None:
            return None
        record = _copied(item)
        if fields:
            record = {k: record[k] for k in fields if k in record}
        if not fields or "costs" in fields:
            record["costs"] = {str(e): repr(c) for e, c in self.values(run_id, "cost").items()}
        return record

    def values(self, run_id: str, series: str, numbers: range | None = None) -> dict[int, float]:
        prefix = SERIES[series](0).split("#")[0] + "#"
        found = {
            keys.number_of_entry(entry): float(item["value"])
            for (rid, entry), item in sorted(self.items.items())
            if rid == run_id and entry.startswith(prefix)
        }
        return {n: v for n, v in found.items() if numbers is None or n in numbers}

    def record(self, run_id: str, series: str, number: int, value: float) -> None:
        entry = SERIES[series](number)
        item = self.items.setdefault((run_id, entry), {"value": repr(value)})
        if item["value"] != repr(value):
            raise ConditionFailed(
                f"run {run_id}: {entry} is already {item['value']}, not {value!r}"
            )

    def commit(self, run_id: str, step: int, fields: dict[str, Any] | None = None) -> int:
        item = self._item(run_id)
        if item.get("committed_step") != step or item["status"] != "RUNNING":
            return commit_refused(run_id, step, item)
        item.update(_copied(fields or {}), committed_step=step + 1, updated_at=now())
        return step + 1

    def update(self, run_id: str, fields: dict[str, Any], when: When | None = None) -> None:
        item = self._item(run_id)
        fields = _copied(fields)
        if all(item.get(k) == v for k, v in fields.items()):
            return
        if when and not holds(item, when):
            update_refused(run_id, fields, when, item)
            return
        item.update(fields, updated_at=now())

    def claim(self, run_id: str, token: str) -> bool:
        item = self.items.setdefault((run_id, keys.CLAIM_ENTRY), {"token": token})
        return item["token"] == token

    def _item(self, run_id: str) -> dict[str, Any]:
        try:
            return self.items[(run_id, keys.RUN_ENTRY)]
        except KeyError:
            raise MissingObject(f"unknown run {run_id}") from None
