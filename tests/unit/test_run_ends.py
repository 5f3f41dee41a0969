"""The ends of a run: what its end would refuse is refused at its start (nothing written); a
refused resume writes nothing; the results appear whole whatever signal comes; a failed run
leaves only what was there before it; a finished run says what it was trained on and how it
ended."""

from __future__ import annotations

import fcntl
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from snn import npz
from snn.cli import main
from snn.data import Dataset
from snn.errors import RunFailed
from snn.parameters import Parameters
from snn.report import model_bytes as written_model
from tests.helpers import ROOT, tiny_parameters

RESULTS = ["cost.png", "metrics.json", "model.npz", "neurons.npz", "progress.json"]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def params_file(tmp_path: Path, p: Parameters) -> Path:
    path = tmp_path / "p.json"
    path.write_text(p.to_json())
    return path


def direct(tmp_path: Path, data: Path, *args: str) -> list[str]:
    params = params_file(tmp_path, tiny_parameters(2))
    return ["train", "--engine", "direct", "--params", str(params), "--data", str(data), *args]


def pictures(folder: Path, names: tuple[str, str]) -> Path:
    from PIL import Image

    for c, name in enumerate(names):
        (folder / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (6, 6), (40 * i, 200 * c, 0)).save(folder / name / f"{i}.png")
    return folder


# --- checked at the start ------------------------------------------------------------------


def test_a_class_name_no_model_can_keep_is_refused_before_training(tmp_path, capsys) -> None:
    data = pictures(tmp_path / "pics", ("cat", "n" * 150))
    out = tmp_path / "run"
    code = main([*direct(tmp_path, data, "--out", str(out)), "--positive", "cat"])
    line = one_line(capsys.readouterr().err)  # no progress: nothing trained
    assert code == 2 and "class names" in line and "rename the class folders" in line
    assert not out.exists()


def test_a_model_over_the_readers_limit_is_refused_before_training(
    tmp_path, capsys, synthetic_dir, monkeypatch
) -> None:
    """The limit made small, so that the 2-2-1 network's model is over it."""
    monkeypatch.setattr(npz, "MAX_NPZ_BYTES", 1000)
    out = tmp_path / "run"
    code = main(direct(tmp_path, synthetic_dir, "--out", str(out)))
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "over the limit of 1,000" in line
    assert not out.exists()


def test_five_layers_of_4096_on_few_inputs_are_refused_by_the_plan() -> None:
    """Within parameters.json's limits, but its model unpacks to over 512 MiB."""
    from snn.plan import check_run

    neurons = [4096] * 5 + [1]
    p = Parameters.from_dict({
        "epochs": 1,
        "layers": 6,
        "learning_rate": 0.01,
        "neurons_per_task": 4096,
        "neurons": {f"layer{i}": n for i, n in enumerate(neurons, 1)},
        "activations": {f"layer{i}": "relu" if i < 6 else "sigmoid" for i in range(1, 7)},
    })  # fmt: skip
    x = np.zeros((4, 3))
    data = Dataset(x, np.zeros((1, 3)), x, np.zeros((1, 3)), ("non-cat", "cat"))
    with pytest.raises(Exception, match="over the limit of 536,870,912") as raised:
        check_run(p, data)
    assert raised.value.exit_code == 2


def test_the_planned_model_size_is_what_the_reader_adds_up() -> None:
    import io
    import itertools
    import zipfile

    from snn.plan import model_bytes

    dims, info = [7, 300, 20, 1], {"classes": ["a", "b"], "input": {"kind": "values"}}
    weights = [(np.zeros((n, m)), np.zeros((n, 1))) for m, n in itertools.pairwise(dims)]
    archive = zipfile.ZipFile(io.BytesIO(written_model(weights, info)))
    assert model_bytes(dims, info) == sum(i.file_size for i in archive.infolist())


