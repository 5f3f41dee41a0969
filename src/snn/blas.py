"""How many threads numpy's BLAS uses: chosen by the project, not inherited from the machine.

OpenBLAS starts as many threads as the machine has cores. On these small matrix products that
buys little when the process has the CPUs to itself, and costs a lot when it does not: its
threads spin while they wait for each other, so next to any busy process the same run takes
several times longer (the performance docs have the measurements). The local engine also runs
a Map's shards side by side in threads of one process, each calling BLAS, and a Lambda function
of 1,024 MB gets about half a vCPU. One thread is the default everywhere; SNN_BLAS_THREADS (or
`snn train --blas-threads`) overrides it.

The thread count is part of the arithmetic: a matrix-vector product (one neuron per task) adds
its terms in an order that depends on how many threads share it, so runs compare bit for bit
at the same thread count.
"""

from __future__ import annotations

import os
from typing import Any

DEFAULT_THREADS = 1
ENV = "SNN_BLAS_THREADS"

_limits: Any = None  # the threadpoolctl limiter in force (kept, so the limit stays set)
_threads: int | None = None


def from_environment() -> int:
    """SNN_BLAS_THREADS if set to a whole number >= 1, else the default."""
    value = os.environ.get(ENV, "")
    return int(value) if value.isdigit() and int(value) >= 1 else DEFAULT_THREADS


def use_threads(threads: int) -> None:
    """Make BLAS use `threads` threads in this process, from now on."""
    global _limits, _threads
    if threads == _threads:
        return
    from threadpoolctl import threadpool_limits

    _limits = threadpool_limits(limits=threads, user_api="blas")
    _threads = threads


def threads_in_use() -> list[int]:
    """The thread counts of the BLAS libraries loaded (one, usually)."""
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
