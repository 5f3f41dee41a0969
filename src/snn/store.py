"""Where a run's data lives: matrices in S3 as .npy, the run record in DynamoDB.

The key layout is defined here and nowhere else:

    uploads/{sha256}/{file}                               user inputs, content-addressed
    runs/{run_id}/parameters.json                         the network, as validated
    runs/{run_id}/data/{split}_{x|y}.npy                  preprocessed data set (immutable)
    runs/{run_id}/epoch/{epoch:07d}/{name}/layer{l:03d}/shard{s:05d}.npy
                                                          W, b: the weights *entering* epoch e
                                                          Z, A, dW, db, dA_prev: epoch e's work
    runs/{run_id}/epoch/{epoch:07d}/dAL.npy               d cost / d A[L] of epoch e
    runs/{run_id}/neurons/epoch{e:07d}/layer{l:03d}/shard{s:05d}.npy
                                                          per-neuron statistics, sampled epochs
    runs/{run_id}/model.npz, neurons.npz                  the trained model; all neuron statistics

and in the run table (key: run_id, entry):

    (run_id, "run")                                       the run record: parameters, status,
                                                          committed_epoch, results
    (run_id, "cost#{epoch:07d}")                          the cost of one epoch

Keys are immutable and versioned by epoch: a stage reads objects of its epoch and writes new
keys only, and writing a key again writes the same bytes. That makes every stage safe to retry.
Shard keys sort in neuron order and are always assembled by index, never by listing.

Two implementations share one small interface: S3 + DynamoDB (Lambda, local and AWS engines)
and plain dictionaries (the direct engine), so every engine runs the same stage code.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
from typing import Any, ClassVar, Protocol

import numpy as np

from snn.errors import EventError

# Run ids are at most 60 characters, so that the names of a run's executions (the run id and a
# suffix) stay within Step Functions' 80.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,59}")
EXECUTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
MATRIX_NAMES = ("W", "b", "Z", "A", "dW", "db", "dA_prev")
SPLITS = ("train", "test")


# --- the key layout -----------------------------------------------------------------------------


def check_run_id(run_id: Any) -> str:
    """A run id becomes part of S3 keys: only letters, digits, '-' and '_' (no '/', no '..')."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise EventError(
            f"invalid run_id {run_id!r}: use 1-60 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return run_id


# The run table's items: (run_id, "run") is the run record; (run_id, "cost#0000042") the cost of
# epoch 42. Entries sort in epoch order, so a range of costs is one query.
RUN_ENTRY = "run"


def cost_entry(epoch: int) -> str:
    return f"cost#{epoch:07d}"


def epoch_of_entry(entry: str) -> int:
    return int(entry.removeprefix("cost#"))


def _entry(entry: str) -> dict[str, Any]:
    return {"entry": {"S": entry}}


def run_key(run_id: str) -> dict[str, Any]:
    return {"run_id": {"S": run_id}, **_entry(RUN_ENTRY)}


