"""What one request of a handler costs on the embedded stack, through the same boto3 clients and
stores the handlers use.

    python bench/request_cost.py             # 2,000 of each, 3 rounds in turns, medians

Every one of them is served without the HTTP detour: S3 GetObject and PutObject (a shard's small
matrix) and DynamoDB GetItem (the run record) by moto's backends directly, DynamoDB UpdateItem
and PutItem (an update of the record, Commit's conditional write of a step, Loss's cost) by
moto's own DynamoDB handler, whose expression engine is most of their cost. "npy" is the
serialisation alone (a matrix to .npy bytes and back), the part of an S3 request that the stores
would pay on AWS too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from networks import ROOT
from tables import markdown

sys.path.insert(0, str(ROOT / "src"))


def per_call_ms(call: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        call()
    return 1000 * (time.perf_counter() - start) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="requests of each kind per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import numpy as np

    from snn.engines.local import EmbeddedStack
    from snn.stores import from_npy, new_record, to_npy

    matrix = np.zeros((7, 209))
    with EmbeddedStack(ROOT / "template.yaml") as embedded:
        st = embedded.stack
        assert st is not None
        st.store.put("scratch/bench/a.npy", matrix)
        st.runs.create("bench", new_record("bench", "{}"))
        counter, steps = iter(range(10**9)), iter(range(10**9))
        # what Commit writes at an epoch's end besides the step
        closing = {"committed_epoch": 1, "best_epoch": 0, "best_validation_cost": 0.5}
        kinds: dict[str, Callable[[], Any]] = {
            "npy (no request)": lambda: from_npy(to_npy(matrix)),
            "S3 GetObject": lambda: st.store.get("scratch/bench/a.npy"),
            "S3 PutObject": lambda: st.store.put("scratch/bench/b.npy", matrix),
            "DynamoDB GetItem": lambda: st.runs.get("bench", ("status", "committed_epoch")),
            "DynamoDB UpdateItem": lambda: st.runs.update("bench", {"note": next(counter)}),
            "DynamoDB UpdateItem (Commit)": lambda: st.runs.commit("bench", next(steps), closing),
            "DynamoDB PutItem (Loss)": lambda: st.runs.record_cost("bench", next(counter), 0.5),
        }
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for r in range(args.rounds):
            for name in kinds if r % 2 == 0 else list(kinds)[::-1]:
                slow = "DynamoDB" in name and "GetItem" not in name
                n = max(1, args.n // 10) if slow else args.n
                times[name].append(per_call_ms(kinds[name], n))
    rows = [
        {"request": k, "ms each (median)": round(statistics.median(v), 3)} for k, v in times.items()
    ]
    print(markdown(rows))


if __name__ == "__main__":
    main()
