"""The run table in DynamoDB: one item per run and one small item per value of its series
(`snn.stores.runs` says what the table holds and how a write is conditioned)."""

from __future__ import annotations

import math
from typing import Any

from snn import keys
from snn.stores import runs
from snn.stores.clients import aws_client
from snn.stores.matrices import MissingObject
from snn.stores.runs import (
    SERIES,
    ConditionFailed,
    Series,
    When,
    commit_refused,
    update_refused,
)


class DynamoRunTable(Series):
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
                    ":now": {"S": runs.now()},
                    ":running": {"S": "RUNNING"},
                    **values,
                },
            )
            return step + 1
        except self.client.exceptions.ConditionalCheckFailedException:
            record = self.get(run_id, ("status", "committed_step"))
            if record is None:
                raise MissingObject(f"unknown run {run_id}") from None
            return commit_refused(run_id, step, record)

    def update(self, run_id: str, fields: dict[str, Any], when: When | None = None) -> None:
        """Set `fields` (and updated_at) if the record is as `when` says and one of them
        changes. A repeated update leaves the record exactly as the first one did."""
        names = {f"#f{i}": k for i, k in enumerate(fields)}
        values = {f":v{i}": _to_value(v) for i, v in enumerate(fields.values())}
        values[":now"] = {"S": runs.now()}
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
            update_refused(run_id, stored, when or {}, record)

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
        if not math.isfinite(v) or (v and not 1e-130 <= abs(v) < 1e126):
            raise ValueError(
                f"cannot store {v!r} in the run record: only finite numbers, 0 or of magnitude "
                "1e-130 to 1e126 (DynamoDB's range)"
            )
        # repr has at most 17 significant digits, the decimal that reads back as the same
        # float: DynamoDB's decimal numbers (38 digits) keep it exactly.
        return {"N": repr(v)}
    raise TypeError(f"cannot store {type(v).__name__} in the run record")


def _from_value(v: dict[str, Any]) -> Any:
    ((kind, x),) = v.items()
    if kind == "N":
        return int(x) if x.lstrip("-").isdigit() else float(x)
    if kind == "M":
        return {k: _from_value(y) for k, y in x.items()}
    if kind == "NULL":
        return None
    return x


def _to_item(record: dict[str, Any]) -> dict[str, Any]:
    return {k: _to_value(v) for k, v in record.items()}


def _from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _from_value(v) for k, v in item.items() if k != "entry"}
