"""The direct engine: the stages of the state machine called in a plain Python loop, on
in-memory stores, in the order `snn.epoch` gives (the state machine's). It computes each layer
shard by shard exactly as the state machine fans it out, so its numbers are the baseline every
other engine is compared to, bit for bit."""

from __future__ import annotations

import time

from snn import blas, keys, stages
from snn.data import read_h5_pair
from snn.engines import RunSpec
from snn.epoch import Call, calls_in_order, epoch_steps
from snn.errors import EventError, RunFailed
from snn.report import RunResult
from snn.stores import MemoryRunTable, MemoryStore, costs_in_order
from snn.uploads import data_keys


def _where(call: Call) -> str:
    """Where a stage failed, as the other engines say it (from the execution history)."""
    state = "".join(part.title() for part in call.stage.split("_"))
    rest = [f"{k} {call.fields[k]}" for k in ("layer", "shard") if k in call.fields]
    return f"at epoch {call.fields['epoch']} in {state}" + (f" ({', '.join(rest)})" if rest else "")


def train(spec: RunSpec) -> RunResult:
    start = time.perf_counter()
    blas.use_threads(blas.from_environment())
    p, run_id = spec.parameters, spec.run_id
    ctx = stages.Context(MemoryStore(), MemoryRunTable())
    dataset = read_h5_pair(spec.data_dir)
    plan = stages.init(ctx, run_id, p, dataset, data_keys(spec.data_dir))
    for epoch in range(plan["progress"]["epoch"], p.epochs):
        for call in calls_in_order(epoch_steps(plan, epoch)):
            try:
                result = stages.EPOCH_STAGES[call.stage](ctx, run_id, **call.fields)
            except EventError as exc:
                raise RunFailed(
                    f"run {run_id} failed {_where(call)}: {type(exc).__name__}: {exc}"
                ) from None
            if call.stage == "loss":
                cost = result["cost"]
        spec.epoch_done(epoch, cost)
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
        neurons=ctx.store.get_bytes(keys.neurons_key(run_id)),
    )
