"""A finished run's results, as every engine reports them: from the run table and the stored
model (so an engine reports what the stack holds, not what it believes it computed)."""

from __future__ import annotations

import json
from typing import Any

from snn import keys
from snn.errors import RunFailed
from snn.parameters import Parameters
from snn.predict import read_weights
from snn.report import RunResult
from snn.stores import MatrixStore, RunTable, costs_in_order


def collect(
    store: MatrixStore,
    runs: RunTable,
    run_id: str,
    engine: str,
    wall_seconds: float,
    extra: dict[str, Any] | None = None,
) -> RunResult:
    record = runs.get(run_id)
    if record is None or record.get("status") != "SUCCEEDED":
        raise RunFailed(f"run {run_id} has not succeeded (status {record and record['status']})")
    p = Parameters.from_json(record["parameters"])
    model = store.get_bytes(keys.model_key(run_id))
    return RunResult(
        run_id=run_id,
        engine=engine,
        parameters=p.to_dict(),
        costs=costs_in_order(record),
        weights=read_weights(model, keys.model_key(run_id)),
        train_accuracy=float(record["train_accuracy"]),
        test_accuracy=float(record["test_accuracy"]),
        confusion_matrix={k: int(v) for k, v in record["confusion_matrix"].items()},
        wall_seconds=wall_seconds,
        extra={**training_summary(runs, run_id, p, record), **(extra or {})},
        neurons=store.get_bytes(keys.neurons_key(run_id)),
        model=model,
    )


def training_summary(
    runs: RunTable, run_id: str, p: Parameters, record: dict[str, Any]
) -> dict[str, Any]:
    """What metrics.json says of how the run learned, beyond its costs: the epoch whose model
    it kept, and with a validation set, the validation costs, the best epoch and why the run
    stopped early, if it did."""
    out: dict[str, Any] = {"model_epoch": int(record.get("model_epoch", p.epochs - 1))}
    split = json.loads(record.get("test_split") or "null")
    if split is not None:
        out["test_split"] = split
    if p.training.validation is not None:
        done = int(record["committed_epoch"])
        valid = runs.values(run_id, "valid", range(done))
        out["validation_costs"] = [valid[e] for e in sorted(valid)]
        out["valid_accuracy"] = float(record["valid_accuracy"])
        out["best_epoch"] = record.get("best_epoch")
        out["stopped_early"] = record.get("stopped") or None
    return out
