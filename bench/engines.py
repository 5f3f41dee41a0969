"""Benchmark: the engines side by side on one network, against a textbook numpy loop, alone and
next to competing processes, with the project's BLAS threads and with the library's default.

    python bench/engines.py                      # 12288-7-1, 2,500 epochs, 2 repetitions
    python bench/engines.py --quick              # a smoke run (20 s to a minute)
    python bench/engines.py --epochs 300 --threads both --load 1 \\
        --engines textbook,direct-layer,direct-neuron,local-layer --deep none

Engines: textbook (a plain numpy loop, the floor), direct-layer and direct-neuron (the direct
engine with a whole layer / one neuron per task), local-layer and local-neuron (the state
machine on the embedded stack, as `snn train` runs it). textbook-neuron is the numpy loop making
its products one neuron at a time, as the engines do at that grain: the floor of that grain.

Threads: "chosen" is the project's BLAS thread count (one), "default" the BLAS library's own
(one per core, for OpenBLAS); `--threads both` measures each engine with both. `--load N` also
measures everything next to N busy processes, which the bench starts and stops itself.
`--deep NETWORK` (12288-20-7-5-1 unless "none") adds the direct engine on that deeper network,
with a whole layer and one neuron per task, and the textbook loop at both grains, alone, with the
chosen threads.

Each measurement runs in a child process of its own (clean timings and peak RSS). Within every
repetition the measurements take turns, in reverse order every other repetition (A/B
alternation), and the medians are reported. On a shared machine absolute times are noisy: read
the ratios, which come from one run. Results go to bench/results/engines.json, and the tables
to bench/results/engines.md, ready to paste.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tables
from load import competing
from networks import DEEP, REFERENCE, ROOT, name_of, network, reference

ENGINES = (
    "textbook",
    "textbook-neuron",
    "direct-layer",
    "direct-neuron",
    "local-layer",
    "local-neuron",
)
DEFAULT_ENGINES = ("textbook", "direct-layer", "direct-neuron", "local-layer", "local-neuron")
DEEP_ENGINES = ("textbook", "textbook-neuron", "direct-layer", "direct-neuron")
# What the BLAS libraries read for their thread count: cleared in every child, so that
# "default" is the library's own default and "chosen" the project's.
THREAD_VARIABLES = (
    "SNN_BLAS_THREADS",
    "OPENBLAS_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
)
markdown = tables.markdown  # for the other benches

__all__ = ["ENGINES", "ROOT", "Case", "markdown", "measure", "network", "reference"]


@dataclass(frozen=True)
class Case:
    """One thing measured: an engine on a network, with a thread policy, next to `load` busy
    processes."""

    network: str
    engine: str
    threads: str = "chosen"
    load: int = 0

    @property
    def label(self) -> str:
        return f"{self.network} {self.engine} {self.threads} load {self.load}"


def measure(
    engine: str, params: dict[str, Any], data_dir: str, threads: str = "chosen"
) -> dict[str, Any]:
    """Train `params` on `engine` in a child process; what it measured."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "child.py"),
            "--engine",
            engine,
            "--threads",
            threads,
            "--params-json",
            json.dumps(params),
            "--data",
            data_dir,
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    if out.returncode != 0:
        raise SystemExit(f"bench: {engine} ({threads} threads) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cases(engines: list[str], threads: list[str], load: int, deep: str | None) -> list[Case]:
    loads = [0, load] if load else [0]
    out = [Case(REFERENCE, e, t, n) for n in loads for t in threads for e in engines]
    if deep:
        out += [Case(deep, e, "chosen", 0) for e in DEEP_ENGINES]
    return out


def run(all_cases: list[Case], epochs: int, data_dir: str, reps: int) -> dict[Case, list[dict]]:
    """Every case `reps` times, in turns; the cases next to a load in blocks (the load is
    started and stopped around each block)."""
    results: dict[Case, list[dict]] = {c: [] for c in all_cases}
    blocks = sorted({c.load for c in all_cases})
    for rep in range(reps):
        for load in blocks if rep % 2 == 0 else blocks[::-1]:
            block = [c for c in all_cases if c.load == load]
            with competing(load):
                for case in block if rep % 2 == 0 else block[::-1]:
                    params = network(case.network, epochs)
                    r = measure(case.engine, params, data_dir, case.threads)
                    results[case].append(r)
                    print(
                        f"  rep {rep + 1}/{reps}  {case.label:48s} {r['wall_seconds']:8.2f} s"
                        f"  cpu {r['cpu_seconds']:8.2f} s  peak {r['peak_rss_mb']:6.0f} MB"
                        f"  blas {r['blas_threads']}",
                        flush=True,
                    )
    return results


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--epochs", type=int, default=2500)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--engines", default=",".join(DEFAULT_ENGINES))
    ap.add_argument("--threads", choices=("chosen", "default", "both"), default="chosen")
    ap.add_argument("--load", type=int, default=0, help="also measure next to N busy processes")
    ap.add_argument("--deep", default=DEEP, help=f"the deeper network ({DEEP}), or none")
    ap.add_argument("--quick", action="store_true", help="20 epochs, 1 repetition")
    ap.add_argument("--data", default=os.environ.get("SNN_DATA_DIR"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    # Stopped with SIGTERM, the bench still stops its busy processes and its measurement.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not args.data:
        sys.exit("bench: set SNN_DATA_DIR or pass --data DIR (the cat/non-cat folder)")
    epochs, reps = (20, 1) if args.quick else (args.epochs, args.reps)
    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        sys.exit(f"bench: unknown engine(s) {', '.join(sorted(unknown))}; use {', '.join(ENGINES)}")
    if args.load < 0:
        sys.exit("bench: --load must be 0 or more")
    threads = ["chosen", "default"] if args.threads == "both" else [args.threads]
    deep = None if args.deep.lower() == "none" else name_of(network(args.deep, 1))
    all_cases = cases(engines, threads, args.load, deep)
    command = "python bench/engines.py " + shlex.join(
        a for a in sys.argv[1:] if not a.startswith("--data") and a != args.data
    )
    print(f"bench: {epochs} epochs, {reps} repetition(s), {len(all_cases)} cases")
    results = run(all_cases, epochs, args.data, reps)
    report = tables.report(results, epochs, reps, command.strip())
    print("\n" + report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = [{"case": vars(c) | {"label": c.label}, "measurements": rs} for c, rs in results.items()]
    (out / "engines.json").write_text(
        json.dumps({"command": command, "epochs": epochs, "results": raw}, indent=1)
    )
    (out / "engines.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
