"""Long runs and faults on the local engine: continue-as-new within the history quota, injected
Lambda faults, interrupt (SIGINT) and resume in a new process, a failed run resumed, runs side by
side in one stack, bounded storage, a stopped execution. (Other signals, SIGKILL and what resume
refuses: test_resume.py; failures and the quotas: test_failures.py.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from snn import epoch as epochs
from snn import keys
from snn.cli import main
from snn.engines import direct, local
from snn.engines.follow import Follower
from snn.engines.local.run import LocalFollower, _stop_all
from snn.engines.stack import collect, create_run, start
from snn.errors import RunFailed
from snn.run_folder import RunFolder
from snn.stages import training
from tests.helpers import (
    ROOT,
    assert_same_run,
    network,
    spec,
    three_layers,
    tiny_parameters,
    with_handler,
)

pytestmark = pytest.mark.xdist_group("embedded")

TEMPLATE = ROOT / "template.yaml"
FIXED_EVENTS_EVALUATE = 1 + 5 + 2 + 5 + 1  # see test_local_engine.py
FIXED_EVENTS_CONTINUE = 1 + 5 + 2 + 5 + 2 + 1


@pytest.mark.slow
def test_a_long_run_continues_in_new_executions(
    synthetic_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(epochs, "EXECUTION_EVENT_BUDGET", 300)
    p = tiny_parameters(epochs=5)
    per_epoch = epochs.events_per_step(p)  # one step an epoch: no mini-batches
    assert per_epoch == 126  # 24 + 12 * 2 layers + 26 * 3 shards
    assert epochs.steps_per_execution(p) == 2  # (300 - 32) // 126
    reported: list[tuple[int, float]] = []
    result = local.train(
        spec(p, synthetic_dir, "chain", on_epoch=lambda e, c: reported.append((e, c))), TEMPLATE
    )
    executions = result.extra["executions"]
    assert [e["name"] for e in executions] == ["chain", "chain-e0000002", "chain-e0000004"]
    assert [(e["first_epoch"], e["last_epoch"]) for e in executions] == [(0, 1), (2, 3), (4, 4)]
    assert all(e["status"] == "SUCCEEDED" for e in executions)
    # each execution's history, exactly: a hand-over ends with ContinueAsNew, the last with
    # Evaluate
    assert [e["history_events"] for e in executions] == [
        FIXED_EVENTS_CONTINUE + 2 * per_epoch,
        FIXED_EVENTS_CONTINUE + 2 * per_epoch,
        FIXED_EVENTS_EVALUATE + 1 * per_epoch,
    ]
    assert result.extra["lambda_invocations"] == result.extra["lambda_invocations_served"]
    assert_same_run(result, direct.train(spec(p, synthetic_dir, "chain")))
    assert reported == list(enumerate(result.costs))  # across executions: every epoch, once


@pytest.mark.slow
def test_a_run_of_mini_batches_continues_mid_epoch(
    synthetic_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 3 mini-batches an epoch and 4 steps an execution, the hand-overs fall mid-epoch:
    each successor is named after its epoch and batch, and the run is the direct engine's."""
    p = network([2, 1], epochs=3, batch_size=16)  # 40 examples: 16, 16 and 8
    per_step = epochs.events_per_step(p)
    monkeypatch.setattr(epochs, "EXECUTION_EVENT_BUDGET", 32 + 4 * per_step)
    assert epochs.steps_per_execution(p) == 4
    result = local.train(spec(p, synthetic_dir, "mini"), TEMPLATE)
    executions = result.extra["executions"]
    assert [e["name"] for e in executions] == ["mini", "mini-e0000001b00001", "mini-e0000002b00002"]
    assert [e["history_events"] for e in executions] == [
        FIXED_EVENTS_CONTINUE + 4 * per_step,
        FIXED_EVENTS_CONTINUE + 4 * per_step,
        FIXED_EVENTS_EVALUATE + 1 * per_step,
    ]
    assert len(result.costs) == 3
    assert_same_run(result, direct.train(spec(p, synthetic_dir, "mini")))


@pytest.mark.slow  # the retries wait as the definition says (up to 1 s each)
def test_injected_faults_are_retried_and_change_nothing(synthetic_dir: Path) -> None:
    p = tiny_parameters(epochs=2)
    # (the faults follow a seeded sequence: at this rate, both kinds within 30 invocations)
    faulty = local.train(spec(p, synthetic_dir, "faulty"), TEMPLATE, fault_rate=0.3)
    clean = local.train(spec(p, synthetic_dir, "clean"), TEMPLATE)
    assert_same_run(faulty, clean)
    assert faulty.neurons == clean.neurons
    injected = faulty.extra["injected_faults"]
    assert injected.get("before_handler", 0) > 0 and injected.get("after_handler", 0) > 0
    # every injected fault is a failed invocation in the history, retried by the state machine
    assert faulty.extra["failed_invocations"] == sum(injected.values())
    assert faulty.extra["lambda_invocations"] == (
        clean.extra["lambda_invocations"] + faulty.extra["failed_invocations"]
    )
    assert clean.extra["failed_invocations"] == 0
    # a fault after the handler ran means its work was done twice: the same bytes again
    assert faulty.extra["lambda_invocations_served"] == (
        clean.extra["lambda_invocations_served"] + injected["after_handler"]
    )


