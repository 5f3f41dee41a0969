"""Benchmark: the engines side by side on one network, against a textbook numpy loop.

    python bench/engines.py                       # reference network, 2,500 epochs, 3 repetitions
    python bench/engines.py --quick               # a smoke run (under a minute)
    python bench/engines.py --epochs 100 --engines textbook,direct-layer,local-layer

Each measurement runs in its own child process (clean timings and peak RSS); the engines take
turns within every repetition (A/B alternation), and the medians are reported. Times on a shared
machine are noisy: read the ratios, which are measured side by side in one run. Results go to
bench/results/engines.json and engines.md.

Engines: textbook (a plain numpy loop, the floor), direct-layer and direct-neuron (the direct
engine with a whole layer / one neuron per task), local-layer and local-neuron (the state
machine on the embedded stack).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("textbook", "direct-layer", "direct-neuron", "local-layer", "local-neuron")


def reference(epochs: int, hidden: int = 7, layers: int = 2) -> dict:
    """The reference network (12288-7-1), or a deeper/wider one for the scaling sweep."""
    acts = {f"layer{i}": "relu" for i in range(1, layers)} | {f"layer{layers}": "sigmoid"}
    neurons = {f"layer{i}": hidden for i in range(1, layers)} | {f"layer{layers}": 1}
    return {
        "epochs": epochs,
        "layers": layers,
        "activations": acts,
        "neurons": neurons,
        "learning_rate": 0.0075,
        "initialization": "scaled" if layers == 2 else "xavier",
    }


def textbook(params: dict, X: np.ndarray, Y: np.ndarray) -> list[float]:
    """Forward, cost, backward and update with plain numpy, layer by layer: the floor."""
    L = params["layers"]
    dims = [X.shape[0]] + [params["neurons"][f"layer{i}"] for i in range(1, L + 1)]
    np.random.seed(1)
    scale = (lambda n: 0.01) if params["initialization"] == "scaled" else (lambda n: 1 / np.sqrt(n))
    W = [np.random.randn(dims[i], dims[i - 1]) * scale(dims[i - 1]) for i in range(1, L + 1)]
    b = [np.zeros((dims[i], 1)) for i in range(1, L + 1)]
    m, lr, costs = X.shape[1], params["learning_rate"], []
    for _ in range(params["epochs"]):
        A, Zs, As = X, [], [X]
        for i in range(L):
            Z = W[i].dot(A) + b[i]
            A = 1 / (1 + np.exp(-Z)) if i == L - 1 else np.maximum(0, Z)
            Zs.append(Z)
            As.append(A)
        costs.append(
            float(
                np.squeeze((1.0 / m) * (-np.dot(Y, np.log(A).T) - np.dot(1 - Y, np.log(1 - A).T)))
            )
        )
        dA = -(np.divide(Y, A) - np.divide(1 - Y, 1 - A))
        for i in reversed(range(L)):
            if i == L - 1:
                s = 1 / (1 + np.exp(-Zs[i]))
                dZ = dA * s * (1 - s)
            else:
                dZ = np.array(dA, copy=True)
                dZ[Zs[i] <= 0] = 0
            dW = 1.0 / m * np.dot(dZ, As[i].T)
            db = 1.0 / m * np.sum(dZ, axis=1, keepdims=True)
            dA = np.dot(W[i].T, dZ)
            W[i] = W[i] - lr * dW
            b[i] = b[i] - lr * db
    return costs


class Bytes:
    """Bytes the run moves through S3 (object bodies written and read)."""

    def __init__(self) -> None:
        self.total = 0

    def install(self, session: Any) -> None:
        session.events.register("provide-client-params.s3.PutObject", self._put)
        session.events.register("after-call.s3.GetObject", self._get)

    def _put(self, params: dict[str, Any], **_: Any) -> None:
        body = params.get("Body") or b""
        self.total += len(body) if isinstance(body, bytes | str) else 0

    def _get(self, parsed: dict[str, Any], **_: Any) -> None:
        self.total += int(parsed.get("ContentLength", 0))


def child(engine: str, params: dict, data_dir: str) -> dict:
    """One measurement, in this (child) process."""
    sys.path.insert(0, str(ROOT / "src"))
    from snn.data import load_dataset
    from snn.parameters import Parameters

    dataset = load_dataset(data_dir)
    kind, _, grain = engine.partition("-")
    if grain:
        params = params | {
            "neurons_per_task": 1 if grain == "neuron" else max(params["neurons"].values())
        }
    extra: dict = {}
    start = time.perf_counter()
    if kind == "textbook":
        costs = textbook(params, dataset.train_x, dataset.train_y)
    elif kind == "direct":
        from snn.engines import direct

        costs = direct.train(Parameters.from_dict(params), dataset, "bench").costs
    else:
        from snn.commands.cost import Meter
        from snn.engines import local

        meter, moved = Meter(), Bytes()
        local.SESSION_HOOKS.extend([meter.install, moved.install])
        result = local.train(
            Parameters.from_dict(params),
            Path(data_dir),
            "bench",
            template_path=ROOT / "template.yaml",
        )
        costs = result.costs
        extra = {k: result.extra[k] for k in ("state_transitions", "lambda_invocations")}
        for service in ("s3", "dynamodb"):
            extra[f"{service}_requests"] = sum(
                n for (s, _, _), n in meter.requests.items() if s == service
            )
        extra["s3_bytes"] = moved.total
        extra["executions"] = len(result.extra["executions"])
        extra["max_history_events"] = max(e["history_events"] for e in result.extra["executions"])
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "engine": engine,
        "wall_seconds": wall,
        "peak_rss_mb": peak_kb / 1024,
        "final_cost": costs[-1],
        "epochs": len(costs),
        **extra,
    }


def measure(engine: str, params: dict, data_dir: str) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            engine,
            "--params-json",
            json.dumps(params),
            "--data",
            data_dir,
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(engines: list[str], params: dict, data_dir: str, reps: int) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {e: [] for e in engines}
    for rep in range(reps):
        order = engines if rep % 2 == 0 else engines[::-1]  # A/B alternation
        for engine in order:
            r = measure(engine, params, data_dir)
            results[engine].append(r)
            print(
                f"  rep {rep + 1}/{reps}  {engine:14s} {r['wall_seconds']:8.2f} s  "
                f"peak {r['peak_rss_mb']:6.0f} MB",
                flush=True,
            )
    return results


def summarise(results: dict[str, list[dict]], epochs: int) -> list[dict]:
    medians = {e: statistics.median(r["wall_seconds"] for r in rs) for e, rs in results.items()}
    base = medians.get("direct-layer") or next(iter(medians.values()))
    floor = medians.get("textbook")
    rows = []
    for engine, rs in results.items():
        row = {
            "engine": engine,
            "median_seconds": round(medians[engine], 3),
            "ratio_to_direct_layer": round(medians[engine] / base, 3),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in rs)),
            "final_cost": rs[0]["final_cost"],
            "repetitions": len(rs),
        }
        if floor:
            row["ratio_to_textbook"] = round(medians[engine] / floor, 3)
        if "state_transitions" in rs[0]:
            r0 = rs[0]
            row["transitions_per_epoch"] = round(r0["state_transitions"] / epochs, 1)
            row["invocations_per_epoch"] = round(r0["lambda_invocations"] / epochs, 1)
            overhead = medians[engine] - medians.get(engine.replace("local", "direct"), 0)
            row["overhead_per_epoch_ms"] = round(1000 * overhead / epochs, 2)
            row["overhead_per_transition_ms"] = round(1000 * overhead / r0["state_transitions"], 3)
            row["overhead_per_invocation_ms"] = round(1000 * overhead / r0["lambda_invocations"], 3)
            row["s3_requests_per_epoch"] = round(r0["s3_requests"] / epochs, 1)
            row["dynamodb_requests_per_epoch"] = round(r0["dynamodb_requests"] / epochs, 1)
            row["s3_mb_per_epoch"] = round(r0["s3_bytes"] / epochs / 1e6, 2)
            row["executions"] = r0["executions"]
            row["max_history_events"] = r0["max_history_events"]
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=2500)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--quick", action="store_true", help="20 epochs, 1 repetition")
    ap.add_argument("--data", default=os.environ.get("SNN_DATA_DIR"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--params-json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.data:
        sys.exit("bench: set SNN_DATA_DIR or pass --data DIR (the cat/non-cat folder)")
    if args.child:
        print(json.dumps(child(args.child, json.loads(args.params_json), args.data)))
        return
    epochs, reps = (20, 1) if args.quick else (args.epochs, args.reps)
    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        sys.exit(f"bench: unknown engine(s) {', '.join(sorted(unknown))}; use {', '.join(ENGINES)}")
    params = reference(epochs)
    print(f"bench: 12288-7-1, {epochs} epochs, {reps} repetition(s): {', '.join(engines)}")
    rows = summarise(run(engines, params, args.data, reps), epochs)
    table = markdown(rows)
    print("\n" + table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "engines.json").write_text(json.dumps({"epochs": epochs, "rows": rows}, indent=1))
    (out / "engines.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
