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


class RunTable(Protocol):
    def create(self, run_id: str, record: dict[str, Any]) -> dict[str, Any]: ...
    def get(self, run_id: str, fields: tuple[str, ...] = ()) -> dict[str, Any] | None: ...
    def costs(self, run_id: str, epochs: range) -> dict[int, float]: ...
    def record_cost(self, run_id: str, epoch: int, cost: float) -> None: ...
    def commit(self, run_id: str, epoch: int) -> int: ...
    def update(self, run_id: str, fields: dict[str, Any], when: When | None = None) -> None: ...
    def claim(self, run_id: str, token: str) -> bool: ...


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def new_record(run_id: str, parameters_json: str, **fields: Any) -> dict[str, Any]:
    stamp = now()
    return {
        "run_id": run_id,
        "parameters": parameters_json,
        "status": "RUNNING",
        "committed_epoch": 0,
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


def _commit_refused(run_id: str, epoch: int, record: dict[str, Any]) -> int:
    """What a refused commit of `epoch` means, given the record as it is."""
    committed = int(record.get("committed_epoch", -1))
    if committed == epoch + 1:
        return committed  # a duplicate: the epoch is already committed, nothing to do
    if record.get("status") != "RUNNING":
        raise ConditionFailed(f"run {run_id} is {record.get('status')}, not RUNNING", record)
    raise ConditionFailed(f"run {run_id} is at epoch {committed}; cannot commit epoch {epoch}")


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


class MemoryRunTable:
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
            record["costs"] = {str(e): repr(c) for e, c in self._costs(run_id).items()}
        return record

    def _costs(self, run_id: str) -> dict[int, float]:
        return {
            keys.epoch_of_entry(entry): float(item["cost"])
            for (rid, entry), item in sorted(self.items.items())
            if rid == run_id and entry.startswith("cost#")
        }

    def costs(self, run_id: str, epochs: range) -> dict[int, float]:
        return {e: c for e, c in self._costs(run_id).items() if e in epochs}

    def record_cost(self, run_id: str, epoch: int, cost: float) -> None:
        item = self.items.setdefault((run_id, keys.cost_entry(epoch)), {"cost": repr(cost)})
        if item["cost"] != repr(cost):
            raise ConditionFailed(
                f"run {run_id}: epoch {epoch} already has cost {item['cost']}, not {cost!r}"
            )

    def commit(self, run_id: str, epoch: int) -> int:
        item = self._item(run_id)
        if item["committed_epoch"] != epoch or item["status"] != "RUNNING":
            return _commit_refused(run_id, epoch, item)
        item["committed_epoch"] = epoch + 1
        item["updated_at"] = now()
        return epoch + 1

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


class DynamoRunTable:
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
            record["costs"] = {str(e): repr(c) for e, c in self._costs(run_id).items()}
        return record

    def costs(self, run_id: str, epochs: range) -> dict[int, float]:
        """The recorded costs of `epochs` only."""
        if not epochs:
            return {}
        return self._costs(run_id, keys.cost_entry(epochs.start), keys.cost_entry(epochs.stop - 1))

    def _costs(
        self, run_id: str, first: str = "cost#", last: str = "cost#9999999"
    ) -> dict[int, float]:
        out: dict[int, float] = {}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "#r = :r AND #e BETWEEN :first AND :last",
            "ExpressionAttributeNames": {"#r": "run_id", "#e": "entry", "#c": "cost"},
            "ExpressionAttributeValues": {
                ":r": {"S": run_id},
                ":first": {"S": first},
                ":last": {"S": last},
            },
            "ProjectionExpression": "#e, #c",
            "ConsistentRead": True,
        }
        while True:
            page = self.client.query(**kwargs)
            for item in page.get("Items", []):
                out[keys.epoch_of_entry(item["entry"]["S"])] = float(item["cost"]["S"])
            if "LastEvaluatedKey" not in page:
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def record_cost(self, run_id: str, epoch: int, cost: float) -> None:
        """One small item of its own, written once: again with the same value by a retry, never
        with another."""
        try:
            self.client.put_item(
                TableName=self.table,
                Item={**keys.item_key(run_id, keys.cost_entry(epoch)), "cost": {"S": repr(cost)}},
                ConditionExpression="attribute_not_exists(run_id) OR #c = :c",
                ExpressionAttributeNames={"#c": "cost"},
                ExpressionAttributeValues={":c": {"S": repr(cost)}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            recorded = self._costs(run_id, keys.cost_entry(epoch), keys.cost_entry(epoch))
            raise ConditionFailed(
                f"run {run_id}: epoch {epoch} already has cost {recorded.get(epoch)!r}, "
                f"not {cost!r}"
            ) from None

    def commit(self, run_id: str, epoch: int) -> int:
        try:
            self.client.update_item(
                TableName=self.table,
                Key=keys.item_key(run_id),
                UpdateExpression="SET committed_epoch = :next, updated_at = :now",
                ConditionExpression="committed_epoch = :e AND #s = :running",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":e": {"N": str(epoch)},
                    ":next": {"N": str(epoch + 1)},
                    ":now": {"S": now()},
                    ":running": {"S": "RUNNING"},
                },
            )
            return epoch + 1
        except self.client.exceptions.ConditionalCheckFailedException:
            record = self.get(run_id, ("status", "committed_epoch"))
            if record is None:
                raise MissingObject(f"unknown run {run_id}") from None
            return _commit_refused(run_id, epoch, record)

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
