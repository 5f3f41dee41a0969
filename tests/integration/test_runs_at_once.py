"""Runs at once in one stack, as the local engine runs them: in threads of one process, whose
functions share the process's caches, clients and libraries. Two and three runs are started back
to back, round after round, next to a process that keeps a CPU busy (as a CI machine is), so that
their functions interleave differently every time; each run must end exactly as it does alone
(as the direct engine runs it, which a local run alone equals: test_local_engine.py): the same
costs and every weight, bit for bit.

What this guards: runs that share anything mutable in one process. The weights used to be drawn
from numpy's global generator, seeded by each run's Init: two Inits at once reset each other's
draws half-way, and a run began from another's weights (a wrong number, silently)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snn.data import synthetic_images, write_h5_pair
from snn.engines import direct
from snn.engines.follow import Follower
from snn.engines.stack import collect, create_run, start
from tests.helpers import assert_same_run, network, spec

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("embedded")]

# Networks of the real data's input width (12,288: the weights drawn at Init are many), all of
# seed 1, each of another shape and kind: initialisations, shards, mini-batches, an optimizer.
RUNS = {
    "wide": network([32, 1], epochs=1, neurons_per_task=4),
    "deep": network(
        [16, 3, 1],
        ["relu", "tanh", "sigmoid"],
        epochs=1,
        initialization="xavier",
        neurons_per_task=8,
    ),
    "batches": network(
        [8, 1],
        epochs=2,
        initialization="he",
        neurons_per_task=4,
        batch_size=8,
        optimizer={"name": "adam"},
        learning_rate=0.001,
    ),
}
ROUNDS = 3  # of each kind: two at once, three at once
# Burns a CPU until the test's process ends it, or ends itself should that process die first.
BURNER = "import os, sys\nwhile os.getppid() == int(sys.argv[1]):\n    sum(range(100_000))"
# How often the interpreter lets another thread run, by round: Python's default (5 ms), then far
# more often, so that the runs' threads interleave at other points.
SWITCH_INTERVALS = (0.005, 0.0001)


@pytest.fixture
def wide_data(tmp_path: Path) -> Path:
    """Synthetic pictures of the real size (64 x 64 x 3), few of them."""
    return write_h5_pair(tmp_path / "data", *synthetic_images(size=64, m_train=16, m_test=4))


@pytest.fixture
def busy() -> Iterator[subprocess.Popen]:
    """A process that burns a CPU for the test's duration: the runs' threads are preempted at
    other moments than on an idle machine. It changes when things happen, never what."""
    process = subprocess.Popen([sys.executable, "-c", BURNER, str(os.getpid())])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def _at_once(st: Any, names: list[str], data: Path, suffix: str) -> dict[str, Any]:
    """The runs created, then started back to back, then followed to their end: the results."""
    ids = {name: f"{name}-{suffix}" for name in names}
    events = {name: create_run(st, ids[name], RUNS[name], data) for name in names}
    arns = {name: start(st, events[name], ids[name]) for name in names}
    for name, arn in arns.items():
        (execution,) = Follower(st, ids[name]).follow(arn)
        assert execution.succeeded, execution.description
    return {name: collect(st, ids[name], "local", 0.0, {}) for name in names}


@pytest.mark.parametrize("at_once", [2, 3])
def test_runs_at_once_in_one_stack_each_equal_alone_every_time(
    embedded_stack: Any, wide_data: Path, busy: subprocess.Popen, at_once: int
) -> None:
    alone = {name: direct.train(spec(p, wide_data, name)) for name, p in RUNS.items()}
    order = list(RUNS)
    default = sys.getswitchinterval()
    for round_ in range(ROUNDS):
        names = (order[round_:] + order[:round_])[:at_once]  # each first in turn, each pairing
        sys.setswitchinterval(SWITCH_INTERVALS[round_ % len(SWITCH_INTERVALS)])
        try:
            results = _at_once(embedded_stack.stack, names, wide_data, f"{at_once}x{round_}")
        finally:
            sys.setswitchinterval(default)
        for name, got in results.items():
            assert_same_run(got, alone[name])
    assert busy.poll() is None  # it was busy throughout
