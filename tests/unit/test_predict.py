"""`snn predict` and snn.predict: pictures in any format become the network's input exactly as the
training images did; every bad input is one line on stderr and never stops the other files."""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from snn import network as nn
from snn import predict
from snn.cli import main
from snn.data import preprocess
from snn.parameters import Parameters
from snn.predict import ImageError, ModelError
from snn.report import model_arrays, model_bytes
from tests.helpers import export_test_pictures, train_run

SIZE = 4  # small pictures: a model for 4 x 4 RGB inputs


def params(layers: tuple[str, ...] = ("tanh", "sigmoid")) -> Parameters:
    return Parameters.from_dict(
        {
            "epochs": 1,
            "layers": len(layers),
            "activations": {f"layer{i}": a for i, a in enumerate(layers, 1)},
            "neurons": {
                f"layer{i}": 3 if i < len(layers) else 1 for i in range(1, len(layers) + 1)
            },
            "learning_rate": 0.01,
        }
    )


def weights(seed: int = 0, n_x: int = SIZE * SIZE * 3) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(0, 0.5, (3, n_x)), rng.normal(0, 0.1, (3, 1))),
        (rng.normal(0, 1, (1, 3)), np.zeros((1, 1))),
    ]


def run_folder(folder: Path, p: Parameters | None = None, seed: int = 0) -> Path:
    """A run folder as `snn train` leaves it, as far as predict reads it."""
    folder.mkdir(parents=True)
    (folder / "model.npz").write_bytes(model_bytes(weights(seed)))
    (folder / "metrics.json").write_text(json.dumps({"parameters": (p or params()).to_dict()}))
    return folder


