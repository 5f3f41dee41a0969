"""`snn train` refuses bad input with one line, exit code 2, and no run folder; a run folder is
locked by the one process writing it, must be new and empty, and appears whole."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from snn.cli import main
from snn.commands.train import MAX_FAULT_RATE
from snn.engines import direct
from snn.run_folder import RunFolder
from tests.helpers import ROOT, huge_h5_pair, spec, tiny_parameters

SEED = {
    "epochs": 2,
    "layers": 2,
    "activations": {"layer1": "relu", "layer2": "sigmoid"},
    "neurons": {"layer1": 3, "layer2": 1},
    "learning_rate": 0.0075,
}
RESULTS = ["cost.png", "metrics.json", "model.npz", "neurons.npz", "progress.json"]


def train(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["train", "--engine", "direct", "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    return code, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def params(tmp_path: Path) -> Path:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(SEED))
    return path


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({**SEED, "layers": 3}), '"activations" must name exactly layer1..layer3'),
        (json.dumps({**SEED, "learning_rate": 0}), '"learning_rate" must be a number in (0, 10]'),
        (
            json.dumps({**SEED, "activations": {"layer1": "relu", "layer2": "softmax"}}),
            '"activations.layer2" must be one of',
        ),
        (json.dumps({k: v for k, v in SEED.items() if k != "epochs"}), "missing required field"),
        (json.dumps(SEED)[:-1] + ', "epochs": 20}', 'the field "epochs" appears twice'),
    ],
)
def test_malformed_parameters(tmp_path, capsys, synthetic_dir, content, named) -> None:
    params = tmp_path / "p.json"
    params.write_text(content)
    code, err = train(tmp_path, capsys, "--params", str(params), "--data", str(synthetic_dir))
    assert code == 2
    assert named in one_line(err)
    assert not (tmp_path / "run").exists()


def test_missing_parameters_file(tmp_path, capsys) -> None:
    code, err = train(tmp_path, capsys, "--params", str(tmp_path / "nope.json"))
    assert code == 2 and "no such parameters file" in one_line(err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("make", ["missing", "empty", "not_h5", "declares_114_GiB"])
def test_bad_data_folder(tmp_path, capsys, params, make) -> None:
    data = tmp_path / "data"
    if make not in ("missing", "declares_114_GiB"):
        data.mkdir()
    if make == "not_h5":
        (data / "train_catvnoncat.h5").write_text("hello")
        (data / "test_catvnoncat.h5").write_text("hello")
    if make == "declares_114_GiB":
        huge_h5_pair(data)
    code, err = train(tmp_path, capsys, "--params", str(params), "--data", str(data))
    assert code == 2
    line = one_line(err)
    assert "train_catvnoncat.h5" in line or str(data) in line
    if make == "declares_114_GiB":
        assert "over the limit" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--run-id", "../escape"], "invalid run_id"),
        (["--run-id", "a/b"], "invalid run_id"),
        (["--run-id", "x" * 61], "use 1-60 letters, digits"),
        (["--run-id=-lead"], "invalid run_id"),
        (
            ["--inject-faults", "0.11"],
            f"--inject-faults must be a fraction from 0 to {MAX_FAULT_RATE}",
        ),
        (["--inject-faults", "0.100001"], "--inject-faults must be a fraction from 0 to 0.1,"),
        (["--inject-faults", "-0.01"], "--inject-faults must be a fraction"),
        # 0.10 itself passes the range check: the engine is what is refused
        (["--inject-faults", "0.10"], "--inject-faults works with the local engine only"),
        (["--resume", "somewhere"], "--resume works with the local engine"),
        (["--blas-threads", "0"], "--blas-threads must be from 1 to 256"),
        (["--blas-threads", "257"], "--blas-threads must be from 1 to 256"),
    ],
)
def test_bad_flags(tmp_path, capsys, synthetic_dir, params, args, named) -> None:
    code, err = train(
        tmp_path, capsys, "--params", str(params), "--data", str(synthetic_dir), *args
    )
    assert code == 2 and named in one_line(err)
    assert not (tmp_path / "run").exists()


def test_the_largest_fault_rate_is_a_tenth() -> None:
    """Every Task makes 7 attempts: at the largest rate, the 85,100 invocations of the
    2,500-epoch reference with one neuron per task all succeed with probability >= 0.99."""
    assert MAX_FAULT_RATE == 0.10
    assert (1 - MAX_FAULT_RATE**7) ** 85_100 >= 0.99


def test_aws_needs_a_stack(tmp_path, capsys, synthetic_dir, params, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no samconfig.toml to name one
    code = main(["train", "--engine", "aws", "--params", str(params), "--out", str(tmp_path / "r")])
    assert code == 2 and "--stack NAME, or stack_name in" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("run_id", ["x" * 60, "a", "0-_Z"])
def test_run_ids_of_1_to_60_characters(tmp_path, capsys, synthetic_dir, run_id: str) -> None:
    params = tmp_path / "p.json"
    params.write_text(tiny_parameters(1).to_json())
    code, _ = train(
        tmp_path, capsys, "--params", str(params), "--data", str(synthetic_dir), "--run-id", run_id
    )
    assert code == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["run_id"] == run_id


def test_an_existing_run_folder_is_not_overwritten(tmp_path, capsys, synthetic_dir, params) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}")
    code, err = train(
        tmp_path, capsys, "--params", str(params), "--data", str(synthetic_dir), "--quiet"
    )
    assert code == 2 and "exists and is not empty; choose another --out" in one_line(err)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock", "metrics.json"]
    assert (tmp_path / "run" / "metrics.json").read_text() == "{}"


def test_an_existing_empty_folder_is_used(tmp_path, capsys, synthetic_dir, params) -> None:
    (tmp_path / "run").mkdir()
    code, _ = train(
        tmp_path, capsys, "--params", str(params), "--data", str(synthetic_dir), "--quiet"
    )
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == RESULTS


def test_a_locked_run_folder_is_refused(tmp_path, capsys, synthetic_dir, params) -> None:
    with RunFolder(tmp_path / "run"):  # another writer holds it
        code, err = train(
            tmp_path, capsys, "--params", str(params), "--data", str(synthetic_dir), "--quiet"
        )
        assert code == 2
        assert one_line(err) == (
            f"snn: error: {tmp_path / 'run'}: another snn process is writing this run folder"
        )
        assert [p.name for p in (tmp_path / "run").iterdir()] == [".lock"]


def test_a_good_run_writes_the_whole_folder(tmp_path, capsys, synthetic_dir, params) -> None:
    """After a successful run the folder holds exactly the results and the final progress.json,
    and at no moment did it hold part of the results."""
    folder = tmp_path / "run"
    seen: set[tuple[str, ...]] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):
                seen.add(tuple(sorted(p.name for p in folder.iterdir())))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        code, err = train(
            tmp_path,
            capsys,
            "--params",
            str(params),
            "--data",
            str(synthetic_dir),
            "--epochs",
            "100",
            "--quiet",
        )
    finally:
        done.set()
        watcher.join()
    assert (code, err) == (0, "")
    assert sorted(p.name for p in folder.iterdir()) == RESULTS
    results = {"cost.png", "metrics.json", "model.npz", "neurons.npz"}
    for listing in seen:  # the run in progress, or the finished run: never a mix
        assert results.isdisjoint(listing) or set(listing) == set(RESULTS), listing
    metrics = json.loads((folder / "metrics.json").read_text())
    for key in (
        "run_id",
        "engine",
        "parameters",
        "costs",
        "train_accuracy",
        "test_accuracy",
        "confusion_matrix",
        "wall_seconds",
    ):
        assert key in metrics
    assert len(metrics["costs"]) == 100
    progress = json.loads((folder / "progress.json").read_text())
    assert (progress["status"], progress["epoch"], progress["costs"]) == (
        "succeeded",
        100,
        metrics["costs"],
    )


@pytest.mark.slow
def test_a_second_process_on_the_same_folder_is_refused_and_the_first_is_unharmed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_dir: Path
) -> None:
    epochs = 400
    params = tmp_path / "p.json"
    params.write_text(tiny_parameters(epochs).to_json())
    out = tmp_path / "run"
    args = ["train", "--engine", "direct", "--params", str(params), "--data", str(synthetic_dir)]
    args += ["--out", str(out), "--run-id", "r", "--quiet"]
    first = subprocess.Popen(
        [sys.executable, "-m", "snn.cli", *args],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "progress.json").exists():  # written once the folder is locked
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never started"
            time.sleep(0.005)
        os.kill(first.pid, signal.SIGSTOP)  # held mid-run while the second one tries
        try:
            progress = json.loads((out / "progress.json").read_text())
            assert progress["status"] == "running" and progress["pid"] == first.pid
            before = sorted(p.name for p in out.iterdir())
            assert main(args) == 2
            assert one_line(capsys.readouterr().err) == (
                f"snn: error: {out}: another snn process is writing this run folder"
            )
            assert sorted(p.name for p in out.iterdir()) == before
        finally:
            os.kill(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0 and err == ""
    assert sorted(p.name for p in out.iterdir()) == RESULTS
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["costs"] == direct.train(spec(tiny_parameters(epochs), synthetic_dir)).costs