@pytest.mark.parametrize("engine", ["direct", "local"])
def test_the_step_limit_is_a_usage_error_on_every_engine(engine, tmp_path, capsys) -> None:
    """A million epochs of 1,001 mini-batches: over the 999,999,999 steps a run can count."""
    from snn.data import synthetic_images, write_h5_pair

    data = write_h5_pair(tmp_path / "data", *synthetic_images(m_train=1001))
    p = Parameters.from_dict({**tiny_parameters(1_000_000).to_dict(), "batch_size": 1})
    out = tmp_path / "run"
    args = ["train", "--engine", engine, "--params", str(params_file(tmp_path, p))]
    args += ["--data", str(data), "--out", str(out), "--template", str(ROOT / "template.yaml")]
    code = main(args)
    assert code == 2 and "steps" in one_line(capsys.readouterr().err)
    assert not out.exists()


def test_a_folder_whose_results_could_not_be_put_in_place_is_refused_at_the_start(
    tmp_path, capsys, synthetic_dir, monkeypatch
) -> None:
    """The folder around the run folder is not writable (as the system says: simulated here, as
    the tests may run as root, who may write anywhere)."""
    parent = tmp_path / "locked"
    (parent / "run").mkdir(parents=True)
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != parent and access(p, mode))
    code = main(direct(tmp_path, synthetic_dir, "--out", str(parent / "run")))
    assert code == 2 and "not writable" in one_line(capsys.readouterr().err)
    assert list((parent / "run").iterdir()) == []


# --- resume ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag", ["--epochs=5", "--data=x", "--params=x.json", "--out=x", "--run-id=x", "--positive=x"]
)
def test_resume_refuses_what_would_change_the_run(tmp_path, capsys, flag) -> None:
    code = main(["train", "--resume", str(tmp_path / "run"), flag])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and flag.split("=")[0] in line and "--resume" in line
    assert list(tmp_path.iterdir()) == []


def test_a_refused_resume_of_nothing_writes_nothing(tmp_path, capsys) -> None:
    code = main(["train", "--resume", str(tmp_path / "nonexist" / "run")])
    assert code == 2 and "no such run folder" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "nonexist").exists()


@pytest.mark.slow
def test_a_finished_run_is_said_to_be_finished_and_left_as_it_was(
    tmp_path, capsys, synthetic_dir
) -> None:
    out = tmp_path / "run"
    assert main([*direct(tmp_path, synthetic_dir, "--out", str(out)), "--quiet"]) == 0
    capsys.readouterr()
    before = sorted(p.name for p in out.iterdir())
    code = main(["train", "--resume", str(out), "--template", str(ROOT / "template.yaml")])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "has finished" in line and "nothing to resume" in line
    assert sorted(p.name for p in out.iterdir()) == before == RESULTS  # no .lock


# --- a failed or stopped run -----------------------------------------------------------------


def _fail(spec: object) -> None:
    raise RunFailed("run failed at epoch 1 in Loss")


def test_a_failed_run_keeps_the_users_empty_folder(
    tmp_path, capsys, synthetic_dir, monkeypatch
) -> None:
    monkeypatch.setattr("snn.engines.direct.train", _fail)
    out = tmp_path / "mine"
    out.mkdir()
    assert main([*direct(tmp_path, synthetic_dir, "--out", str(out)), "--quiet"]) == 1
    assert out.is_dir() and list(out.iterdir()) == []


def test_a_failed_run_leaves_no_folder_it_made(
    tmp_path, capsys, synthetic_dir, monkeypatch
) -> None:
    monkeypatch.setattr("snn.engines.direct.train", _fail)
    monkeypatch.chdir(tmp_path)
    assert main([*direct(tmp_path, synthetic_dir), "--quiet"]) == 1
    assert not (tmp_path / "runs").exists()


EMBEDDED = [pytest.mark.slow, pytest.mark.xdist_group("embedded")]


@pytest.mark.parametrize("engine", ["direct", pytest.param("local", marks=EMBEDDED)])
def test_a_signal_as_the_results_are_written_leaves_them_whole(
    engine, tmp_path, capsys, synthetic_dir, monkeypatch
) -> None:
    """SIGTERM while the results folder is written: the run finishes, its folder whole (no
    resume state left in it), its progress "succeeded"; no partial folder is left beside it."""
    import snn.run_folder as run_folder

    original = run_folder.write_results

    def signalled(folder: Path, result: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        original(folder, result)

    monkeypatch.setattr(run_folder, "write_results", signalled)
    out = tmp_path / "run"
    args = direct(tmp_path, synthetic_dir, "--out", str(out))
    args[args.index("direct")] = engine
    code = main([*args, "--template", str(ROOT / "template.yaml")])
    assert code == 0, capsys.readouterr().err
    assert "SIGTERM" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == RESULTS
    assert json.loads((out / "progress.json").read_text())["status"] == "succeeded"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "p.json", "run"]


