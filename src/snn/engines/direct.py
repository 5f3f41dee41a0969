"""The direct engine: the stages of the state machine called in a plain Python loop, on
in-memory stores, in the order `snn.epoch` gives (the state machine's). It computes each layer
shard by shard exactly as the state machine fans it out, so its numbers are the baseline every
other engine is compared to, bit for bit."""

from __future__ import annotations

import time

from snn import blas, stages
from snn.engines import RunSpec, results
from snn.epoch import Call, calls, calls_in_order
from snn.errors import EventError, RunFailed
from snn.report import RunResult
from snn.stores import MemoryRunTable, MemoryStore


def _where(call: Call) -> str:
    """Where a stage failed, as the other engines say it (from the execution history)."""
    state = "".join(part.title() for part in call.stage.split("_"))
    rest = [
        f"{k} {call.fields[k]}"
        for k in ("batch", "layer", "shard")
        if k in call.fields and (k != "batch" or call.fields[k])
    ]
    return f"at epoch {call.fields['epoch']} in {state}" + (f" ({', '.join(rest)})" if rest else "")


def train(spec: RunSpec) -> RunResult:
    start = time.perf_counter()
    blas.use_threads(blas.from_environment())
    p, run_id = spec.parameters, spec.run_id
    ctx = stages.Context(MemoryStore(), MemoryRunTable())
    source = spec.source()
    plan = stages.init(ctx, run_id, p, source.dataset(p.training), source.keys(p.training))
    batches = plan["batches"]
    for k in range(plan["progress"]["step"], plan["steps"]):
        epoch, batch = divmod(k, batches)
        stopped = False
        for call in calls_in_order(calls(plan, epoch, batch)):
            try:
                result = stages.STEP_STAGES[call.stage](ctx, run_id, **call.fields)
            except EventError as exc:
                raise RunFailed(
                    f"run {run_id} failed {_where(call)}: {type(exc).__name__}: {exc}"
                ) from None
            if call.stage == "commit":
                stopped = result["stopped"]
        if batch == batches - 1:
            spec.epoch_done(epoch, ctx.runs.costs(run_id, range(epoch, epoch + 1))[epoch])
        if stopped:
            break
    stages.evaluate(ctx, run_id)
    return results.collect(ctx.store, ctx.runs, run_id, "direct", time.perf_counter() - start)
