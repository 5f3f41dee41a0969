"""The floor of the local engine: the state machine with handlers that do nothing.

    python bench/floor.py                 # 12288-7-1, as many epochs as one execution holds
    python bench/floor.py --grain neuron  # one neuron per task

The real definition runs on the embedded stack, but every function answers at once with what
the definition reads of it (Init the plan, Loss a cost, Commit the next epoch): no S3, no
DynamoDB, no maths. What is left is moto's interpreter and the Lambda invoke path, the part of
the local engine's overhead that no handler, store or serialisation change can remove. Printed:
wall time per epoch, per state transition and per invocation, and the ratio of the floor to the
direct engine's epoch (same network, same grain), the two measured in turns in this run, medians
of `--reps` repetitions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from networks import REFERENCE, ROOT, network
from tables import markdown

sys.path.insert(0, str(ROOT / "src"))


def stubs(p: Any) -> dict[str, Any]:
    """Handlers that return at once what the definition reads of each function."""
    from snn import epoch

    def init(event: dict, _: Any) -> dict:
        plan = epoch.plan(p, event["input"]["run_id"], 0)
        return plan | {"chunk_end": plan["steps"]}  # one execution: no ContinueAsNew

    def commit(event: dict, _: Any) -> dict:
        step = event["epoch"] + 1  # one batch per epoch
        return {"epoch": step, "batch": 0, "step": step, "stopped": False}

    def answer(result: dict) -> Any:
        return lambda event, _: result

    return {
        "InitFunction": init,
        "ForwardLinearFunction": answer({}),
        "ActivationFunction": answer({}),
        "LossFunction": answer({"cost": 0.5}),
        "BackwardFunction": answer({}),
        "UpdateFunction": answer({}),
        "CommitFunction": commit,
        "EvaluateFunction": answer({}),
    }


def floor(p: Any) -> dict[str, float]:
    from snn.engines import local, stack
    from snn.engines.history import execution_stats

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
        stats = execution_stats(embedded.history(arn))
    return {
        "wall_seconds": wall,
        "transitions": stats["state_transitions"],
        "invocations": stats["lambda_invocations"],
    }


def direct_epoch_seconds(p: Any, data: str) -> float:
    """The direct engine's time per epoch, from its first epoch's end to its last's (without
    reading the data and initialising)."""
    from snn.engines import RunSpec, direct

    ends: list[float] = []
    direct.train(
        RunSpec(p, Path(data), "floor", on_epoch=lambda *_: ends.append(time.perf_counter()))
    )
    return (ends[-1] - ends[0]) / max(1, len(ends) - 1)


def main() -> None:
    from snn.epoch import steps_per_execution
    from snn.parameters import Parameters

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, help="default: as many as one execution holds")
    ap.add_argument("--network", default=REFERENCE)
    ap.add_argument("--grain", choices=("layer", "neuron"), default="layer")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--data", default=os.environ.get("SNN_DATA_DIR"))
    args = ap.parse_args()
    if not args.data:
        sys.exit("floor: set SNN_DATA_DIR or pass --data DIR (the cat/non-cat folder)")
    raw = network(args.network, 2)
    raw["neurons_per_task"] = 1 if args.grain == "neuron" else max(raw["neurons"].values())
    most = steps_per_execution(Parameters.from_dict(raw))
    args.epochs = args.epochs or most
    if not 2 <= args.epochs <= most:
        sys.exit(f"floor: --epochs must be from 2 to {most} (one execution)")
    p = Parameters.from_dict(raw | {"epochs": args.epochs})
    floors, directs = [], []
    for rep in range(args.reps):  # in turns, the other way round every other repetition
        for what in ("floor", "direct") if rep % 2 == 0 else ("direct", "floor"):
            if what == "floor":
                floors.append(floor(p))
            else:
                directs.append(direct_epoch_seconds(p, args.data))
    f = min(floors, key=lambda r: r["wall_seconds"])  # counts are the same in every repetition
    wall = statistics.median(r["wall_seconds"] for r in floors)
    per_epoch, direct = wall / args.epochs, statistics.median(directs)
    result = {
        "network": args.network,
        "grain": args.grain,
        "epochs": args.epochs,
        "repetitions": args.reps,
        "floor_ms_per_epoch": round(1000 * per_epoch, 2),
        "transitions_per_epoch": round(f["transitions"] / args.epochs, 1),
        "invocations_per_epoch": round(f["invocations"] / args.epochs, 1),
        "ms_per_transition": round(1000 * wall / f["transitions"], 3),
        "ms_per_invocation": round(1000 * wall / f["invocations"], 3),
        "direct_ms_per_epoch": round(1000 * direct, 2),
        "floor_over_direct": round(per_epoch / direct, 2),
    }
    print(json.dumps(result, indent=1))
    print("\n" + markdown([result]))


if __name__ == "__main__":
    main()
