"""`snn inspect`: per-neuron tables from a forward pass over the training set and neurons.npz,
and the figures in RUN_FOLDER/inspect/."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from snn import network as nn
from snn.cli import main
from snn.data import load_dataset, synthetic_images, write_h5_pair
from snn.inspection import Layer, forward_layers, histograms, neuron_rows, weight_pictures
from snn.parameters import Parameters
from snn.predict import read_weights
from snn.report import model_bytes
from tests.helpers import train_run

SIZE = 4  # the synthetic pictures are 4 x 4


def three_layers() -> Parameters:
    return Parameters.from_dict(
        {
            "epochs": 12,
            "layers": 3,
            "activations": {"layer1": "relu", "layer2": "tanh", "layer3": "sigmoid"},
            "neurons": {"layer1": 5, "layer2": 3, "layer3": 1},
            "learning_rate": 0.1,
            "initialization": "xavier",
            "neurons_per_task": 2,
        }
    )


@pytest.fixture
def run(tmp_path: Path, synthetic_dir: Path) -> Path:
    return train_run(tmp_path / "run", three_layers(), synthetic_dir, "inspected")


def inspect(run: Path, data: Path, *extra: str) -> int:
    return main(["inspect", str(run), "--data", str(data), *extra])


@pytest.mark.slow
def test_every_figure_is_written(
    run: Path, synthetic_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert inspect(run, synthetic_dir) == 0
    out = capsys.readouterr().out
    assert out.count("Z and A over the training set (40 pictures)") == 3
    names = sorted(p.name for p in (run / "inspect").iterdir())
    assert names == sorted(
        ["layer1_weights.png"]
        + [f"layer1_neuron{i}.png" for i in range(5)]
        + [f"layer{n}_{kind}.png" for n in (1, 2, 3) for kind in ("activations", "gradients")]
    )
    for name in names:
        with Image.open(run / "inspect" / name) as image:
            image.load()  # a complete PNG
            assert image.format == "PNG"


def test_each_neuron_picture_is_its_weights_scaled_to_0_1(run: Path, synthetic_dir: Path) -> None:
    assert inspect(run, synthetic_dir, "--layer", "1", "--neuron", "3") == 0
    W1 = read_weights(run / "model.npz")[0][0]
    with Image.open(run / "inspect" / "layer1_neuron3.png") as image:
        assert image.size == (SIZE, SIZE) and image.mode == "RGB"
        got = np.asarray(image)
    w = W1[3].reshape(SIZE, SIZE, 3)  # the layout of the inputs: (row, column, channel)
    expected = np.rint((w - w.min()) / (w.max() - w.min()) * 255).astype(np.uint8)
    assert np.array_equal(got, expected)
    assert got.min() == 0 and got.max() == 255


def test_weight_pictures_are_normalised_per_neuron() -> None:
    W = np.array([np.linspace(-3, 5, 12), np.full(12, 0.7)])
    pictures = weight_pictures(W, 2)
    assert pictures.shape == (2, 2, 2, 3)
    assert pictures[0].min() == 0 and pictures[0].max() == 1
    assert np.all(pictures[1] == 0.5)  # a constant neuron: mid grey


def test_the_numbers_come_from_a_forward_pass_and_the_history(
    run: Path, synthetic_dir: Path
) -> None:
    dataset = load_dataset(synthetic_dir)
    weights = read_weights(run / "model.npz")
    p = three_layers()
    passes = forward_layers(weights, p.activations, dataset.train_x)
    assert np.array_equal(passes[-1][1], nn.forward(weights, p.activations, dataset.train_x))
    with np.load(run / "neurons.npz") as z:
        epochs, dW = z["epochs"], z["dW_norm_layer1"]
        history = {"dW_norm": dW, "db_abs": z["db_abs_layer1"]}
    Z, A = passes[0]
    layer = Layer(1, "relu", *weights[0], Z, A, history)
    (row,) = neuron_rows(layer, [2], epochs)
    assert row["w_norm"] == pytest.approx(np.linalg.norm(weights[0][0][2]))
    assert row["b"] == weights[0][1][2, 0]
    assert row["Z"] == (Z[2].mean(), Z[2].std(), Z[2].min(), Z[2].max())
    assert row["active"] == np.mean(Z[2] > 0)
    assert row["dW_norm"] == [dW[0, 2], dW[(len(epochs) - 1) // 2, 2], dW[-1, 2]]
    tanh = Layer(2, "tanh", *weights[1], *passes[1], None)
    (row,) = neuron_rows(tanh, [0], epochs)
    assert row["active"] is None and row["dW_norm"] is None


def test_the_table_shows_the_chosen_neurons(
    run: Path, synthetic_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert inspect(run, synthetic_dir, "--layer", "2", "--neuron", "0", "--neuron", "2") == 0
    out = capsys.readouterr().out
    assert "layer 2 (tanh, 3 neuron(s))" in out and "layer 1" not in out
    assert sorted(p.name for p in (run / "inspect").iterdir()) == [
        "layer2_activations.png",
        "layer2_gradients.png",
    ]


def test_without_neurons_npz_the_rest_is_still_shown(
    run: Path, synthetic_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (run / "neurons.npz").unlink()
    assert inspect(run, synthetic_dir, "--layer", "3") == 0
    captured = capsys.readouterr()
    assert "no gradient history (neurons.npz not found)" in captured.err
    assert sorted(p.name for p in (run / "inspect").iterdir()) == ["layer3_activations.png"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layer", "0"], "--layer 0 is not a layer of this network: 1..3"),
        (["--layer", "4"], "--layer 4 is not a layer of this network: 1..3"),
        (["--layer", "1", "--neuron", "5"], "--neuron 5: layer 1 has neurons 0..4"),
        (["--layer", "3", "--neuron", "1"], "--neuron 1: layer 3 has neurons 0..0"),
        (["--layer", "2", "--neuron", "-1"], "--neuron -1: layer 2 has neurons 0..2"),
        (["--neuron", "0"], "--neuron needs --layer"),
    ],
)
def test_out_of_range_choices_are_refused(
    run: Path,
    synthetic_dir: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    assert inspect(run, synthetic_dir, *extra) == 2
    err = capsys.readouterr().err
    assert err.strip().startswith(f"snn: error: {message}") and "\n" not in err.strip()
    assert not (run / "inspect").exists()


def test_bad_run_folders_and_data_are_refused(
    run: Path, tmp_path: Path, synthetic_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.npz").write_bytes(b"PK\x03\x04")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.npz").write_bytes((run / "model.npz").read_bytes())
    other_size = write_h5_pair(tmp_path / "five", *synthetic_images(size=5))
    cases = [
        (tmp_path / "missing", synthetic_dir, "not a run folder"),
        (run / "model.npz", synthetic_dir, "not a run folder"),
        (empty, synthetic_dir, "no model.npz"),
        (corrupt, synthetic_dir, "not a readable .npz model"),
        (bare, synthetic_dir, "no metrics.json"),
        (run, other_size, "the model takes 48"),
    ]
    for folder, data, message in cases:
        assert inspect(folder, data) == 2, folder
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_corrupt_neurons_npz_is_noted(
    run: Path, synthetic_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (run / "neurons.npz").write_bytes(b"garbage")
    assert inspect(run, synthetic_dir, "--layer", "1") == 0
    assert "neurons.npz cannot be read" in capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["parameters"]["neurons"]["layer1"] == 5


def leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_diverged_model_is_refused_before_anything_is_written(
    run: Path, synthetic_dir: Path, capsys: pytest.CaptureFixture[str], value: float
) -> None:
    weights = read_weights(run / "model.npz")
    weights[1][0][0, 0] = value
    (run / "model.npz").write_bytes(model_bytes(weights))
    assert inspect(run, synthetic_dir) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        f"snn: error: {run / 'model.npz'}: W2 holds NaN or infinite values: not a usable model "
        "(did its run diverge? a lower learning rate may help)"
    )
    assert captured.out == ""
    assert not (run / "inspect").exists() and leftovers(run) == []


def test_weights_whose_values_overflow_are_refused_before_anything_is_written(
    run: Path, synthetic_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = read_weights(run / "model.npz")
    weights[0][0][:] = 1e308  # finite, but Z = W1 X + b1 overflows
    (run / "model.npz").write_bytes(model_bytes(weights))
    assert inspect(run, synthetic_dir) == 2
    err = capsys.readouterr().err
    assert err.startswith("snn: error: layer 1: Z is not finite") and err.count("\n") == 1
    assert not (run / "inspect").exists() and leftovers(run) == []


def test_the_figures_replace_an_older_inspect_folder_whole(run: Path, synthetic_dir: Path) -> None:
    (run / "inspect").mkdir()
    (run / "inspect" / "layer9_stale.png").write_bytes(b"old")
    assert inspect(run, synthetic_dir, "--layer", "3") == 0
    assert sorted(p.name for p in (run / "inspect").iterdir()) == [
        "layer3_activations.png",
        "layer3_gradients.png",
    ]
    assert leftovers(run) == []


@pytest.mark.slow
def test_a_failure_while_drawing_leaves_the_older_figures(
    run: Path,
    synthetic_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert inspect(run, synthetic_dir) == 0
    before = {p.name: p.read_bytes() for p in (run / "inspect").iterdir()}
    capsys.readouterr()

    def disk_full(folder: Path, layer: Layer, *args: object) -> Path:
        if layer.number == 2:
            raise OSError(28, "No space left on device")
        return folder / "unused.png"

    monkeypatch.setattr("snn.commands.inspect.write_gradient_curves", disk_full)
    assert inspect(run, synthetic_dir) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"snn: error: cannot write the figures in {run / 'inspect'}: No space left on device"
    )
    assert {p.name: p.read_bytes() for p in (run / "inspect").iterdir()} == before
    assert leftovers(run) == []


@pytest.mark.slow
def test_a_zip_bomb_in_neurons_npz_is_noted_and_not_unpacked(
    run: Path, synthetic_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        header = io.BytesIO()
        np.save(header, np.zeros(3, dtype=np.int64))
        archive.writestr("epochs.npy", header.getvalue() + bytes(32 * 2**20))
    (run / "neurons.npz").write_bytes(buf.getvalue())
    assert inspect(run, synthetic_dir, "--layer", "1") == 0
    err = capsys.readouterr().err
    assert "no gradient history (neurons.npz cannot be read" in err and "refused unread" in err


def test_the_figures_bins_are_the_layers(run: Path, synthetic_dir: Path) -> None:
    dataset = load_dataset(synthetic_dir)
    weights = read_weights(run / "model.npz")
    Z, A = forward_layers(weights, three_layers().activations, dataset.train_x)[0]
    layer = Layer(1, "relu", *weights[0], Z, A, None)
    counted = histograms(layer, [1, 3], bins=10)
    edges, counts = counted["Z"]
    assert np.array_equal(edges, np.histogram_bin_edges(Z[[1, 3]], bins=10))
    assert counts.shape == (2, 10) and counts.sum(axis=1).tolist() == [40, 40]
    assert np.array_equal(counts[1], np.histogram(Z[3], bins=edges)[0])