def test_partial_results_a_killed_process_left_are_removed_by_the_next_run(
    tmp_path, capsys, synthetic_dir
) -> None:
    """A process killed (SIGKILL) while it wrote its results leaves a hidden partial folder;
    the next run beside it removes it, but not one that a live process is writing (locked)."""
    runs = tmp_path / "runs"
    stale, live = runs / ".r3.results-abc12_xy", runs / ".r4.results-zzzzzzzz"
    users = runs / ".notes.results-aaaaaaaa"  # named alike, but not what a run writes
    for folder in (stale, live, users):
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text("{")
    (users / "notes.txt").write_text("mine")
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        code = main([*direct(tmp_path, synthetic_dir, "--out", str(runs / "r5")), "--quiet"])
        assert code == 0
        assert not stale.exists() and live.is_dir() and users.is_dir()
    finally:
        os.close(fd)


def test_a_second_ctrl_c_on_the_local_engine_names_the_resume_command(
    tmp_path, capsys, synthetic_dir, monkeypatch
) -> None:
    """A KeyboardInterrupt the engine did not handle itself (a second Ctrl-C while it saved)
    after a resume state was saved: progress.json and stderr give the resume command."""
    out = tmp_path / "run"

    def interrupted(spec, template, fault_rate):
        (spec.folder.resume_dir).mkdir()
        (spec.folder.resume_dir / "state.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr("snn.engines.local.train", interrupted)
    args = direct(tmp_path, synthetic_dir, "--out", str(out))
    args += ["--template", str(ROOT / "template.yaml")]
    args[args.index("direct")] = "local"
    assert main(args) == 130
    error = json.loads((out / "progress.json").read_text())["error"]
    assert f"snn train --resume {out}" in error and "direct engine" not in error
    assert f"snn train --resume {out}" in capsys.readouterr().err


# --- what a finished run says ----------------------------------------------------------------


def test_evaluate_uses_the_data_the_run_was_given(
    tmp_path, capsys, synthetic_dir, monkeypatch
) -> None:
    out = tmp_path / "run"
    assert main([*direct(tmp_path, synthetic_dir, "--out", str(out)), "--quiet"]) == 0
    monkeypatch.setenv("SNN_DATA_DIR", str(tmp_path / "not-there"))
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out)]) == 0, capsys.readouterr().err
    evaluation = json.loads((out / "metrics.json").read_text())["evaluation"]
    assert evaluation["data"] == str(synthetic_dir.resolve())


def test_an_early_stop_is_said_at_the_end(tmp_path, capsys, synthetic_dir) -> None:
    p = Parameters.from_dict({
        **tiny_parameters(400).to_dict(),
        "learning_rate": 0.5,
        "validation": 0.25,
        "early_stopping": {"patience": 2},
    })  # fmt: skip
    out = tmp_path / "run"
    args = ["train", "--engine", "direct", "--params", str(params_file(tmp_path, p))]
    assert main([*args, "--data", str(synthetic_dir), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped_early"], "the network must stop early for this test"
    said = capsys.readouterr().out
    assert f"stopped early after {len(metrics['costs'])} of 400 epochs" in said
    assert f"the model is epoch {metrics['model_epoch'] + 1}'s" in said


def test_predict_says_whose_model_it_used(tmp_path, capsys, synthetic_dir, monkeypatch) -> None:
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    assert main([*direct(tmp_path, synthetic_dir, "--run-id", "mine"), "--quiet"]) == 0
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    capsys.readouterr()
    assert main(["predict", "a.png"]) == 0
    assert "runs/mine/model.npz" in capsys.readouterr().err


def test_train_finds_the_template_beside_the_package_from_any_folder(
    tmp_path, monkeypatch
) -> None:
    from snn.commands.train import find_template

    monkeypatch.chdir(tmp_path)
    assert Path(find_template(None)) == ROOT / "template.yaml"
