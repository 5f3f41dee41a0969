"""CPU-bound processes that compete with a measurement, as other work on a shared machine does."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# A pure-Python busy loop: one core's worth of demand, no memory, no I/O.
BUSY = "while True:\n    pass\n"


@contextmanager
def competing(processes: int) -> Iterator[list[int]]:
    """`processes` busy processes for the duration of the block (none for 0); their PIDs.
    They are stopped however the block ends."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(processes):
            started.append(subprocess.Popen([sys.executable, "-c", BUSY]))
        yield [p.pid for p in started]
    finally:
        for p in started:
            p.terminate()
        for p in started:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
