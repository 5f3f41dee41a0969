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
from snn.stores.clients import aws_client
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


def _commit_refused(run_id: str, step: int, record: dict[str, Any]) -> int:
    """What a refused commit of `step` means, given the record as it is."""
    committed = int(record.get("committed_step", -1))
    if committed == step + 1:
        return committed  # a duplicate: the step is already committed, nothing to do
    if record.get("status") != "RUNNING":
        raise ConditionFailed(f"run {run_id} is {record.get('status')}, not RUNNING", record)
    raise ConditionFailed(f"run {run_id} is at step {committed}; cannot commit step {step}")


class _Series:
    """What both tables derive from `values` and `record`."""

    def costs(self, run_id: str, epochs: range) -> dict[int, float]:
        return self.values(run_id, "cost", epochs)  # type: ignore[attr-defined]

    def record_cost(self, run_id: str, epoch: int, cost: float) -> None:
        self.record(run_id, "cost", epoch, cost)  # type: ignore[attr-defined]


def _refused(run_id: str, fields: dict[str, Any], when: When, record: dict[str, Any]) -> None:
    """After a refused update: fine if every field already has its value (a replay), else the
    state the record is in is not the one the update expects."""
    if all(record.get(k) == v for k, v in fields.items()):
        return
    raise ConditionFailed(
        f"run {run_id} is not in the state this needs ({describe(when)}): status "
        f"{record.get('status')}, epoch {record.get('committed_epoch')}",
        record,
    )


class MemoryRunTable(_Series):
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    def create(self, run_id: str, record: dict[str, Any]) -> dict[str, Any]:
        key = (run_id, keys.RUN_ENTRY)
        if key not in self.items:
            self.items[key] = copy.deepcopy({k: v for k, v in record.items() if k != "costs"})
            for epoch, cost in record.get("costs", {}).items():
                self.record_cost(run_id, int(epoch), float(cost))
        return copy.deepcopy(self.items[key])

    def get(self, run_id: str, fields: tuple[str, ...] = ()) -> dict[str, Any] | None:
        item = self.items.get((run_id, keys.RUN_ENTRY))
        if item is None:
            return None
        record = copy.deepcopy(item)
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
            return _commit_refused(run_id, step, item)
        item.update(copy.deepcopy(fields or {}), committed_step=step + 1, updated_at=now())
        return step + 1

    def update(self, run_id: str, fields: dict[str, Any], when: When | None = None) -> None:
        item = self._item(run_id)
        fields = copy.deepcopy(fields)
        if all(item.get(k) == v for k, v in fields.items()):
            return
        if when and not holds(item, when):
            _refused(run_id, fields, when, item)
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