def _check_index(name: str, value: Any, low: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or value > 9_999_999:
        raise EventError(f"invalid {name} {value!r}: expected a whole number >= {low}")
    return value


def execution_name(run_id: str, epoch: int) -> str:
    """The name of the execution that carries a run on from `epoch` (continue-as-new)."""
    return f"{check_run_id(run_id)}-e{_check_index('epoch', epoch):07d}"


def run_prefix(run_id: str) -> str:
    return f"runs/{check_run_id(run_id)}/"


def epoch_prefix(run_id: str, epoch: int) -> str:
    return f"{run_prefix(run_id)}epoch/{_check_index('epoch', epoch):07d}/"


def matrix_key(run_id: str, epoch: int, name: str, layer: int, shard: int) -> str:
    if name not in MATRIX_NAMES:
        raise ValueError(f"unknown matrix {name!r}")
    layer = _check_index("layer", layer, 1)
    shard = _check_index("shard", shard)
    return f"{epoch_prefix(run_id, epoch)}{name}/layer{layer:03d}/shard{shard:05d}.npy"


def output_gradient_key(run_id: str, epoch: int) -> str:
    return f"{epoch_prefix(run_id, epoch)}dAL.npy"


def neuron_stats_key(run_id: str, epoch: int, layer: int, shard: int) -> str:
    """Per-neuron statistics of a sampled epoch; outside the epoch prefix, so they survive the
    garbage collection of old epochs."""
    return (
        f"{run_prefix(run_id)}neurons/epoch{_check_index('epoch', epoch):07d}/"
        f"layer{_check_index('layer', layer, 1):03d}/shard{_check_index('shard', shard):05d}.npy"
    )


def neurons_key(run_id: str) -> str:
    return f"{run_prefix(run_id)}neurons.npz"


def data_key(run_id: str, split: str, part: str) -> str:
    if split not in SPLITS or part not in ("x", "y"):
        raise ValueError(f"unknown data part {split}_{part}")
    return f"{run_prefix(run_id)}data/{split}_{part}.npy"


def parameters_key(run_id: str) -> str:
    return f"{run_prefix(run_id)}parameters.json"


def model_key(run_id: str) -> str:
    return f"{run_prefix(run_id)}model.npz"


def upload_key(sha256: str, filename: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", sha256) or not re.fullmatch(r"[\w.-]{1,100}", filename):
        raise ValueError(f"bad upload key parts {sha256!r}, {filename!r}")
    return f"uploads/{sha256}/{filename}"


# --- (de)serialisation --------------------------------------------------------------------------


def to_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def from_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


# --- matrices -----------------------------------------------------------------------------------


class MatrixStore(Protocol):
    def put(self, key: str, array: np.ndarray) -> None: ...
    def get(self, key: str) -> np.ndarray: ...
    def get_cached(self, key: str) -> np.ndarray: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def delete_prefix(self, prefix: str) -> int: ...


class MissingObject(EventError):
    """An input of a stage is not in the store (unknown run, or an epoch not reached yet)."""


class MemoryStore:
    """Matrices in a dictionary. Arrays are never mutated by the stages, so no copies are made."""

    def __init__(self) -> None:
        self.objects: dict[str, Any] = {}

    def put(self, key: str, array: np.ndarray) -> None:
        self.objects[key] = array

    def get(self, key: str) -> np.ndarray:
        try:
            return self.objects[key]
        except KeyError:
            raise MissingObject(f"no object {key}") from None

    get_cached = get

    def put_bytes(self, key: str, data: bytes) -> None:
        self.objects[key] = data

    get_bytes = get

    def delete_prefix(self, prefix: str) -> int:
        doomed = [k for k in self.objects if k.startswith(prefix)]
        for k in doomed:
            del self.objects[k]
        return len(doomed)


class S3Store:
    """Matrices as .npy objects in one bucket. Immutable inputs are kept in memory by key, as a
    warm Lambda container keeps them between invocations."""

    _cache: ClassVar[dict[tuple[str, str], np.ndarray]] = {}
    _cache_lock = threading.Lock()

    def __init__(self, bucket: str, client: Any = None) -> None:
        self.bucket = bucket
        self.client = client or aws_client("s3")

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise MissingObject(f"no object {key} in bucket {self.bucket}") from None

    def put(self, key: str, array: np.ndarray) -> None:
        self.put_bytes(key, to_npy(array))

    def get(self, key: str) -> np.ndarray:
        return from_npy(self.get_bytes(key))

    def get_cached(self, key: str) -> np.ndarray:
        cache_key = (self.bucket, key)
        hit = self._cache.get(cache_key)
        if hit is None:
            hit = self.get(key)
            hit.setflags(write=False)
            with self._cache_lock:
                if len(self._cache) > 16:
                    self._cache.clear()
                self._cache[cache_key] = hit
        return hit

    def delete_prefix(self, prefix: str) -> int:
        deleted = 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            for i in range(0, len(objects), 1000):
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": objects[i : i + 1000], "Quiet": True}
                )
            deleted += len(objects)
        return deleted


# --- the run record -----------------------------------------------------------------------------


class RunTable(Protocol):
    def create(self, run_id: str, record: dict[str, Any]) -> dict[str, Any]: ...
    def get(self, run_id: str, fields: tuple[str, ...] = ()) -> dict[str, Any] | None: ...
    def costs(self, run_id: str, epochs: range) -> dict[int, float]: ...
    def record_cost(self, run_id: str, epoch: int, cost: float) -> None: ...
    def commit(self, run_id: str, epoch: int) -> int: ...
    def update(self, run_id: str, fields: dict[str, Any]) -> None: ...


class StaleCommit(EventError):
    """A commit of an epoch the run is not at (neither the next one nor a duplicate)."""


def new_record(run_id: str, parameters_json: str, **fields: Any) -> dict[str, Any]:
    now = _now()
    return {
        "run_id": run_id,
        "parameters": parameters_json,
        "status": "RUNNING",
        "committed_epoch": 0,
        "costs": {},
        "created_at": now,
        "updated_at": now,
        **fields,
    }


def costs_in_order(record: dict[str, Any]) -> list[float]:
    """The cost of every epoch, from the record's map of exact reprs (see `record_cost`)."""
    costs = record.get("costs", {})
    return [float(costs[str(e)]) for e in range(len(costs))]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _commit_outcome(run_id: str, epoch: int, committed: int) -> int:
    """What a commit of `epoch` means when the run is at `committed`."""
    if committed == epoch + 1:
        return committed  # a duplicate: the epoch is already committed, nothing to do
    raise StaleCommit(f"run {run_id} is at epoch {committed}; cannot commit epoch {epoch}")


class MemoryRunTable:
    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    def create(self, run_id: str, record: dict[str, Any]) -> dict[str, Any]:
        return self.items.setdefault(run_id, json.loads(json.dumps(record)))

    def get(self, run_id: str, fields: tuple[str, ...] = ()) -> dict[str, Any] | None:
        item = self.items.get(run_id)
        if item is None or not fields:
            return item
        return {k: item[k] for k in fields if k in item}

    def costs(self, run_id: str, epochs: range) -> dict[int, float]:
        recorded = self._item(run_id)["costs"]
        return {e: float(recorded[str(e)]) for e in epochs if str(e) in recorded}

    def record_cost(self, run_id: str, epoch: int, cost: float) -> None:
        self._item(run_id)["costs"][str(epoch)] = repr(cost)

    def commit(self, run_id: str, epoch: int) -> int:
        item = self._item(run_id)
        if item["committed_epoch"] != epoch:
            return _commit_outcome(run_id, epoch, item["committed_epoch"])
        item["committed_epoch"] = epoch + 1
        item["updated_at"] = _now()
        return epoch + 1

    def update(self, run_id: str, fields: dict[str, Any]) -> None:
        item = self._item(run_id)
        fields = json.loads(json.dumps(fields))
        if any(item.get(k) != v for k, v in fields.items()):
            item.update(fields, updated_at=_now())

    def _item(self, run_id: str) -> dict[str, Any]:
        try:
            return self.items[run_id]
        except KeyError:
            raise MissingObject(f"unknown run {run_id}") from None


class _Serialised:
    """A DynamoDB client whose calls are made one at a time within this process.

    In a Lambda container nothing runs concurrently, so the lock is never contended. The local
    engine runs handlers, the interpreter and the progress follower in threads of one process,
    against an emulator whose tables are not safe for concurrent requests (a read of the run
    record can meet the Loss stage's update of it)."""

    _lock = threading.RLock()

    def __init__(self, client: Any) -> None:
        self._client = client
        self.exceptions = client.exceptions

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._client, name)

        def serialised(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return call(*args, **kwargs)

        return serialised


class DynamoRunTable:
    """The run in DynamoDB, as one item per run plus one small item per epoch's cost (see
    `RUN_ENTRY`, `cost_entry`): the record stays a few hundred bytes however long the run, so
    each write costs one write unit and no read copies every cost. Costs are stored as the
    float's repr (exact round trip, no Decimal rounding). The epoch commit is one conditional
    write. `get` returns the record with its costs, as the other tables do."""

    def __init__(self, table: str, client: Any = None) -> None:
        self.table = table
        self.client = _Serialised(client or aws_client("dynamodb"))

    def create(self, run_id: str, record: dict[str, Any]) -> dict[str, Any]:
        """Create the run (a record that carries costs, as a saved run does, gets them back)."""
        head = {k: v for k, v in record.items() if k != "costs"}
        try:
            self.client.put_item(
                TableName=self.table,
                Item={**_to_item(head), **_entry(RUN_ENTRY)},
                ConditionExpression="attribute_not_exists(run_id)",
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            existing = self.get(run_id)
            assert existing is not None
            return existing
        for epoch, cost in record.get("costs", {}).items():
            self.record_cost(run_id, int(epoch), float(cost))
        return record

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
            TableName=self.table, Key=run_key(run_id), ConsistentRead=True, **kwargs
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
        return self._costs(run_id, cost_entry(epochs.start), cost_entry(epochs.stop - 1))

    def _costs(
        self, run_id: str, first: str = cost_entry(0), last: str = cost_entry(9_999_999)
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
                out[epoch_of_entry(item["entry"]["S"])] = float(item["cost"]["S"])
            if "LastEvaluatedKey" not in page:
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def record_cost(self, run_id: str, epoch: int, cost: float) -> None:
        """One small item of its own, written whole (again, with the same value, by a retry)."""
        self.client.put_item(
            TableName=self.table,
            Item={"run_id": {"S": run_id}, **_entry(cost_entry(epoch)), "cost": {"S": repr(cost)}},
        )

    def commit(self, run_id: str, epoch: int) -> int:
        try:
            self.client.update_item(
                TableName=self.table,
                Key=run_key(run_id),
                UpdateExpression="SET committed_epoch = :next, updated_at = :now",
                ConditionExpression="committed_epoch = :e",
                ExpressionAttributeValues={
                    ":e": {"N": str(epoch)},
                    ":next": {"N": str(epoch + 1)},
                    ":now": {"S": _now()},
                },
            )
            return epoch + 1
        except self.client.exceptions.ConditionalCheckFailedException:
            record = self.get(run_id)
            if record is None:
                raise MissingObject(f"unknown run {run_id}") from None
            return _commit_outcome(run_id, epoch, record["committed_epoch"])

    def update(self, run_id: str, fields: dict[str, Any]) -> None:
        """Set fields (and updated_at) only if one of them changes, so that a repeated update
        leaves the record exactly as the first one did."""
        n = len(fields)
        names = {f"#f{i}": k for i, k in enumerate(fields)}
        values = {f":v{i}": _to_value(v) for i, v in enumerate(fields.values())}
        values[":now"] = {"S": _now()}
        changes = " OR ".join(f"#f{i} <> :v{i} OR attribute_not_exists(#f{i})" for i in range(n))
        try:
            self.client.update_item(
                TableName=self.table,
                Key=run_key(run_id),
                UpdateExpression="SET "
                + ", ".join(f"#f{i} = :v{i}" for i in range(n))
                + ", updated_at = :now",
                ConditionExpression=f"attribute_exists(run_id) AND ({changes})",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            if self.get(run_id) is None:
                raise MissingObject(f"unknown run {run_id}") from None


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


# --- clients ------------------------------------------------------------------------------------

_clients: dict[tuple[str, str | None, str | None], Any] = {}
_clients_lock = threading.Lock()


def aws_client(service: str) -> Any:
    """One boto3 client per service and endpoint, reused as a warm Lambda reuses it.
    `AWS_ENDPOINT_URL` (e.g. an emulator) is honoured by boto3 itself."""
    import boto3
    from botocore.config import Config

    key = (service, os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_REGION"))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            # Checksums only where an operation requires them: the objects are small and the
            # transport is TLS; it saves a CRC over every matrix on both sides.
            config = Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            client = _clients[key] = boto3.client(service, config=config)
        return client


def reset_clients() -> None:
    """Forget cached clients (tests that switch emulated accounts or regions)."""
    with _clients_lock:
        _clients.clear()
    S3Store._cache.clear()
