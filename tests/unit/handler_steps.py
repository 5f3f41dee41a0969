"""Helpers shared by the handler tests: the handlers by stage name, the events of one epoch in
the order of the state machine, and a snapshot of everything a stack holds."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

STAGES = (
    "init",
    "forward_linear",
    "activation",
    "loss",
    "backward",
    "update",
    "commit",
    "evaluate",
    "record_failure",
    "continue_as_new",
)
# Functions outside training: the state machine never invokes them.
OUTSIDE_TRAINING = ("predict",)


def handler(stage: str) -> Any:
    """The Lambda entry point of a stage, as template.yaml names it (snn.handlers.<stage>)."""
    return importlib.import_module(f"snn.handlers.{stage}").handler


def epoch_events(plan: dict[str, Any], epoch: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """(stage, event) for one epoch, in the order the state machine invokes them: forward
    layer by layer (linear then activation per shard), loss, backward from the last layer,
    update of every shard, commit."""
    run_id = plan["run_id"]

    def shard_event(layer: int, shard: int) -> dict[str, Any]:
        return {"run_id": run_id, "epoch": epoch, "layer": layer, "shard": shard}

    for item in plan["forward"]:
        for shard in item["shards"]:
            yield "forward_linear", shard_event(item["layer"], shard)
            yield "activation", shard_event(item["layer"], shard)
    yield "loss", {"run_id": run_id, "epoch": epoch}
    for item in plan["backward"]:
        for shard in item["shards"]:
            yield "backward", shard_event(item["layer"], shard)
    for item in plan["update"]:
        yield "update", shard_event(item["layer"], item["shard"])
    yield "commit", {"run_id": run_id, "epoch": epoch}


def run_events(plan: dict[str, Any], epochs: range | None = None) -> None:
    """Every epoch of the plan (or the given ones), through the handlers."""
    for epoch in epochs if epochs is not None else range(plan["progress"]["epoch"], plan["epochs"]):
        for stage, event in epoch_events(plan, epoch):
            handler(stage)(event, None)


class Snapshot:
    """Everything a stack holds: every object of the bucket (key -> bytes) and every item of the
    table (as DynamoDB returns it, sorted by run id), taken as often as a test needs.

    An object's bytes are fetched again only when its ETag (the MD5 of its bytes) is new, so a
    snapshot costs two listing calls, not one GET per object."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self._bytes: dict[tuple[str, str], bytes] = {}

    def __call__(self) -> tuple[dict[str, bytes], list[dict[str, Any]]]:
        st = self.stack
        objects = {}
        for page in st.s3.get_paginator("list_objects_v2").paginate(Bucket=st.bucket):
            for o in page.get("Contents", []):
                cache_key = (o["Key"], o["ETag"])
                if cache_key not in self._bytes:
                    body = st.s3.get_object(Bucket=st.bucket, Key=o["Key"])["Body"].read()
                    self._bytes[cache_key] = body
                objects[o["Key"]] = self._bytes[cache_key]
        items = []
        scan = st.dynamodb.get_paginator("scan")
        for page in scan.paginate(TableName=st.table, ConsistentRead=True):
            items.extend(page["Items"])
        return objects, sorted(items, key=lambda item: item["run_id"]["S"])


def tiny_parameters(epochs: int = 2) -> Any:
    """A 2-2-1 network: the smallest that has every stage."""
    from snn.parameters import Parameters

    return Parameters.from_dict(
        {
            "epochs": epochs,
            "layers": 2,
            "activations": {"layer1": "relu", "layer2": "sigmoid"},
            "neurons": {"layer1": 2, "layer2": 1},
            "learning_rate": 0.05,
        }
    )