def png(pixels: np.ndarray, **save: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", **save)
    return buf.getvalue()


def pixels(seed: int = 1, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header says width x height: Pillow reads the size before any pixel."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


# --- pictures -------------------------------------------------------------------------------------


def test_a_picture_of_the_model_size_is_used_pixel_for_pixel() -> None:
    p = pixels()
    x = predict.load_image(png(p), SIZE)
    assert x.shape == (SIZE * SIZE * 3,) and x.dtype == np.float64
    assert np.array_equal(x, preprocess(p[None])[:, 0])  # (row, column, channel) order, / 255


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"])
def test_common_formats_are_read_and_resized(fmt: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(pixels(size=40)).resize((60, 30)).save(buf, fmt)
    x = predict.load_image(buf.getvalue(), SIZE)
    assert x.shape == (SIZE * SIZE * 3,)
    assert x.min() >= 0 and x.max() <= 1


def test_resizing_uses_lanczos_on_the_whole_picture(tmp_path: Path) -> None:
    big = Image.fromarray(pixels(size=32)).resize((48, 32))
    path = tmp_path / "wide.png"
    big.save(path)
    expected = np.asarray(big.resize((SIZE, SIZE), Image.Resampling.LANCZOS))
    assert np.array_equal(predict.load_image(path, SIZE), preprocess(expected[None])[:, 0])


def test_grey_palette_and_transparent_pictures_become_rgb() -> None:
    grey = np.full((SIZE, SIZE), 200, dtype=np.uint8)
    assert np.allclose(predict.load_image(png(grey), SIZE), 200 / 255)
    palette = Image.fromarray(pixels()).convert("P")
    buf = io.BytesIO()
    palette.save(buf, "PNG")
    assert predict.load_image(buf.getvalue(), SIZE).shape == (SIZE * SIZE * 3,)
    clear = np.zeros((SIZE, SIZE, 4), dtype=np.uint8)  # fully transparent black
    assert np.allclose(predict.load_image(png(clear), SIZE), 1.0)  # shown on white


def test_exif_orientation_is_applied() -> None:
    p = pixels()
    upright = predict.load_image(png(p), SIZE)
    image = Image.fromarray(np.rot90(p).copy())  # stored turned left; EXIF says turn right
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    buf = io.BytesIO()
    image.save(buf, "PNG", exif=exif)
    turned = predict.load_image(buf.getvalue(), SIZE)
    assert np.array_equal(turned, upright)


def test_a_missing_file_a_folder_and_a_non_picture_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        predict.load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="folder"):
        predict.load_image(tmp_path)
    text = tmp_path / "notes.png"
    text.write_text("not a picture at all")
    with pytest.raises(ImageError, match="not a picture"):
        predict.load_image(text)
    with pytest.raises(ImageError, match="not a picture"):
        predict.load_image(b"")


def test_a_truncated_png_is_refused() -> None:
    data = png(pixels(size=64))
    with pytest.raises(ImageError, match=r"truncated|cannot be read"):
        predict.load_image(data[: len(data) // 2])


def test_a_decompression_bomb_is_refused_before_decoding() -> None:
    with pytest.raises(ImageError, match="decompression bomb"):
        predict.load_image(png_header_claiming(100_000, 100_000))
    # between the limit and twice the limit Pillow only warns: refused all the same
    with pytest.raises(ImageError, match="decompression bomb"):
        predict.load_image(png_header_claiming(8_000, 8_000))


def test_the_pixel_limit_applies_to_real_pictures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predict, "MAX_PIXELS", 15)
    with pytest.raises(ImageError, match="over the limit of 15"):
        predict.load_image(png(pixels()), SIZE)


# --- models ---------------------------------------------------------------------------------------


def test_a_file_over_the_byte_limit_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = png(pixels())
    monkeypatch.setattr(predict, "MAX_PICTURE_BYTES", len(data) - 1)
    path = tmp_path / "a.png"
    path.write_bytes(data)
    message = f"{len(data):,} bytes is over the limit of {len(data) - 1:,} bytes"
    for source in (path, data):
        with pytest.raises(ImageError, match=message):
            predict.load_image(source, SIZE)


def test_a_run_folder_gives_its_weights_and_activations(tmp_path: Path) -> None:
    folder = run_folder(tmp_path / "run", params(("relu", "sigmoid")))
    model = predict.load_model(folder)
    assert model.activations == ("relu", "sigmoid")
    assert model.run_folder == folder and model.path == folder / "model.npz"
    assert model.image_size == SIZE
    for (W, b), (W0, b0) in zip(model.weights, weights(), strict=True):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)


def test_an_npz_uses_the_metrics_beside_it_else_relu_and_sigmoid(tmp_path: Path) -> None:
    folder = run_folder(tmp_path / "run", params(("tanh", "sigmoid")))
    assert predict.load_model(folder / "model.npz").activations == ("tanh", "sigmoid")
    bare = tmp_path / "bare.npz"
    bare.write_bytes(model_bytes(weights()))
    model = predict.load_model(bare)
    assert model.activations == ("relu", "sigmoid") and model.run_folder is None


def test_the_default_is_the_newest_run_with_a_model(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    old = run_folder(runs / "old", seed=1)
    new = run_folder(runs / "new", seed=2)
    (runs / "empty").mkdir()
    os.utime(old / "model.npz", (1_000_000, 1_000_000))
    os.utime(new / "model.npz", (2_000_000, 2_000_000))
    assert predict.load_model(None, runs).run_folder == new
    os.utime(old / "model.npz", (3_000_000, 3_000_000))
    assert predict.load_model(None, runs).run_folder == old


def test_no_model_anywhere(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model"):
        predict.load_model(None, tmp_path / "runs")
    (tmp_path / "runs" / "x").mkdir(parents=True)
    with pytest.raises(ModelError, match="no model"):
        predict.load_model(None, tmp_path / "runs")
    with pytest.raises(ModelError, match="no such run folder"):
        predict.load_model(tmp_path / "missing")
    with pytest.raises(ModelError, match=r"no model\.npz"):
        predict.load_model(tmp_path / "runs" / "x")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"garbage, not a zip", "not a readable"),
        (model_bytes(weights())[:100], "not a readable"),
        (b"", "not a readable"),
    ],
)
def test_a_corrupt_model_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "model.npz"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        predict.load_model(path)


def npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({}, "expected arrays W1, b1"),
        ({"W1": np.zeros((1, 48))}, "expected arrays W1, b1"),
        ({"W1": np.zeros((1, 48)), "b1": np.zeros((2, 1))}, "b1 has shape"),
        ({"W1": np.zeros((2, 48)), "b1": np.zeros((2, 1))}, "expected 1"),
        (
            {
                "W1": np.zeros((2, 48)),
                "b1": np.zeros((2, 1)),
                "W2": np.zeros((1, 3)),
                "b2": np.zeros((1, 1)),
            },
            "W2 takes 3 inputs",
        ),
        ({"W1": np.zeros((1, 50)), "b1": np.zeros((1, 1))}, "not S x S RGB"),
        ({"W1": np.zeros((1, 48), dtype=np.int64), "b1": np.zeros((1, 1))}, "float"),
    ],
)
def test_an_inconsistent_model_is_refused(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "m.npz"
    path.write_bytes(npz(**arrays))
    with pytest.raises(ModelError, match=message):
        predict.load_model(path)


def test_a_single_array_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    np.save(path.open("wb"), np.zeros(3))
    with pytest.raises(ModelError, match="single array"):
        predict.load_model(path)


def test_metrics_without_valid_parameters_are_refused(tmp_path: Path) -> None:
    folder = run_folder(tmp_path / "run")
    (folder / "metrics.json").write_text('{"parameters": {"epochs": 1}}')
    with pytest.raises(ModelError, match="parameters"):
        predict.load_model(folder)
    (folder / "metrics.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot be read"):
        predict.load_model(folder)
    three = params(("relu", "relu", "sigmoid"))
    (folder / "metrics.json").write_text(json.dumps({"parameters": three.to_dict()}))
    with pytest.raises(ModelError, match="2 layers of weights but 3 activations"):
        predict.load_model(folder)


def test_a_member_without_the_npy_suffix_is_one_line_in_every_command(
    tmp_path: Path, synthetic_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = run_folder(tmp_path / "run")
    with zipfile.ZipFile(folder / "model.npz", "w") as archive:
        archive.writestr("W1", b"x")  # no .npy suffix
    picture = tmp_path / "a.png"
    picture.write_bytes(png(pixels()))
    for argv in (
        ["predict", "--model", str(folder), str(picture)],
        ["evaluate", "--model", str(folder), "--data", str(synthetic_dir)],
        ["inspect", str(folder), "--data", str(synthetic_dir)],
    ):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.strip() == (
            f"snn: error: {folder / 'model.npz'}: member 'W1' is not a .npy array"
        )
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "model.npz"]


def test_predict_refuses_a_diverged_model_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = run_folder(tmp_path / "run")
    arrays = model_arrays(weights())
    arrays["W1"][:] = np.nan
    (folder / "model.npz").write_bytes(npz(**arrays))
    picture = tmp_path / "a.png"
    picture.write_bytes(png(pixels()))
    assert main(["predict", "--json", "--model", str(folder), str(picture)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"snn: error: {folder / 'model.npz'}: W1 holds NaN")
    assert len(captured.err.strip().splitlines()) == 1


# --- the command ----------------------------------------------------------------------------------


def test_predict_prints_a_label_and_probability_per_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = run_folder(tmp_path / "run")
    files = []
    for seed in range(3):
        path = tmp_path / f"pic{seed}.png"
        path.write_bytes(png(pixels(seed)))
        files.append(path)
    assert main(["predict", "--model", str(folder), *map(str, files), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    X = np.column_stack([preprocess(pixels(seed)[None])[:, 0] for seed in range(3)])
    expected = nn.forward(weights(), ("tanh", "sigmoid"), X)[0]
    assert [r["file"] for r in got] == list(map(str, files))
    for r, p in zip(got, expected, strict=True):
        assert r["probability"] == pytest.approx(p, abs=1e-12)
        assert r["label"] == ("cat" if p > 0.5 else "non-cat")

    assert main(["predict", "--model", str(folder), str(files[0])]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(files[0])) and "P(cat) =" in line


def test_bad_files_are_reported_and_the_others_still_classified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = run_folder(tmp_path / "run")
    good = tmp_path / "good.png"
    good.write_bytes(png(pixels()))
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(png(pixels(size=64))[:300])
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_claiming(50_000, 50_000))
    files = [text, good, tmp_path / "missing.png", truncated, bomb]
    code = main(["predict", "--model", str(folder), "--json", *map(str, files)])
    captured = capsys.readouterr()
    assert code == 1
    assert [r["file"] for r in json.loads(captured.out)] == [str(good)]
    errors = captured.err.strip().splitlines()
    assert len(errors) == 4 and "Traceback" not in captured.err
    for path, line in zip([text, tmp_path / "missing.png", truncated, bomb], errors, strict=True):
        assert line.startswith(f"snn: error: {path}: ")


def test_no_model_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no runs/ here
    pic = tmp_path / "a.png"
    pic.write_bytes(png(pixels()))
    assert main(["predict", str(pic)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("snn: error: no model") and len(err.strip().splitlines()) == 1
    (tmp_path / "runs" / "r").mkdir(parents=True)
    assert main(["predict", "--model", "runs/r", str(pic)]) == 2
    assert "no model.npz" in capsys.readouterr().err
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 broken")
    assert main(["predict", "--model", "broken.npz", str(pic)]) == 2
    assert "not a readable .npz model" in capsys.readouterr().err


def test_the_newest_run_is_used_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run_folder(tmp_path / "runs" / "only")
    pic = tmp_path / "a.png"
    pic.write_bytes(png(pixels()))
    assert main(["predict", "--json", str(pic)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["file"] == str(pic)


# --- on the real data set -------------------------------------------------------------------------


@pytest.mark.slow
def test_predict_agrees_with_the_forward_pass_on_real_pictures(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = Parameters.from_dict(
        {
            "epochs": 60,  # enough, at this rate, to call some pictures cats
            "layers": 2,
            "activations": {"layer1": "relu", "layer2": "sigmoid"},
            "neurons": {"layer1": 7, "layer2": 1},
            "learning_rate": 0.02,
            "initialization": "he",
            "neurons_per_task": 7,
        }
    )
    folder = train_run(tmp_path / "run", p, data_dir, "predict-check")
    paths, images, _ = export_test_pictures(data_dir, tmp_path / "pictures")
    assert main(["predict", "--model", str(folder), "--json", *map(str, paths)]) == 0
    got = json.loads(capsys.readouterr().out)

    weights = predict.read_weights(folder / "model.npz")
    AL = nn.forward(weights, p.activations, preprocess(images))
    labels = ["cat" if y == 1 else "non-cat" for y in nn.predict(AL)[0]]
    assert [r["label"] for r in got] == labels
    np.testing.assert_allclose([r["probability"] for r in got], AL[0], rtol=0, atol=1e-12)
    assert len(set(labels)) == 2, "the model should see both cats and non-cats"
