"""Every examples/ network x every engine (direct, local, AWS on the emulated stack) x every way a
run can go (clean; killed outright at a step, then resumed; injected faults at a rate of 0.05):
the same costs and the same weights, bit for bit, as the direct engine's clean run. Epochs are
cut to EPOCHS and the data is small, so that every cell runs.

Killed at a step: the step k is drawn per cell from a generator seeded with the cell's name (and
printed), so a cell always proves the same thing:
- local: `snn train` in a process of its own, whose Commit of step k waits until the run's resume
  state holds step k as committed, then SIGKILLs the whole process (the state machine, the
  emulator and the follower with it); `snn train --resume` carries the run on from step k.
- aws: the run lives in the stack, not on this machine. The execution is stopped outright while
  Commit of step k is in flight (that Commit never answers: its sandbox is gone), the follower
  ends, and `aws.resume` carries the run on from step k in a new execution.
- direct: a plain loop in one process keeps nothing to resume. The cell kills `snn train
  --engine direct` at step k, checks that `--resume` refuses its folder, and runs it again: the
  only way on, and it gives the same numbers.
Faults: the local and AWS engines' Lambda service fails 5 % of invocations (half before the
handler runs, half after it wrote its outputs) and the state machine's Retry recovers; the
generator is seeded so that every run meets both kinds. The direct engine has no Lambda service:
there each step's stage is delivered again at that rate (a stage that ran, whose answer was
lost), which is what the Retry makes of a fault after the handler.

Examples run EPOCHS epochs (at least MIN_STEPS steps) on 100 training examples of 4x4 pictures.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import numpy as np
import pytest

from snn import network as nn
from snn import stages
from snn.cli import main
from snn.data import synthetic_images, write_h5_pair
from snn.engines import aws, direct, local
from snn.engines.local import EmbeddedStack, LambdaService
from snn.epoch import batches_per_epoch
from snn.errors import RunFailed
from snn.parameters import Parameters
from snn.report import RunResult
from tests.faulty_handlers import KILL_STATE, KILL_STEP, StageBroke
from tests.helpers import ROOT, assert_same_run, deployed, spec, train_args, with_handler

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("embedded"),
    pytest.mark.filterwarnings(
        "ignore:Tried to parse AWS..CloudFormation..WaitConditionHandle:UserWarning"
    ),
]

EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.json"))
ENGINES = ("direct", "local", "aws")
MODES = ("clean", "killed", "faults")
EPOCHS = 2
# Enough steps to kill a run at one of several.
MIN_STEPS = 4
# The faults' generator is seeded with this: among its first 11 draws one fails an invocation
# before its handler runs and one after, so every run meets both kinds.
FAULT_SEED = 9
M_TRAIN, M_TEST = 100, 20  # mini-batches of 64: two an epoch, with or without a validation set
FAULT_RATE = 0.05
TEMPLATE = ROOT / "template.yaml"

# `snn train` in a process of its own that saves its resume state at every poll (not every few
# seconds), so that the state of the step it is killed at is saved while it waits.
CHILD = (
    "import sys; import snn.engines.local.run as run; run.SNAPSHOT_SECONDS = 0.0; "
    "from snn.cli import main; sys.exit(main(sys.argv[1:]))"
)
# The same for the direct engine, killed outright once step k (sys.argv[1]) is committed.
DIRECT_CHILD = """
import os, signal, sys
from snn import stages
from snn.cli import main
kill_at, commit = int(sys.argv[1]), stages.STEP_STAGES["commit"]
def commit_then_die(*args, **kwargs):
    result = commit(*args, **kwargs)
    if result["step"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
stages.STEP_STAGES["commit"] = commit_then_die
sys.exit(main(sys.argv[2:]))
"""


def example(name: str) -> Parameters:
    """The example with EPOCHS epochs, or as many more as make MIN_STEPS steps."""
    raw = json.loads((ROOT / "examples" / name).read_text())
    p = Parameters.from_dict({**raw, "epochs": EPOCHS})
    batches = steps(p)[0]
    return Parameters.from_dict({**raw, "epochs": max(EPOCHS, math.ceil(MIN_STEPS / batches))})


def steps(p: Parameters) -> tuple[int, int]:
    """(batches an epoch, steps of the run) on the matrix's data."""
    m = M_TRAIN
    if p.training.validation is not None:
        m = len(nn.validation_split(M_TRAIN, p.training.validation, p.training.shuffle_seed)[0])
    batches = batches_per_epoch(p, m)
    return batches, batches * p.epochs


def kill_step(name: str, engine: str, p: Parameters) -> int:
    """The step a cell is killed at: seeded by the cell, never the first nor past the last."""
    k = random.Random(f"{name}/{engine}").randrange(1, steps(p)[1])
    print(f"{name} on {engine}: killed at step {k} of {steps(p)[1]}")
    return k


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("matrix") / "data"
    return write_h5_pair(folder, *synthetic_images(m_train=M_TRAIN, m_test=M_TEST))


_baselines: dict[str, RunResult] = {}


def baseline(name: str, data: Path) -> RunResult:
    """The direct engine's clean run of an example: what every cell must equal."""
    if name not in _baselines:
        _baselines[name] = direct.train(spec(example(name), data))
    return _baselines[name]


def child_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


def matrix_args(p: Parameters, data: Path, out: Path, engine: str, template: Path) -> list[str]:
    params = out.parent / "params.json"
    params.write_text(p.to_json())
    return train_args(params, data, out, template, engine)


def folder_result(out: Path) -> Any:
    """The costs, weights and accuracies a finished run folder holds, to compare."""
    metrics = json.loads((out / "metrics.json").read_text())
    with np.load(out / "model.npz") as model:
        layers = len([k for k in model.files if k.startswith("W")])
        weights = [(model[f"W{i}"], model[f"b{i}"]) for i in range(1, layers + 1)]
    return SimpleNamespace(
        costs=metrics["costs"],
        weights=weights,
        train_accuracy=metrics["train_accuracy"],
        test_accuracy=metrics["test_accuracy"],
    )


# --- the cells -----------------------------------------------------------------------------------


def direct_clean(name: str, p: Parameters, data: Path, tmp_path: Path) -> RunResult:
    return direct.train(spec(p, data))


def direct_faults(name: str, p: Parameters, data: Path, tmp_path: Path) -> RunResult:
    rng = random.Random(FAULT_SEED)
    delivered = []

    def again(stage: Any) -> Any:
        def at_least_once(*args: Any, **kwargs: Any) -> Any:
            result = stage(*args, **kwargs)
            if rng.random() < FAULT_RATE:  # its answer was lost: delivered again
                delivered.append(stage.__name__)
                result = stage(*args, **kwargs)
            return result

        return at_least_once

    with pytest.MonkeyPatch.context() as mp:
        for stage_name, stage in stages.STEP_STAGES.items():
            mp.setitem(stages.STEP_STAGES, stage_name, again(stage))
        result = direct.train(spec(p, data))
    print(f"{name} on direct: {len(delivered)} stages delivered twice")
    assert delivered
    return result


def direct_killed(name: str, p: Parameters, data: Path, tmp_path: Path) -> Any:
    k = kill_step(name, "direct", p)
    out = tmp_path / "run"
    args = matrix_args(p, data, out, "direct", TEMPLATE)
    run = subprocess.run(
        [sys.executable, "-c", DIRECT_CHILD, str(k), *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert main(["train", "--resume", str(out), "--template", str(TEMPLATE), "--quiet"]) == 2
    again = tmp_path / "again"
    assert main(matrix_args(p, data, again, "direct", TEMPLATE)) == 0
    return folder_result(again)


def local_clean(name: str, p: Parameters, data: Path, tmp_path: Path) -> RunResult:
    return local.train(spec(p, data), TEMPLATE)


def local_faults(name: str, p: Parameters, data: Path, tmp_path: Path) -> RunResult:
    result = local.train(spec(p, data), TEMPLATE, fault_rate=FAULT_RATE)
    print(f"{name} on local: faults {dict(result.extra['injected_faults'])}")
    assert set(result.extra["injected_faults"]) == {"before_handler", "after_handler"}
    return result


def local_killed(name: str, p: Parameters, data: Path, tmp_path: Path) -> Any:
    k = kill_step(name, "local", p)
    batches = steps(p)[0]
    (tmp_path / "project").mkdir()
    template = with_handler(
        tmp_path / "project", "commit", "tests.faulty_handlers.commit_killed_after_snapshot"
    )
    out = tmp_path / "run"
    state = out / "resume" / "state.json"
    env = child_env(**{KILL_STEP: f"{k // batches},{k % batches},{k}", KILL_STATE: str(state)})
    run = subprocess.run(
        [sys.executable, "-c", CHILD, *matrix_args(p, data, out, "local", template)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert json.loads(state.read_text())["record"]["committed_step"] == k
    assert main(["train", "--resume", str(out), "--template", str(TEMPLATE), "--quiet"]) == 0
    executions = json.loads((out / "metrics.json").read_text())["executions"]
    assert executions[-1]["status"] == "SUCCEEDED"
    return folder_result(out)


def aws_clean(name: str, p: Parameters, data: Path, tmp_path: Path) -> RunResult:
    with EmbeddedStack(TEMPLATE) as embedded:
        return aws.train(spec(p, data), deployed(embedded), boto3.DEFAULT_SESSION)


def aws_faults(name: str, p: Parameters, data: Path, tmp_path: Path) -> RunResult:
    with EmbeddedStack(TEMPLATE, FAULT_RATE) as embedded:
        result = aws.train(spec(p, data), deployed(embedded), boto3.DEFAULT_SESSION)
        assert embedded.lambdas is not None
        print(f"{name} on aws: faults {dict(embedded.lambdas.faults)}")
        assert set(embedded.lambdas.faults) == {"before_handler", "after_handler"}
    return result


class Killed(Exception):
    """A Lambda sandbox gone while its invocation was in flight."""


def aws_killed(name: str, p: Parameters, data: Path, tmp_path: Path) -> RunResult:
    k = kill_step(name, "aws", p)
    epoch, batch = divmod(k, steps(p)[0])
    with EmbeddedStack(TEMPLATE) as embedded:
        stack, st, lambdas = deployed(embedded), embedded.stack, embedded.lambdas
        assert st is not None and lambdas is not None
        commit = lambdas.handlers["CommitFunction"]
        reached, release = threading.Event(), threading.Event()

        def in_flight(event: Any, context: Any) -> Any:
            if (event.get("epoch"), event.get("batch")) == (epoch, batch) and not reached.is_set():
                reached.set()
                release.wait(120)
                raise Killed(f"the sandbox of Commit of step {k} is gone")
            return commit(event, context)

        lambdas.handlers["CommitFunction"] = in_flight
        ended: list[BaseException] = []

        def follower() -> None:
            try:
                aws.train(spec(p, data), stack, boto3.DEFAULT_SESSION)
            except (RunFailed, StageBroke) as exc:
                ended.append(exc)

        client = threading.Thread(target=follower)
        client.start()
        try:
            assert reached.wait(120), "Commit of the step was never invoked"
            record = st.runs.get("r", ("committed_step", "execution"))
            assert record is not None and int(record["committed_step"]) == k
            st.sfn.stop_execution(executionArn=st.execution_arn(record["execution"]))
        finally:
            release.set()
            client.join(120)
        assert len(ended) == 1, "the follower went on"
        assert int(st.runs.get("r", ("committed_step",))["committed_step"]) == k
        result = aws.resume(spec(p, Path("."), "r"), stack, boto3.DEFAULT_SESSION)
        assert result.extra["executions"][0]["name"].startswith("r-r")
        return result


CELLS = {
    (engine, mode): globals()[f"{engine}_{mode}"] for engine in ENGINES for mode in MODES
}


@pytest.fixture
def fast_follow(monkeypatch: pytest.MonkeyPatch, aws_env: None) -> None:
    """The AWS engine polls its run every 2 s; the emulated stack answers at once. And the
    faults' generator seeded with FAULT_SEED."""
    monkeypatch.setattr(aws, "FOLLOW_SECONDS", 0.2)
    init = LambdaService.__init__

    def seeded(self: LambdaService, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **{**kwargs, "fault_seed": FAULT_SEED})

    monkeypatch.setattr(LambdaService, "__init__", seeded)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", EXAMPLES)
def test_every_cell_gives_the_same_costs_and_weights(
    name: str, engine: str, mode: str, data: Path, tmp_path: Path, fast_follow: None
) -> None:
    got = CELLS[(engine, mode)](name, example(name), data, tmp_path)
    assert_same_run(got, baseline(name, data))