@pytest.mark.slow  # the retries wait as the definition says (up to 1 s each)
def test_cli_with_five_percent_faults_equals_a_clean_run(tmp_path: Path, synthetic_dir) -> None:
    p = tiny_parameters(epochs=5)
    params = tmp_path / "p.json"
    params.write_text(p.to_json())
    common = ["train", "--params", str(params), "--data", str(synthetic_dir)]
    common += ["--template", str(TEMPLATE), "--run-id", "r", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "faulty"), "--inject-faults", "0.05"]) == 0
    faulty = json.loads((tmp_path / "faulty" / "metrics.json").read_text())
    clean = direct.train(spec(p, synthetic_dir, "r"))
    assert faulty["costs"] == clean.costs
    with np.load(tmp_path / "faulty" / "model.npz") as model:
        for layer, (W, b) in enumerate(clean.weights, 1):
            assert np.array_equal(model[f"W{layer}"], W)
            assert np.array_equal(model[f"b{layer}"], b)
    injected = sum(faulty["injected_faults"].values())
    assert injected > 0  # about 5% of some 70 invocations
    assert faulty["failed_invocations"] == injected


def _snn(*args: str) -> list[str]:
    return [sys.executable, "-m", "snn.cli", *args]


@pytest.mark.slow
def test_an_interrupted_run_resumes_in_a_new_process(tmp_path: Path, synthetic_dir: Path) -> None:
    """SIGINT (Ctrl-C) mid-run leaves a resumable run folder and exits 130; `snn train --resume`
    in a new process ends with the uninterrupted run's weights, bit for bit."""
    p = tiny_parameters(epochs=60)  # long enough to be running when stopped
    params = tmp_path / "p.json"
    params.write_text(p.to_json())
    out = tmp_path / "run"
    args = ["train", "--params", str(params), "--data", str(synthetic_dir), "--out", str(out)]
    args += ["--run-id", "stopped", "--template", str(TEMPLATE)]
    proc = subprocess.Popen(_snn(*args), stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # wait until a few epochs are committed
        lines.append(line)
        if line.startswith("epoch ") and int(line.split()[1].split("/")[0]) >= 4:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    err = "".join(lines) + rest
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("snn: error: run stopped interrupted; resume it from epoch "), err
    assert last.endswith(f" with: snn train --resume {out}")
    assert (out / "resume" / "state.json").is_file()
    assert not (out / "metrics.json").exists()
    progress = json.loads((out / "progress.json").read_text())
    assert progress["status"] == "interrupted"
    saved = json.loads((out / "resume" / "state.json").read_text())
    stopped_at = saved["record"]["committed_epoch"]
    assert 4 <= stopped_at < 60
    assert progress["resumable_from"] == stopped_at
    assert f"resume it from epoch {stopped_at} " in last

    resumed = subprocess.run(
        _snn("train", "--resume", str(out), "--template", str(TEMPLATE), "--quiet"),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert not (out / "resume").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    want = direct.train(spec(p, synthetic_dir, "stopped"))
    assert metrics["costs"] == want.costs
    with np.load(out / "model.npz") as model:
        for layer, (W, b) in enumerate(want.weights, 1):
            assert np.array_equal(model[f"W{layer}"], W)
            assert np.array_equal(model[f"b{layer}"], b)
    first, second = metrics["executions"]
    assert (first["name"], first["status"]) == ("stopped", "ABORTED")
    assert second["first_epoch"] == stopped_at and second["last_epoch"] == p.epochs - 1


@pytest.mark.slow
def test_a_failed_run_resumes_through_the_engine(tmp_path: Path, synthetic_dir: Path) -> None:
    """Commit fails for good at epoch 2: the run folder keeps what resume needs, and
    `local.resume` on it (with the real Commit) ends as if nothing had failed."""
    template = with_handler(tmp_path, "commit", "tests.faulty_handlers.commit_fails_at_epoch_2")
    p = tiny_parameters(epochs=4)
    out = tmp_path / "run"
    with RunFolder(out) as folder, pytest.raises(RunFailed) as failure:
        local.train(spec(p, synthetic_dir, "broken", folder=folder), template)
    message = str(failure.value)
    assert message.startswith("run broken failed at epoch 2 in Commit: StageBroke:"), message
    assert message.endswith(f"; resume it from epoch 2 with: snn train --resume {out}")

    with RunFolder(out, new=False) as folder:
        reported: list[tuple[int, float]] = []
        result = local.resume(
            spec(
                p, Path("."), "broken", folder=folder, on_epoch=lambda e, c: reported.append((e, c))
            ),
            TEMPLATE,
        )
    assert_same_run(result, direct.train(spec(p, synthetic_dir, "broken")))
    assert [e["status"] for e in result.extra["executions"]] == ["FAILED", "SUCCEEDED"]
    assert result.extra["executions"][1]["first_epoch"] == 2
    assert [e for e, _ in reported] == [2, 3]  # only the epochs this process trained


def test_resume_refuses_what_it_cannot_resume(tmp_path: Path, capsys) -> None:
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "no resumable run there" in capsys.readouterr().err
    (tmp_path / "resume").mkdir()
    p = tiny_parameters(epochs=2)
    upload = "uploads/" + "0" * 64
    finished = {
        "format": 2,
        "engine": "local",
        "run_id": "done",
        "execution_input": {
            "run_id": "done",
            "parameters_key": keys.parameters_key("done"),
            "train_key": f"{upload}/train_catvnoncat.h5",
            "test_key": f"{upload}/test_catvnoncat.h5",
        },
        "record": {
            "status": "SUCCEEDED",
            "parameters": p.to_json(),
            "committed_epoch": 2,
            "committed_step": 2,
            "batches": 1,
            "examples": 10,
            "costs": {"0": "0.5", "1": "0.4"},
        },
        "summary": {},
        "manifest": {},
    }
    (tmp_path / "resume" / "state.json").write_text(json.dumps(finished))
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "run done has finished: nothing to resume" in capsys.readouterr().err


@pytest.mark.slow
def test_two_runs_at_once_in_one_stack(embedded_stack: Any, synthetic_dir: Path) -> None:
    st = embedded_stack.stack
    runs = {"alpha": three_layers(1, epochs=2), "beta": tiny_parameters(epochs=3)}
    arns = {}
    for run_id, p in runs.items():
        arns[run_id] = start(st, create_run(st, run_id, p, synthetic_dir), run_id)
    for run_id, arn in arns.items():
        (execution,) = Follower(st, run_id).follow(arn)
        assert execution.succeeded
    for run_id, p in runs.items():
        got = collect(st, run_id, "local", 0.0, {})
        assert_same_run(got, direct.train(spec(p, synthetic_dir, run_id)))


@pytest.mark.slow
def test_storage_stays_bounded(
    embedded_stack: Any, synthetic_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old epochs are deleted as the run advances: the last two and the checkpoints remain,
    and nothing a run keeps is touched."""
    monkeypatch.setattr(training, "CHECKPOINT_EVERY", 5)
    st = embedded_stack.stack
    p = tiny_parameters(epochs=12)
    arn = start(st, create_run(st, "bounded", p, synthetic_dir), "bounded")
    (execution,) = Follower(st, "bounded").follow(arn)
    assert execution.succeeded
    scratch = st.store.keys_under(keys.scratch_prefix("bounded"))
    kept = {int(k.split("/")[3]) for k in scratch}
    assert kept == {0, 5, 10, 11, 12}
    for epoch in kept:
        prefix = keys.step_prefix("bounded", epoch)  # one step an epoch
        assert len([k for k in scratch if k.startswith(prefix)]) >= 2 * epochs.shard_count(p)
    kept_by_run = st.store.keys_under(keys.run_prefix("bounded"))
    assert {keys.model_key("bounded"), keys.neurons_key("bounded")} <= kept_by_run
    stats = {k for k in kept_by_run if "/neurons/" in k}
    assert len(stats) == 12 * epochs.shard_count(p)  # every epoch sampled in a short run


@pytest.mark.slow
def test_a_stopped_execution_is_not_left_running(embedded_stack: Any, synthetic_dir: Path) -> None:
    """Stopping a run (what Ctrl-C does) aborts its execution, waits until no handler is at
    work, and the execution-status rule's function marks the run FAILED, as on AWS."""
    st = embedded_stack.stack
    p = tiny_parameters(epochs=200)
    arn = start(st, create_run(st, "halt", p, synthetic_dir), "halt")
    deadline = time.monotonic() + 60
    while (st.runs.get("halt", ("committed_epoch",)) or {}).get("committed_epoch", 0) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    follower = LocalFollower(embedded_stack, spec(p, synthetic_dir, "halt"), None, None, 0)
    _stop_all(follower)
    assert embedded_stack.lambdas.in_flight == 0
    (execution,) = follower.executions
    assert (execution.description["executionArn"], execution.description["status"]) == (
        arn,
        "ABORTED",
    )
    listed = st.sfn.list_executions(stateMachineArn=st.state_machine_arn)["executions"]
    assert [e for e in listed if e["status"] == "RUNNING"] == []
    record = st.runs.get("halt")
    assert (record["status"], record["error"], record["failed_execution"]) == (
        "FAILED",
        "ExecutionAborted",
        "halt",
    )
    committed = record["committed_epoch"]
    time.sleep(0.5)
    assert st.runs.get("halt")["committed_epoch"] == committed  # nothing goes on
