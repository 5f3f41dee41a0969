"""The floor of the local engine: the state machine with handlers that do nothing.

    python bench/floor.py                 # the reference network (12288-7-1), 200 epochs
    python bench/floor.py --neurons-per-task 1

The real definition runs on the embedded stack, but every function answers at once with what
the definition reads of it (Init the plan, Loss a cost, Commit the next epoch): no S3, no
DynamoDB, no maths. What is left is moto's interpreter and the Lambda invoke path, the part of
the local engine's overhead that no handler, store or serialisation change can remove. Printed:
wall time per epoch, per state transition and per invocation, and the ratio of the floor to the
direct engine's epoch, measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engines import ROOT, reference


def stubs(p: Any) -> dict[str, Any]:
    """Handlers that return at once what the definition reads of each function."""
    from snn import stages

    def init(event: dict, _: Any) -> dict:
        plan = stages.plan(p, event["run_id"], 0)
        return plan | {"chunk_end": p.epochs}  # one execution: no ContinueAsNew

    def answer(result: dict) -> Any:
        return lambda event, _: result

    return {
        "InitFunction": init,
        "ForwardLinearFunction": answer({}),
        "ActivationFunction": answer({}),
        "LossFunction": answer({"cost": 0.5}),
        "BackwardFunction": answer({}),
        "UpdateFunction": answer({}),
        "CommitFunction": lambda event, _: {"epoch": event["epoch"] + 1},
        "EvaluateFunction": answer({}),
    }


def floor(p: Any) -> dict[str, float]:
    from snn.engines import local, stack

    with local.EmbeddedStack(ROOT / "template.yaml") as embedded:
        assert embedded.lambdas is not None and embedded.stack is not None
        embedded.lambdas.handlers.update(stubs(p))
        st = embedded.stack
        start = time.perf_counter()
        given = {k: "unused" for k in ("parameters_key", "train_key", "test_key")}
        arn = stack.start(st, {"run_id": "floor", **given}, "floor")
        while st.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING":
            time.sleep(0.05)
        wall = time.perf_counter() - start
        description = st.sfn.describe_execution(executionArn=arn)
        if description["status"] != "SUCCEEDED":
            raise SystemExit(f"floor: the execution ended {description['status']}")
        stats = stack.execution_stats(embedded.history(arn))
    return {
        "wall_seconds": wall,
        "transitions": stats["state_transitions"],
        "invocations": stats["lambda_invocations"],
    }


def direct_epoch_seconds(p: Any, data: str) -> float:
    from snn.data import load_dataset
    from snn.engines import direct

    dataset = load_dataset(data)
    start = time.perf_counter()
    direct.train(p, dataset, "floor")
    return (time.perf_counter() - start) / p.epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=200, help="at most 240 (one execution)")
    ap.add_argument("--neurons-per-task", type=int, default=7)
    ap.add_argument("--data", default=os.environ.get("SNN_DATA_DIR"))
    args = ap.parse_args()
    if not args.data:
        sys.exit("floor: set SNN_DATA_DIR or pass --data DIR (the cat/non-cat folder)")
    if not 1 <= args.epochs <= 240:
        sys.exit("floor: --epochs must be from 1 to 240 (one execution of at most 25,000 events)")
    from snn.parameters import Parameters

    p = Parameters.from_dict(reference(args.epochs) | {"neurons_per_task": args.neurons_per_task})
    f = floor(p)
    direct = direct_epoch_seconds(p, args.data)
    per_epoch = f["wall_seconds"] / args.epochs
    result = {
        "epochs": args.epochs,
        "neurons_per_task": args.neurons_per_task,
        "floor_ms_per_epoch": round(1000 * per_epoch, 2),
        "transitions_per_epoch": round(f["transitions"] / args.epochs, 1),
        "invocations_per_epoch": round(f["invocations"] / args.epochs, 1),
        "ms_per_transition": round(1000 * f["wall_seconds"] / f["transitions"], 3),
        "ms_per_invocation": round(1000 * f["wall_seconds"] / f["invocations"], 3),
        "direct_ms_per_epoch": round(1000 * direct, 2),
        "floor_over_direct": round(per_epoch / direct, 2),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