class DynamoRunTable(_Series):
    """The run in DynamoDB, as one item per run plus one small item per epoch's cost: the record
    stays a few hundred bytes however long the run, so each write costs one write unit and no
    read copies every cost. `get` returns the record with its costs, as the other tables do."""

    def __init__(self, table: str, client: Any = None) -> None:
        self.table = table
        self.client = client or aws_client("dynamodb")

    def create(self, run_id: str, record: dict[str, Any]) -> dict[str, Any]:
        """Create the run, unless it exists; returns the record as stored, without its costs
        (one GetItem, no Query). A record that carries costs (a saved run) gets them back."""
        head = {k: v for k, v in record.items() if k != "costs"}
        try:
            self.client.put_item(
                TableName=self.table,
                Item={**_to_item(head), **keys.item_key(run_id)},
                ConditionExpression="attribute_not_exists(run_id)",
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            item = self.client.get_item(
                TableName=self.table, Key=keys.item_key(run_id), ConsistentRead=True
            ).get("Item")
            if not item:
                raise MissingObject(f"run {run_id} vanished while it was created") from None
            return _from_item(item)
        for epoch, cost in record.get("costs", {}).items():
            self.record_cost(run_id, int(epoch), float(cost))
        return dict(head)

    def get(self, run_id: str, fields: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """The record, or only the named top-level `fields` of it (cheaper to read). The costs
        are read only if asked for (no `fields`, or "costs" among them)."""
        kwargs: dict[str, Any] = {}
        wanted = [f for f in fields if f != "costs"]
        if fields:
            names = [*wanted, "run_id"]
            kwargs["ProjectionExpression"] = ", ".join(f"#p{i}" for i in range(len(names)))
            kwargs["ExpressionAttributeNames"] = {f"#p{i}": f for i, f in enumerate(names)}
        item = self.client.get_item(
            TableName=self.table, Key=keys.item_key(run_id), ConsistentRead=True, **kwargs
        ).get("Item")
        if not item:
            return None
        record = _from_item(item)
        if fields and "run_id" not in fields:
            del record["run_id"]
        if not fields or "costs" in fields:
            record["costs"] = {str(e): repr(c) for e, c in self.values(run_id, "cost").items()}
        return record

    def values(self, run_id: str, series: str, numbers: range | None = None) -> dict[int, float]:
        """A series' recorded values, of `numbers` only (one query, in order)."""
        entry = SERIES[series]
        if numbers is None:
            first, last = entry(0), entry(keys.MAX_STEP if series == "loss" else keys.MAX_INDEX)
        elif not numbers:
            return {}
        else:
            first, last = entry(numbers.start), entry(numbers.stop - 1)
        out: dict[int, float] = {}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "#r = :r AND #e BETWEEN :first AND :last",
            "ExpressionAttributeNames": {"#r": "run_id", "#e": "entry", "#v": "value"},
            "ExpressionAttributeValues": {
                ":r": {"S": run_id},
                ":first": {"S": first},
                ":last": {"S": last},
            },
            "ProjectionExpression": "#e, #v",
            "ConsistentRead": True,
        }
        while True:
            page = self.client.query(**kwargs)
            for item in page.get("Items", []):
                out[keys.number_of_entry(item["entry"]["S"])] = float(item["value"]["S"])
            if "LastEvaluatedKey" not in page:
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def record(self, run_id: str, series: str, number: int, value: float) -> None:
        """One small item of its own, written once: again with the same value by a retry, never
        with another."""
        entry = SERIES[series](number)
        try:
            self.client.put_item(
                TableName=self.table,
                Item={**keys.item_key(run_id, entry), "value": {"S": repr(value)}},
                ConditionExpression="attribute_not_exists(run_id) OR #v = :v",
                ExpressionAttributeNames={"#v": "value"},
                ExpressionAttributeValues={":v": {"S": repr(value)}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            item = self.client.get_item(
                TableName=self.table, Key=keys.item_key(run_id, entry), ConsistentRead=True
            ).get("Item", {})
            recorded = item.get("value", {}).get("S")
            raise ConditionFailed(
                f"run {run_id}: {entry} is already {recorded}, not {value!r}"
            ) from None

    def commit(self, run_id: str, step: int, fields: dict[str, Any] | None = None) -> int:
        """committed_step = step + 1 (and `fields`), in one write, only if the run is RUNNING at
        `step`: a duplicate commit is a no-op."""
        fields = fields or {}
        names = {"#s": "status", **{f"#f{i}": k for i, k in enumerate(fields)}}
        values = {f":f{i}": _to_value(v) for i, v in enumerate(fields.values())}
        sets = ["committed_step = :next", "updated_at = :now"]
        sets += [f"#f{i} = :f{i}" for i in range(len(fields))]
        try:
            self.client.update_item(
                TableName=self.table,
                Key=keys.item_key(run_id),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="committed_step = :k AND #s = :running",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={
                    ":k": {"N": str(step)},
                    ":next": {"N": str(step + 1)},
                    ":now": {"S": now()},
                    ":running": {"S": "RUNNING"},
                    **values,
                },
            )
            return step + 1
        except self.client.exceptions.ConditionalCheckFailedException:
            record = self.get(run_id, ("status", "committed_step"))
            if record is None:
                raise MissingObject(f"unknown run {run_id}") from None
            return _commit_refused(run_id, step, record)

    def update(self, run_id: str, fields: dict[str, Any], when: When | None = None) -> None:
        """Set `fields` (and updated_at) if the record is as `when` says and one of them
        changes. A repeated update leaves the record exactly as the first one did."""
        names = {f"#f{i}": k for i, k in enumerate(fields)}
        values = {f":v{i}": _to_value(v) for i, v in enumerate(fields.values())}
        values[":now"] = {"S": now()}
        changes = " OR ".join(
            f"#f{i} <> :v{i} OR attribute_not_exists(#f{i})" for i in range(len(fields))
        )
        conditions = [f"({changes})"]
        for j, (name, expected) in enumerate((when or {}).items()):
            names[f"#w{j}"] = name
            options = []
            for k, value in enumerate(expected if isinstance(expected, tuple) else (expected,)):
                if value is None:
                    options.append(f"attribute_not_exists(#w{j})")
                else:
                    values[f":w{j}_{k}"] = _to_value(value)
                    options.append(f"#w{j} = :w{j}_{k}")
            conditions.append("(" + " OR ".join(options) + ")")
        try:
            self.client.update_item(
                TableName=self.table,
                Key=keys.item_key(run_id),
                UpdateExpression="SET "
                + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
                + ", updated_at = :now",
                ConditionExpression="attribute_exists(run_id) AND " + " AND ".join(conditions),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            record = self.get(run_id, (*fields, *(when or {}), "status", "committed_epoch"))
            if record is None:
                raise MissingObject(f"unknown run {run_id}") from None
            stored = {k: _from_value(_to_value(v)) for k, v in fields.items()}
            _refused(run_id, stored, when or {}, record)

    def claim(self, run_id: str, token: str) -> bool:
        """Take the run id for one starter: True for the first (and again for it), False for
        any other."""
        try:
            self.client.put_item(
                TableName=self.table,
                Item={**keys.item_key(run_id, keys.CLAIM_ENTRY), "token": {"S": token}},
                ConditionExpression="attribute_not_exists(run_id) OR #t = :t",
                ExpressionAttributeNames={"#t": "token"},
                ExpressionAttributeValues={":t": {"S": token}},
            )
            return True
        except self.client.exceptions.ConditionalCheckFailedException:
            return False


def _to_value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"BOOL": v}
    if isinstance(v, int):
        return {"N": str(v)}
    if isinstance(v, str):
        return {"S": v}
    if isinstance(v, dict):
        return {"M": {k: _to_value(x) for k, x in v.items()}}
    if v is None:
        return {"NULL": True}
    if isinstance(v, float):
        return {"S": repr(v)}  # exact; DynamoDB numbers are decimals
    raise TypeError(f"cannot store {type(v).__name__} in the run record")


def _from_value(v: dict[str, Any]) -> Any:
    ((kind, x),) = v.items()
    if kind == "N":
        return int(x)
    if kind == "M":
        return {k: _from_value(y) for k, y in x.items()}
    if kind == "NULL":
        return None
    return x


def _to_item(record: dict[str, Any]) -> dict[str, Any]:
    return {k: _to_value(v) for k, v in record.items()}


def _from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _from_value(v) for k, v in item.items() if k != "entry"}
