"""The direct engine: the stages of the state machine called in a plain Python loop, on
in-memory stores. It computes each layer shard by shard exactly as the state machine fans it out,
so its numbers are the baseline every other engine is compared to, bit for bit."""

from __future__ import annotations

import time

from snn import stages
from snn.data import Dataset
from snn.engines import OnEpoch
from snn.parameters import Parameters
from snn.report import RunResult
from snn.store import MemoryRunTable, MemoryStore, costs_in_order, neurons_key


def train(
    p: Parameters, dataset: Dataset, run_id: str, on_epoch: OnEpoch | None = None
) -> RunResult:
    start = time.perf_counter()
    ctx = stages.Context(MemoryStore(), MemoryRunTable())
    plan = stages.init(ctx, run_id, p, dataset)
    for epoch in range(plan["progress"]["epoch"], p.epochs):
        for item in plan["forward"]:
            for shard in item["shards"]:
                stages.forward_linear(ctx, run_id, epoch, item["layer"], shard)
                stages.activation(ctx, run_id, epoch, item["layer"], shard)
        cost = stages.loss(ctx, run_id, epoch)["cost"]
        for item in plan["backward"]:
            for shard in item["shards"]:
                stages.backward(ctx, run_id, epoch, item["layer"], shard)
        for item in plan["update"]:
            stages.update(ctx, run_id, epoch, item["layer"], item["shard"])
        stages.commit(ctx, run_id, epoch)
        if on_epoch:
            on_epoch(epoch, cost)
    evaluation = stages.evaluate(ctx, run_id)
    record = ctx.runs.get(run_id) or {}
    return RunResult(
        run_id=run_id,
        engine="direct",
        parameters=p.to_dict(),
        costs=costs_in_order(record),
        weights=stages.final_weights(ctx, run_id),
        train_accuracy=evaluation["train_accuracy"],
        test_accuracy=evaluation["test_accuracy"],
        confusion_matrix=evaluation["confusion_matrix"],
        wall_seconds=time.perf_counter() - start,
        neurons=ctx.store.get_bytes(neurons_key(run_id)),
    )
