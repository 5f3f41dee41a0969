"""One measurement, in a process of its own (clean timings, its own peak RSS). engines.py starts
it; it prints one line of JSON.

    python bench/child.py --engine local-layer --threads chosen --params-json '{...}' --data DIR

Threads: "chosen" is the project's choice (`snn.blas`: one thread unless SNN_BLAS_THREADS says
otherwise, and the parent clears that variable); "default" is the BLAS library's own default:
the parent clears every thread variable the BLAS libraries read (OPENBLAS_NUM_THREADS and the
like), and here `snn.blas.use_threads` is made a no-op before any engine is imported, so nothing
limits the library's threads (OpenBLAS starts one per core).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from networks import ROOT, textbook, weights_digest

sys.path.insert(0, str(ROOT / "src"))

THREADS = ("chosen", "default")


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


def set_threads(threads: str) -> list[int]:
    """Apply the thread policy before any engine runs; the library's own thread count."""
    from snn import blas

    library = blas.threads_in_use()
    if threads == "default":
        blas.use_threads = lambda threads: None  # nothing limits the library
    else:
        blas.use_threads(blas.from_environment())
    return library


def run_textbook(params: dict[str, Any], data_dir: str) -> dict[str, Any]:
    from snn.data import read_h5_pair

    dataset = read_h5_pair(Path(data_dir))
    per_task = params.get("neurons_per_task")
    costs, weights = textbook(params, dataset.train_x, dataset.train_y, per_task)
    return {"final_cost": costs[-1], "epochs": len(costs), "weights": weights_digest(weights)}


def run_direct(params: dict[str, Any], data_dir: str) -> dict[str, Any]:
    from snn.engines import RunSpec, direct
    from snn.parameters import Parameters

    result = direct.train(RunSpec(Parameters.from_dict(params), Path(data_dir), "bench"))
    return {
        "final_cost": result.costs[-1],
        "epochs": len(result.costs),
        "weights": weights_digest(result.weights),
    }


def run_local(params: dict[str, Any], data_dir: str) -> dict[str, Any]:
    from snn.engines import RunSpec, local
    from snn.metering import Meter
    from snn.parameters import Parameters

    meter, moved = Meter(), Bytes()
    local.SESSION_HOOKS.extend([meter.install, moved.install])
    # The run record's GetItem requests are answered by the emulator on their own botocore
    # event, which the meter's handler of every DynamoDB request never sees: counted here.
    get_items = [0]
    leave = local.EmbeddedStack.__exit__

    def counted_exit(self: Any, *exc: object) -> None:
        get_items[0] += self.item_requests.served if self.item_requests else 0
        leave(self, *exc)

    local.EmbeddedStack.__exit__ = counted_exit  # type: ignore[method-assign]
    with meter.worker_threads():
        result = local.train(
            RunSpec(Parameters.from_dict(params), Path(data_dir), "bench"),
            template=ROOT / "template.yaml",
        )
    out: dict[str, Any] = {
        "final_cost": result.costs[-1],
        "epochs": len(result.costs),
        "weights": weights_digest(result.weights),
        "state_transitions": result.extra["state_transitions"],
        "lambda_invocations": result.extra["lambda_invocations"],
        "executions": len(result.extra["executions"]),
        "max_history_events": max(e["history_events"] for e in result.extra["executions"]),
        "s3_bytes": moved.total,
    }
    for service in ("s3", "dynamodb"):
        out[f"{service}_requests"] = sum(
            n for (s, op, *_), n in meter.requests.items() if s == service and op != "GetItem"
        )
    out["dynamodb_requests"] += get_items[0]
    return out


def measure_here(engine: str, params: dict[str, Any], data_dir: str, threads: str) -> dict:
    """Train `params` on `engine` in this process; the measurement."""
    library = set_threads(threads)
    kind, _, grain = engine.partition("-")
    if grain:
        widest = max(params["neurons"].values())
        params = params | {"neurons_per_task": 1 if grain == "neuron" else widest}
    runner = {"textbook": run_textbook, "direct": run_direct, "local": run_local}[kind]
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    out = runner(params, data_dir)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    from snn import blas

    return {
        "engine": engine,
        "threads": threads,
        "blas_threads": blas.threads_in_use(),
        "library_threads": library,
        "wall_seconds": wall,
        "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "peak_rss_mb": after.ru_maxrss / 1024,
        **out,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", required=True)
    ap.add_argument("--threads", choices=THREADS, default="chosen")
    ap.add_argument("--params-json", required=True)
    ap.add_argument("--data", required=True)
    args = ap.parse_args()
    result = measure_here(args.engine, json.loads(args.params_json), args.data, args.threads)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
