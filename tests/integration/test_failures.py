"""Runs that fail on the local engine end as they would on AWS and say the truth: the state whose
failure ended the execution (after its retries, not a fault a Retry absorbed or a sibling's),
with its epoch, layer and shard; an Init that fails is reported like any other stage; failures
no Catch can catch (a payload over 256 KB, the history quota) fail the execution itself and
reach the run record through the execution-status rule's function."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest

from snn.engines import local
from snn.engines.local import quota
from snn.errors import RunFailed
from snn.run_folder import RunFolder
from tests.helpers import spec, three_layers, tiny_parameters, with_handler

pytestmark = pytest.mark.xdist_group("embedded")


def saved_record(folder: Path) -> dict:
    return json.loads((folder / "resume" / "state.json").read_text())["record"]


@pytest.mark.slow
def test_the_failing_state_is_the_one_that_ended_the_execution(
    tmp_path: Path, synthetic_dir: Path
) -> None:
    """Commit fails for good, while injected faults fail (and Retry recovers) many other
    invocations before it: the failure names Commit, at its epoch."""
    template = with_handler(tmp_path, "commit", "tests.faulty_handlers.commit")
    with RunFolder(tmp_path / "run") as folder, pytest.raises(RunFailed) as failed:
        local.train(spec(tiny_parameters(3), synthetic_dir, folder=folder), template, 0.2)
    message = str(failed.value)
    assert message.startswith("run r failed at epoch 0 in Commit: StageBroke: commit broke")
    assert "\n" not in message
    record = saved_record(tmp_path / "run")
    assert (record["status"], record["error"]) == ("FAILED", "StageBroke")


def test_a_failing_shard_is_named_not_its_siblings_or_the_next_state(
    tmp_path: Path, synthetic_dir: Path
) -> None:
    template = with_handler(
        tmp_path, "forward_linear", "tests.faulty_handlers.forward_linear_shard1"
    )
    p = three_layers(neurons_per_task=2, epochs=2)
    with pytest.raises(RunFailed) as failed:
        local.train(spec(p, synthetic_dir), template)
    assert str(failed.value).startswith(
        "run r failed at epoch 0 in ForwardLinear (layer 1, shard 1): ValueError: shapes"
    )


def test_an_init_failure_is_reported_like_any_other(tmp_path: Path, synthetic_dir: Path) -> None:
    """A data set whose labels are not 0 or 1 passes the starter's checks here (it is not
    loaded) but not Init's: one line that names Init, and nothing to resume."""
    data = tmp_path / "bad"
    data.mkdir()
    for name in ("train_catvnoncat.h5", "test_catvnoncat.h5"):
        (data / name).write_bytes((synthetic_dir / name).read_bytes())
    with h5py.File(data / "train_catvnoncat.h5", "r+") as h5:
        labels = h5["train_set_y"][()]
        labels[0] = 7
        del h5["train_set_y"]
        h5["train_set_y"] = labels
    with RunFolder(tmp_path / "run") as folder, pytest.raises(RunFailed) as failed:
        local.train(spec(tiny_parameters(), data, folder=folder))
    message = str(failed.value)
    assert message.startswith("run r failed in Init: EventError: 'train_set_y'")
    assert "labels outside {0, 1}" in message
    assert message.endswith("nothing to resume (the run had not started)")
    assert not (tmp_path / "run" / "resume" / "state.json").exists()


def test_a_payload_over_the_limit_fails_the_execution(tmp_path: Path, synthetic_dir: Path) -> None:
    """States.DataLimitExceeded cannot be caught: the execution fails without RecordFailure,
    and the execution-status rule's function marks the run FAILED, as on AWS."""
    template = with_handler(tmp_path, "loss", "tests.faulty_handlers.loss_huge_result")
    with RunFolder(tmp_path / "run") as folder, pytest.raises(RunFailed) as failed:
        local.train(spec(tiny_parameters(), synthetic_dir, folder=folder), template)
    assert "States.DataLimitExceeded: the result of LossFunction is" in str(failed.value)
    record = saved_record(tmp_path / "run")
    assert (record["status"], record["error"]) == ("FAILED", "States.DataLimitExceeded")
    assert record["failed_execution"] == "r"


def test_the_history_quota_fails_the_execution(
    tmp_path: Path, synthetic_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a quota small enough for a few epochs, the guard fails the execution with the error
    and cause AWS gives, and the run record says so through the execution-status rule."""
    monkeypatch.setattr(quota, "MAX_HISTORY_EVENTS", 300)
    with RunFolder(tmp_path / "run") as folder, pytest.raises(RunFailed) as failed:
        local.train(spec(tiny_parameters(40), synthetic_dir, folder=folder))
    assert "States.Runtime: The execution reached the maximum number of history events" in str(
        failed.value
    )
    record = saved_record(tmp_path / "run")
    assert (record["status"], record["error"]) == ("FAILED", "States.Runtime")
    assert 0 < record["committed_epoch"] < 40


DIVERGENT = {
    "epochs": 6,
    "layers": 3,
    "activations": {"layer1": "relu", "layer2": "relu", "layer3": "sigmoid"},
    "neurons": {"layer1": 4, "layer2": 3, "layer3": 1},
    "learning_rate": 10,
    "initialization": "he",
}


@pytest.mark.parametrize("engine", ["direct", "local"])
@pytest.mark.slow
def test_a_diverging_run_fails_in_one_line_and_writes_no_model(
    engine: str, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cost is NaN from epoch 1 of this run: it fails there, says so in one line (the
    epoch, the layer, the likely cause), exits 1, writes no model, and every file it leaves
    is strict JSON."""
    from snn.cli import main
    from tests.helpers import ROOT

    params = tmp_path / "divergent.json"
    params.write_text(json.dumps(DIVERGENT))
    out = tmp_path / "run"
    args = ["train", "--engine", engine, "--params", str(params), "--data", str(data_dir)]
    code = main([*args, "--out", str(out), "--quiet", "--template", str(ROOT / "template.yaml")])
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert len(err.splitlines()) == 1, err
    assert "failed at epoch 1 in Loss" in err and "NumericalError" in err
    assert "learning rate (10.0) is probably too large" in err
    assert "resume it" not in err  # a diverged run would diverge again
    assert not (out / "model.npz").exists()
    for path in out.rglob("*.json") if out.exists() else []:
        json.loads(path.read_text(), parse_constant=lambda c, p=path: pytest.fail(f"{p}: {c}"))


def test_two_starters_of_one_run_id_on_a_stack(embedded_stack: object, synthetic_dir: Path) -> None:
    """Creating a run on a stack is one conditional write: the second starter is refused in one
    line, before it has uploaded anything."""
    from snn.engines.stack import create_run
    from snn.errors import SnnError
    from tests.helpers import Snapshot

    st = embedded_stack.stack  # type: ignore[attr-defined]
    create_run(st, "twice", tiny_parameters(), synthetic_dir)
    snap = Snapshot(st)
    before = snap()
    with pytest.raises(SnnError, match="run twice already exists"):
        create_run(st, "twice", tiny_parameters(5), synthetic_dir)
    assert snap() == before
