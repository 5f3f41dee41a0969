"""A local run that stops, however it stops, can be resumed, and ends bit-identical to a run that
never stopped: SIGINT, SIGTERM and SIGHUP save it and exit with the shell's code for the signal;
SIGKILL loses at most the work since the last snapshot. What resume/ holds is checked before
anything is used: tampered, corrupt or non-finite state is one line naming the file, exit 2, and
nothing changes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from snn.cli import main
from snn.engines import direct, local
from snn.errors import RunFailed
from snn.run_folder import RunFolder
from snn.stages import state_keys
from tests.helpers import (
    ROOT,
    assert_same_run,
    early_stopping_data,
    early_stopping_network,
    spec,
    tiny_parameters,
    train_args,
    with_handler,
)

pytestmark = pytest.mark.xdist_group("embedded")


def write_params(tmp_path: Path, epochs: int) -> Path:
    path = tmp_path / f"tiny{epochs}.json"
    path.write_text(tiny_parameters(epochs).to_json())
    return path



def assert_equals_direct(out: Path, epochs: int, data: Path) -> None:
    reference = direct.train(spec(tiny_parameters(epochs), data, "r"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["costs"] == reference.costs
    with np.load(out / "model.npz") as model:
        for layer, (W, b) in enumerate(reference.weights, 1):
            assert np.array_equal(model[f"W{layer}"], W)
            assert np.array_equal(model[f"b{layer}"], b)


def progress(out: Path) -> dict:
    try:
        return json.loads((out / "progress.json").read_text())
    except (OSError, ValueError):
        return {}


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "snn.cli", *args],
        cwd=cwd,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(out: Path, condition, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = progress(out)
        if state and condition(state):
            return state
        time.sleep(0.2)
    raise AssertionError(f"the run never got there: {progress(out)}")


# --- signals --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_saves_the_run_and_resume_ends_bit_identical(
    tmp_path: Path, synthetic_dir: Path, signum: int, code: int
) -> None:
    params, out = write_params(tmp_path, 60), tmp_path / "run"
    run = start(train_args(params, synthetic_dir, out), tmp_path)
    wait_for(out, lambda s: s.get("epoch", 0) >= 5)
    run.send_signal(signum)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == code
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("snn: error: run r interrupted; resume it from epoch ")
    assert lines[0].endswith(f" with: snn train --resume {out}")
    assert progress(out)["status"] == "interrupted"
    assert not (out / "model.npz").exists()

    assert (
        main(["train", "--resume", str(out), "--template", str(ROOT / "template.yaml"), "--quiet"])
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "cost.png",
        "metrics.json",
        "model.npz",
        "neurons.npz",
        "progress.json",
    ]
    assert_equals_direct(out, 60, synthetic_dir)
    executions = json.loads((out / "metrics.json").read_text())["executions"]
    assert [e["status"] for e in executions] == ["ABORTED", "SUCCEEDED"]


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_ends_bit_identical(
    tmp_path: Path, synthetic_dir: Path
) -> None:
    """Killed outright three times, at different epochs (the last just after a snapshot), and
    resumed each time: the run ends as if it had never stopped."""
    params, out = write_params(tmp_path, 80), tmp_path / "run"
    run = start(train_args(params, synthetic_dir, out), tmp_path)
    wait_for(out, lambda s: s.get("resumable_from") is not None and s.get("epoch", 0) >= 3)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=30)
    assert run.returncode == -signal.SIGKILL
    for stop_after in (20, 45):
        run = start(
            ["train", "--resume", str(out), "--template", str(ROOT / "template.yaml"), "--quiet"],
            tmp_path,
        )
        wait_for(
            out, lambda s, n=stop_after: s.get("epoch", 0) >= n and s.get("status") == "running"
        )
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
    saved = json.loads((out / "resume" / "state.json").read_text())["record"]["committed_epoch"]
    assert saved > 0
    assert (
        main(["train", "--resume", str(out), "--template", str(ROOT / "template.yaml"), "--quiet"])
        == 0
    )
    assert_equals_direct(out, 80, synthetic_dir)


# --- what resume trusts --------------------------------------------------------------------------


@pytest.fixture
def saved_run(tmp_path: Path, synthetic_dir: Path) -> Path:
    """A run that failed at epoch 2 (its Commit broke), saved in its run folder."""
    (tmp_path / "project").mkdir()
    template = with_handler(
        tmp_path / "project", "commit", "tests.faulty_handlers.commit_fails_at_epoch_2"
    )
    out = tmp_path / "run"
    assert main(train_args(write_params(tmp_path, 5), synthetic_dir, out, template)) == 1
    state = json.loads((out / "resume" / "state.json").read_text())
    assert state["record"]["committed_epoch"] == 2
    return out


def tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def resume_refused(out: Path, capsys: pytest.CaptureFixture[str], *fragments: str) -> None:
    before = tree(out)
    code = main(
        ["train", "--resume", str(out), "--template", str(ROOT / "template.yaml"), "--quiet"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("snn: error: "), err
    for fragment in fragments:
        assert fragment in err, err
    assert tree(out) == before


def resave(out: Path, key: str, data: bytes) -> None:
    """Replace a saved object and its manifest entry, as a careful tamperer would."""
    (out / "resume" / "objects" / key).write_bytes(data)
    path = out / "resume" / "state.json"
    state = json.loads(path.read_text())
    state["manifest"][key] = hashlib.sha256(data).hexdigest()
    path.write_text(json.dumps(state))


def weight_key(out: Path) -> str:
    state = json.loads((out / "resume" / "state.json").read_text())
    return next(k for k in state["manifest"] if "/W/layer001/" in k)


def npy(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.mark.slow
def test_resume_refuses_a_saved_matrix_that_changed(saved_run: Path, capsys) -> None:
    path = saved_run / "resume" / "objects" / weight_key(saved_run)
    path.write_bytes(b"\x93NUMPY garbage")
    resume_refused(saved_run, capsys, str(path), "changed since it was saved")


@pytest.mark.slow
def test_resume_refuses_garbage_in_a_matrix(saved_run: Path, capsys) -> None:
    key = weight_key(saved_run)
    resave(saved_run, key, b"\x93NUMPY\x01\x00garbage")
    resume_refused(saved_run, capsys, key, "is not a readable .npy matrix")


def test_resume_refuses_non_finite_weights(saved_run: Path, capsys) -> None:
    key = weight_key(saved_run)
    W = np.load(saved_run / "resume" / "objects" / key)
    W[0, 0] = np.nan
    resave(saved_run, key, npy(W))
    resume_refused(saved_run, capsys, key, "not finite")


@pytest.mark.slow
def test_resume_refuses_float32_weights(saved_run: Path, capsys) -> None:
    key = weight_key(saved_run)
    W = np.load(saved_run / "resume" / "objects" / key)
    resave(saved_run, key, npy(W.astype(np.float32)))
    resume_refused(saved_run, capsys, key, "float32", "not float64")


def test_resume_refuses_an_upload_that_is_not_its_sha256(
    saved_run: Path, capsys, tmp_path: Path
) -> None:
    state = json.loads((saved_run / "resume" / "state.json").read_text())
    key = state["execution_input"]["train_key"]
    flipped = tmp_path / "flipped.h5"
    flipped.write_bytes((saved_run / "resume" / "objects" / key).read_bytes())
    with h5py.File(flipped, "r+") as h5:
        labels = 1 - h5["train_set_y"][()]
        del h5["train_set_y"]
        h5["train_set_y"] = labels
    resave(saved_run, key, flipped.read_bytes())
    resume_refused(saved_run, capsys, key, "does not match the sha256 in its key")


@pytest.mark.parametrize(
    ("tamper", "fragment"),
    [
        (lambda s: s.pop("record"), "record"),
        (lambda s: s["record"].update(committed_epoch=99), "committed_epoch"),
        (lambda s: s["record"]["costs"].pop("1"), "costs"),
        (lambda s: s["manifest"].update({"../../etc/passwd": "0" * 64}), "manifest"),
        (lambda s: s["execution_input"].update(train_key="uploads/../x"), "upload key"),
        (lambda s: s.update(format=1), "format"),
    ],
    ids=[
        "no record",
        "epoch beyond",
        "a cost missing",
        "a key outside",
        "a bad upload key",
        "old format",
    ],
)
@pytest.mark.slow
def test_resume_refuses_a_tampered_state(saved_run: Path, capsys, tamper, fragment: str) -> None:
    path = saved_run / "resume" / "state.json"
    state = json.loads(path.read_text())
    tamper(state)
    path.write_text(json.dumps(state))
    resume_refused(saved_run, capsys, str(path), fragment)


def test_resume_refuses_a_state_that_is_not_json(saved_run: Path, capsys) -> None:
    path = saved_run / "resume" / "state.json"
    path.write_text("{not json")
    resume_refused(saved_run, capsys, str(path), "cannot be read")


@pytest.mark.slow
def test_an_untampered_saved_run_resumes_bit_identical(
    saved_run: Path, synthetic_dir: Path
) -> None:
    assert (
        main(
            [
                "train",
                "--resume",
                str(saved_run),
                "--template",
                str(ROOT / "template.yaml"),
                "--quiet",
            ]
        )
        == 0
    )
    assert_equals_direct(saved_run, 5, synthetic_dir)


# --- early stopping ------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_early_stopping_run_saved_after_its_best_epoch_resumes_bit_identical(
    tmp_path: Path,
) -> None:
    """A 2-layer Adam run with mini-batches that watches a validation set is best at epoch 0 and
    is saved at epoch 2 (its Commit broke there): the resume state holds the best epoch's
    weights, which the model is made of, and the resumed run ends as one never stopped (it stops
    early at the same epoch, with the same costs and the same model)."""
    data = early_stopping_data(tmp_path / "data")
    p = early_stopping_network()
    clean = direct.train(spec(p, data))
    assert clean.extra["best_epoch"] == 0 and len(clean.costs) == 4  # stopped early
    template = with_handler(tmp_path, "commit", "tests.faulty_handlers.commit_fails_at_epoch_2")
    with RunFolder(tmp_path / "run") as folder, pytest.raises(RunFailed):
        local.train(spec(p, data, folder=folder), template)
    state = json.loads((tmp_path / "run" / "resume" / "state.json").read_text())
    assert (state["record"]["committed_epoch"], state["record"]["best_epoch"]) == (2, 0)
    # the manifest is the list of what the run reads from here on, the best epoch's weights too
    assert set(state["manifest"]) == state_keys("r", state["record"], state["execution_input"])
    assert "scratch/r/step/000000003/W/layer001/shard00000.npy" in state["manifest"]
    with RunFolder(tmp_path / "run", new=False) as folder:
        resumed = local.resume(spec(p, data, folder=folder), ROOT / "template.yaml")
    assert_same_run(resumed, clean)
    assert resumed.extra["model_epoch"] == 0
