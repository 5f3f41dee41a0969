"""Long runs and faults: continue-as-new within the history quota, injected Lambda faults,
interrupt and resume in a new process, runs side by side, bounded storage."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from snn import stages
from snn import store as keys
from snn.cli import main
from snn.data import load_dataset
from snn.engines import direct, local, stack

from ..conftest import ROOT
from .test_local_engine import assert_same_run, three_layers

TEMPLATE = ROOT / "template.yaml"


def test_events_per_epoch_is_what_an_execution_records(synthetic_dir: Path) -> None:
    """The chunk size rests on this count: it must be exact for a fault-free epoch."""
    for per_task in (1, 2, 5):
        p = three_layers(per_task, epochs=3)
        result = local.train(p, synthetic_dir, f"count{per_task}", template_path=TEMPLATE)
        (execution,) = result.extra["executions"]
        fixed = execution["history_events"] - 3 * stages.events_per_epoch(p)
        assert 0 < fixed <= stages.EXECUTION_FIXED_EVENTS


def test_a_long_run_continues_in_new_executions(
    synthetic_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stages, "EXECUTION_EVENT_BUDGET", 1000)
    p = three_layers(2, epochs=11)
    per_execution = stages.epochs_per_execution(p)
    assert per_execution == 4  # (1000 - 32) // 216
    result = local.train(p, synthetic_dir, "chain", template_path=TEMPLATE)
    executions = result.extra["executions"]
    assert [e["name"] for e in executions] == ["chain", "chain-e0000004", "chain-e0000008"]
    assert [(e["first_epoch"], e["last_epoch"]) for e in executions] == [(0, 3), (4, 7), (8, 10)]
    assert all(e["status"] == "SUCCEEDED" for e in executions)
    assert all(e["history_events"] <= 1000 for e in executions)
    assert_same_run(result, direct.train(p, load_dataset(synthetic_dir), "chain"))


def test_injected_faults_are_retried_and_change_nothing(synthetic_dir: Path) -> None:
    p = three_layers(2, epochs=3)
    faulty = local.train(p, synthetic_dir, "faulty", template_path=TEMPLATE, fault_rate=0.2)
    clean = local.train(p, synthetic_dir, "clean", template_path=TEMPLATE)
    assert_same_run(faulty, clean)
    injected = faulty.extra["injected_faults"]
    assert injected.get("before_handler", 0) > 0 and injected.get("after_handler", 0) > 0
    # every injected fault is a failed invocation in the history, retried by the state machine
    assert faulty.extra["failed_invocations"] == sum(injected.values())
    assert faulty.extra["lambda_invocations"] == (
        clean.extra["lambda_invocations"] + faulty.extra["failed_invocations"]
    )
    assert clean.extra["failed_invocations"] == 0


def test_cli_inject_faults_is_checked(tmp_path: Path, synthetic_dir: Path, capsys) -> None:
    code = main(
        [
            "train",
            "--inject-faults",
            "0.9",
            "--data",
            str(synthetic_dir),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2
    assert "--inject-faults must be a fraction from 0 to 0.5" in capsys.readouterr().err
    code = main(
        ["train", "--engine", "direct", "--inject-faults", "0.1", "--out", str(tmp_path / "y")]
    )
    assert code == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _snn(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from snn.cli import main; sys.exit(main())", *args]


def test_interrupted_run_resumes_in_a_new_process(tmp_path: Path, synthetic_dir: Path) -> None:
    """SIGINT mid-run leaves a resumable run folder; `snn train --resume` in a new process ends
    with the uninterrupted run's weights, bit for bit."""
    p = three_layers(2, epochs=40)
    params = tmp_path / "p.json"
    params.write_text(p.to_json())
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _snn(
            "train",
            "--params",
            str(params),
            "--data",
            str(synthetic_dir),
            "--out",
            str(out),
            "--run-id",
            "stopped",
            "--template",
            str(TEMPLATE),
        ),
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # wait until a few epochs are committed
        lines.append(line)
        if line.startswith("epoch ") and int(line.split()[1].split("/")[0]) >= 8:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    err = "".join(lines) + rest
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert f"resume it with: snn train --resume {out}" in err
    assert (out / "resume" / "state.json").is_file()
    assert not (out / "metrics.json").exists()
    saved = json.loads((out / "resume" / "state.json").read_text())
    stopped_at = saved["record"]["committed_epoch"]
    assert 8 <= stopped_at < 40

    resumed = subprocess.run(
        _snn("train", "--resume", str(out), "--template", str(TEMPLATE), "--quiet"),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert not (out / "resume").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    want = direct.train(p, load_dataset(synthetic_dir), "stopped")
    assert metrics["costs"] == want.costs
    with np.load(out / "model.npz") as model:
        for layer, (W, b) in enumerate(want.weights, 1):
            assert np.array_equal(model[f"W{layer}"], W)
            assert np.array_equal(model[f"b{layer}"], b)
    first, second = metrics["executions"]
    assert first["name"] == "stopped" and second["first_epoch"] == stopped_at
    assert second["last_epoch"] == 39


def test_a_failed_run_resumes(tmp_path: Path, synthetic_dir: Path, monkeypatch) -> None:
    """A permanent fault fails the run; the run folder keeps what resume needs."""
    p = three_layers(1, epochs=6)
    calls = {"n": 0}
    original = stages.update

    def broken_update(ctx, run_id, epoch, layer, shard):
        if epoch == 3:
            calls["n"] += 1
            raise RuntimeError("disk on fire")
        return original(ctx, run_id, epoch, layer, shard)

    monkeypatch.setattr(stages, "update", broken_update)
    from snn.handlers import update as update_handler

    monkeypatch.setattr(
        update_handler,
        "handler",
        update_handler.stage("run_id", "epoch", "layer", "shard")(broken_update),
    )
    out = tmp_path / "run"
    with pytest.raises(local.RunFailed, match="disk on fire") as failure:
        local.train(p, synthetic_dir, "broken", template_path=TEMPLATE, resume_dir=out / "resume")
    assert "resume it with: snn train --resume" in str(failure.value)
    monkeypatch.undo()
    result = local.resume(out / "resume", template_path=TEMPLATE)
    assert_same_run(result, direct.train(p, load_dataset(synthetic_dir), "broken"))
    statuses = [e["status"] for e in result.extra["executions"]]
    assert statuses == ["FAILED", "SUCCEEDED"]


def test_resume_refuses_what_it_cannot_resume(tmp_path: Path, capsys) -> None:
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "no resumable run there" in capsys.readouterr().err
    (tmp_path / "resume").mkdir()
    (tmp_path / "resume" / "state.json").write_text("{not json")
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "cannot be read" in capsys.readouterr().err
    finished = {
        "version": 1,
        "engine": "local",
        "run_id": "done",
        "execution_input": {},
        "record": {
            "status": "SUCCEEDED",
            "parameters": three_layers(1).to_json(),
            "committed_epoch": 4,
        },
    }
    (tmp_path / "resume" / "state.json").write_text(json.dumps(finished))
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "has finished: nothing to resume" in capsys.readouterr().err


def test_two_runs_at_once_in_one_stack(embedded_stack, synthetic_dir: Path) -> None:
    st = embedded_stack.stack
    runs = {"alpha": three_layers(1, epochs=3), "beta": three_layers(2, epochs=4)}
    arns = {}
    for run_id, p in runs.items():
        arns[run_id] = stack.start(st, stack.upload_inputs(st, run_id, p, synthetic_dir), run_id)
    for run_id, arn in arns.items():
        (execution,) = stack.follow_run(st, run_id, arn)
        assert execution.succeeded
    data = load_dataset(synthetic_dir)
    for run_id, p in runs.items():
        got = stack.collect(st, run_id, "local", 0.0, {})
        assert_same_run(got, direct.train(p, data, run_id))


def test_storage_stays_bounded(embedded_stack, synthetic_dir, monkeypatch) -> None:
    """Old epochs are deleted as the run advances: the last two and the checkpoints remain."""
    monkeypatch.setattr(stages, "CHECKPOINT_EVERY", 5)
    st = embedded_stack.stack
    p = three_layers(2, epochs=12)
    arn = stack.start(st, stack.upload_inputs(st, "bounded", p, synthetic_dir), "bounded")
    (execution,) = stack.follow_run(st, "bounded", arn)
    assert execution.succeeded
    listed = st.s3.list_objects_v2(Bucket=st.bucket, Prefix=keys.run_prefix("bounded") + "epoch/")
    epochs = {int(o["Key"].split("/")[3]) for o in listed["Contents"]}
    assert epochs == {0, 5, 10, 11, 12}


def test_a_stopped_execution_is_not_left_running(embedded_stack, synthetic_dir) -> None:
    st = embedded_stack.stack
    p = three_layers(1, epochs=200)
    arn = stack.start(st, stack.upload_inputs(st, "halt", p, synthetic_dir), "halt")
    time.sleep(2)
    local._stop_all(embedded_stack)
    assert st.sfn.describe_execution(executionArn=arn)["status"] != "RUNNING"
    assert embedded_stack.lambdas.in_flight == 0


def test_cli_with_five_percent_faults_equals_a_clean_run(tmp_path: Path, synthetic_dir) -> None:
    p = three_layers(1, epochs=6)
    params = tmp_path / "p.json"
    params.write_text(p.to_json())
    common = [
        "train",
        "--params",
        str(params),
        "--data",
        str(synthetic_dir),
        "--template",
        str(TEMPLATE),
        "--quiet",
    ]
    assert main([*common, "--out", str(tmp_path / "clean")]) == 0
    assert main([*common, "--out", str(tmp_path / "faulty"), "--inject-faults", "0.05"]) == 0
    clean = json.loads((tmp_path / "clean" / "metrics.json").read_text())
    faulty = json.loads((tmp_path / "faulty" / "metrics.json").read_text())
    assert faulty["costs"] == clean["costs"]
    with (
        np.load(tmp_path / "clean" / "model.npz") as a,
        np.load(tmp_path / "faulty" / "model.npz") as b,
    ):
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    injected = sum(faulty["injected_faults"].values())
    assert injected > 0  # about 5% of some 150 invocations
    assert faulty["failed_invocations"] == injected
