"""Scaling sweep: how the local engine's overhead grows with epochs, width and depth, and a fitted
model of it.

    python bench/sweep.py            # epochs 100/500/2,500; width 3/7/20/100; depth 2/4/6
    python bench/sweep.py --quick    # a smoke run

Three axes around the reference network (12288-7-1): the number of epochs (whole layer per task),
the width of the hidden layers and the depth (both at SWEEP_EPOCHS epochs, a whole layer and one
neuron per task). Every point runs the local engine and the direct engine of the same grain, each
in its own child process (see engines.py); the overhead is the difference, the part of the wall
time the serverless design adds to the same arithmetic.

The model fitted over all points, by least squares on relative errors (every point counts the
same, however long):

    overhead = fixed + a * state transitions + b * requests (S3 and DynamoDB) + c * MB moved
               + d * state transitions * fan-out

where fan-out is the most shards any layer has (1 with a whole layer per task): a Map running
many iterations side by side makes every state dearer (its threads share one interpreter lock).

Results go to bench/results/sweep.{json,md}, with the coefficients and how well they fit.
`--refit` fits the model again to the saved points without measuring.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engines import ROOT, markdown, measure, reference

SWEEP_EPOCHS = 50
MODEL_TERMS = (
    "fixed_s",
    "per_transition_ms",
    "per_request_ms",
    "per_mb_ms",
    "per_transition_and_shard_of_fan_out_ms",
)


def points(quick: bool) -> list[tuple[str, int, int, int, str]]:
    """(axis, epochs, width, depth, grain) of every measurement."""
    if quick:
        epochs, widths, depths, n = (10, 20), (3, 7), (2, 3), 5
    else:
        epochs, widths, depths, n = (100, 500, 2500), (3, 7, 20, 100), (2, 4, 6), SWEEP_EPOCHS
    out = [("epochs", e, 7, 2, "layer") for e in epochs]
    for grain in ("layer", "neuron"):
        out += [("width", n, w, 2, grain) for w in widths]
        out += [("depth", n, 7, d, grain) for d in depths]
    return out


def run_point(epochs: int, width: int, depth: int, grain: str, data: str) -> dict:
    params = reference(epochs, hidden=width, layers=depth)
    direct = measure(f"direct-{grain}", params, data)
    local = measure(f"local-{grain}", params, data)
    overhead = local["wall_seconds"] - direct["wall_seconds"]
    requests = local["s3_requests"] + local["dynamodb_requests"]
    return {
        "network": "-".join(["12288"] + [str(width)] * (depth - 1) + ["1"]),
        "epochs": epochs,
        "grain": grain,
        "fan_out": width if grain == "neuron" else 1,
        "direct_s": round(direct["wall_seconds"], 2),
        "local_s": round(local["wall_seconds"], 2),
        "ratio": round(local["wall_seconds"] / direct["wall_seconds"], 1),
        "overhead_s": round(overhead, 2),
        "transitions": local["state_transitions"],
        "invocations": local["lambda_invocations"],
        "requests": requests,
        "mb_moved": round(local["s3_bytes"] / 1e6, 1),
        "overhead_per_epoch_ms": round(1000 * overhead / epochs, 1),
        "peak_rss_mb": round(local["peak_rss_mb"]),
        "same_final_cost": local["final_cost"] == direct["final_cost"],
    }


def fit(rows: list[dict]) -> dict:
    """Least squares of the overhead on the model's terms, on relative errors; how well it fits."""
    X = np.array(
        [
            [1.0, r["transitions"], r["requests"], r["mb_moved"], r["transitions"] * r["fan_out"]]
            for r in rows
        ]
    )
    y = np.array([r["overhead_s"] for r in rows])
    w = 1 / y
    coef, *_ = np.linalg.lstsq(X * w[:, None], y * w, rcond=None)
    predicted = X @ coef
    relative = np.abs(predicted - y) / y
    for r, p in zip(rows, predicted, strict=True):
        r["model_s"] = round(float(p), 2)
    terms = {"fixed_s": round(float(coef[0]), 3)}
    for name, c in zip(MODEL_TERMS[1:], coef[1:], strict=True):
        terms[name] = round(1000 * float(c), 4)
    return {
        **terms,
        "median_relative_error": round(float(np.median(relative)), 3),
        "worst_relative_error": round(float(relative.max()), 3),
    }


def report(rows: list[dict], out: Path) -> None:
    model = fit(rows)
    table = markdown(rows)
    summary = (
        "overhead = {fixed_s} s + {per_transition_ms} ms x transitions + {per_request_ms} ms x "
        "requests + {per_mb_ms} ms x MB moved + {per_transition_and_shard_of_fan_out_ms} ms x "
        "transitions x fan-out  (relative error: median {median_relative_error}, worst "
        "{worst_relative_error})"
    ).format(**model)
    print("\n" + table + "\n\n" + summary)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({"rows": rows, "model": model}, indent=1))
    (out / "sweep.md").write_text(table + "\n\n" + summary + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few small points, for a smoke run")
    ap.add_argument("--data", default=os.environ.get("SNN_DATA_DIR"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--refit", action="store_true", help="fit the saved points again")
    args = ap.parse_args()
    if args.refit:
        rows = json.loads((Path(args.out) / "sweep.json").read_text())["rows"]
        for r in rows:  # points saved before the fan-out was recorded
            width = int(r["network"].split("-")[1])
            r.setdefault("fan_out", width if r["grain"] == "neuron" else 1)
        report(rows, Path(args.out))
        return
    if not args.data:
        sys.exit("sweep: set SNN_DATA_DIR or pass --data DIR (the cat/non-cat folder)")
    rows = []
    for axis, epochs, width, depth, grain in points(args.quick):
        row = {"axis": axis, **run_point(epochs, width, depth, grain, args.data)}
        rows.append(row)
        print(
            f"  {axis:6s} {row['network']:22s} {epochs:5d} epochs  {grain:6s}  "
            f"direct {row['direct_s']:8.2f} s  local {row['local_s']:8.2f} s  "
            f"x{row['ratio']:<6}  {row['overhead_per_epoch_ms']:8.1f} ms/epoch overhead",
            flush=True,
        )
    report(rows, Path(args.out))


if __name__ == "__main__":
    main()
