"""Using a trained network: read a model, turn any picture into the network's input, classify it.

Pure functions over files, bytes and arrays; the `snn predict` command and the Predict Lambda
function both call them, so a picture gets the same label on this machine and on AWS.

A picture becomes one column of X exactly as the training images did (`snn.data.preprocess`):
RGB, S x S pixels (S from the model: W1 has S * S * 3 columns), values / 255, flattened in
(row, column, channel) order.
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from snn import network as nn
from snn.data import preprocess
from snn.errors import ParametersError, SnnError
from snn.npz import Member, NpzError, read_npz
from snn.parameters import MAX_LAYERS, Parameters

Weights = list[tuple[np.ndarray, np.ndarray]]

# Pictures larger than this are refused before they are decoded: a small file can claim a huge
# size (a decompression bomb) and exhaust memory. 50 megapixels is more than a phone camera
# writes and about 150 MB once decoded as RGB, well within a 1 GB Lambda function.
MAX_PIXELS = 50_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow warns above this and raises above twice this
# Files larger than this are refused unread: a 50-megapixel photo is 10 to 25 MB as a JPEG,
# HEIF or WebP, so this leaves room for PNG and TIFF while bounding what one picture costs in
# memory (`snn serve` holds an upload whole).
MAX_PICTURE_BYTES = 64 * 2**20
# A model's metrics.json is read for its parameters only; a million epochs' costs make about
# 25 MB of it, so a larger one is not a run's.
MAX_METRICS_BYTES = 64 * 2**20

# Downscaling a photo to 64 x 64 throws away most of its pixels. LANCZOS weighs a wide
# neighbourhood of source pixels for each output pixel, so it averages detail away instead of
# aliasing it into noise (as NEAREST does) and keeps edges sharper than BILINEAR or BICUBIC.
RESAMPLE = Image.Resampling.LANCZOS

LABELS = ("non-cat", "cat")  # index = the network's 0/1 prediction

# What Pillow raises for a file that is not a picture, is truncated or corrupt, or is too big.
_IMAGE_FAILURES = (
    OSError,  # includes UnidentifiedImageError and "image file is truncated"
    ValueError,
    EOFError,
    SyntaxError,
    struct.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


class ModelError(SnnError):
    """No usable model: missing, not an .npz of W1, b1, ..., or inconsistent with itself."""


class ImageError(SnnError):
    """One picture cannot be classified (unreadable, not a picture, truncated, too large)."""

    exit_code = 1


# --- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    weights: Weights
    activations: tuple[str, ...]
    path: Path | None = None  # the model.npz it came from
    run_folder: Path | None = None  # the folder with its metrics.json, if any
    classes: tuple[str, ...] = LABELS  # the names of its predictions 0 and 1
    inputs: dict[str, Any] | None = None  # what an example is (None: S x S RGB pictures)
    parameters: Parameters | None = None  # the run's, from its metrics.json (if any)

    @property
    def n_x(self) -> int:
        return int(self.weights[0][0].shape[1])

    @property
    def takes_pictures(self) -> bool:
        return self.inputs is None or self.inputs.get("kind") == "image"

    @property
    def image_size(self) -> int:
        """The side of the square RGB pictures it takes (a ModelError for a model of values)."""
        if not self.takes_pictures:
            raise ModelError(
                f"the model takes {self.n_x} values per example, not pictures (it was trained "
                "on an .npz of numbers)"
            )
        return image_size(self.n_x)


def image_size(n_x: int) -> int:
    """S such that n_x = S * S * 3: the side of the square RGB pictures the model takes."""
    side = math.isqrt(n_x // 3)
    if n_x < 3 or side * side * 3 != n_x:
        raise ModelError(f"the model takes {n_x} inputs, which is not S x S RGB pixels")
    return side


_MODEL_MEMBER = re.compile(r"([Wb])([1-9][0-9]{0,2})")  # W1, b1, ..., W32, b32


def _check_model_members(members: dict[str, Member], name: str) -> None:
    info = members.pop("info", None)
    if info is not None and (info.dtype != np.uint8 or len(info.shape) != 1):
        raise ModelError(f"{name}: its info member must be bytes (uint8), got {info.dtype}")
    layers = len([k for k in members if k.startswith("W")])
    expected = {f"{p}{layer}" for layer in range(1, layers + 1) for p in "Wb"}
    if layers == 0 or set(members) != expected:
        found = ", ".join(sorted(members)) or "nothing"
        raise ModelError(f"{name}: expected arrays W1, b1, ..., WL, bL; found {found}")
    n_prev = None
    for layer in range(1, layers + 1):
        W, b = members[f"W{layer}"], members[f"b{layer}"]
        for key, m in ((f"W{layer}", W), (f"b{layer}", b)):
            if m.dtype != np.float64:
                raise ModelError(f"{name}: {key} is {m.dtype}; only float64 weights are accepted")
        if len(W.shape) != 2:
            raise ModelError(f"{name}: W{layer} must be a 2-d array, got shape {W.shape}")
        if n_prev is not None and W.shape[1] != n_prev:
            raise ModelError(
                f"{name}: W{layer} takes {W.shape[1]} inputs but layer {layer - 1} has "
                f"{n_prev} neurons"
            )
        if b.shape != (W.shape[0], 1):
            raise ModelError(f"{name}: b{layer} has shape {b.shape}, expected ({W.shape[0]}, 1)")
        n_prev = W.shape[0]
    if n_prev != 1:
        raise ModelError(f"{name}: the last layer has {n_prev} neurons, expected 1 (cat or not)")


def read_model(source: str | Path | bytes, name: str = "model") -> tuple[Weights, dict[str, Any]]:
    """The weights [(W1, b1), ..., (WL, bL)] and the info of an .npz model (a path or its bytes):
    the one model reader.

    Names, dtypes (float64 only), shapes (each W takes the previous layer's outputs, each b is a
    column, the last layer is one neuron) and sizes are checked before any array is read, and
    every weight must be finite. The info says what the model takes and the names of its
    classes ({"classes": [...], "input": {"kind": "image", "size": S} | {"kind": "values"}});
    a model without one takes pictures and tells cats from non-cats."""

    def valid(key: str) -> bool:
        match = _MODEL_MEMBER.fullmatch(key)
        return key == "info" or (match is not None and int(match[2]) <= MAX_LAYERS)

    try:
        arrays = read_npz(
            source,
            name,
            valid,
            lambda members: _check_model_members(dict(members), name),
            what="model",
        )
    except NpzError as exc:
        raise ModelError(str(exc)) from None
    info = _model_info(arrays.pop("info", None), name)
    layers = len(arrays) // 2
    for layer in range(1, layers + 1):
        for key in (f"W{layer}", f"b{layer}"):
            if not np.isfinite(arrays[key]).all():
                raise ModelError(
                    f"{name}: {key} holds NaN or infinite values: not a usable model "
                    "(did its run diverge? a lower learning rate may help)"
                )
    n_x = int(arrays["W1"].shape[1])
    taken = info["input"]
    if taken is None or taken.get("kind") == "image":
        try:
            side = image_size(n_x)
        except ModelError as exc:
            raise ModelError(f"{name}: {exc}") from None
        if taken is not None and taken.get("size") != side:
            raise ModelError(
                f"{name}: its info says {taken.get('size')!r}-pixel pictures, "
                f"its weights take {side} x {side}"
            )
    return [(arrays[f"W{layer}"], arrays[f"b{layer}"]) for layer in range(1, layers + 1)], info


def _model_info(raw: np.ndarray | None, name: str) -> dict[str, Any]:
    if raw is None:
        return {"classes": list(LABELS), "input": None}
    try:
        info = json.loads(raw.tobytes().decode("utf-8"))
        classes = info["classes"]
        if not (isinstance(classes, list) and len(classes) == 2):
            raise ValueError("two class names expected")
        if not all(isinstance(c, str) and 0 < len(c) <= 100 for c in classes):
            raise ValueError("class names must be short strings")
        if not isinstance(info.get("input"), dict):
            raise ValueError("input must be an object")
        return {"classes": classes, "input": info["input"]}
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{name}: its info is not readable ({exc})") from None


def read_weights(source: str | Path | bytes, name: str = "model") -> Weights:
    """The weights of an .npz model (see `read_model`)."""
    return read_model(source, name)[0]


def default_activations(layers: int) -> tuple[str, ...]:
    """What a bare model.npz is assumed to use: relu hidden layers, a sigmoid output."""
    return ("relu",) * (layers - 1) + ("sigmoid",)


def parameters_from_metrics(path: Path) -> Parameters:
    """The parameters of a run, from the "parameters" of its metrics.json."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_METRICS_BYTES + 1)
        if len(data) > MAX_METRICS_BYTES:
            raise ModelError(f"{path}: over the limit of {MAX_METRICS_BYTES:,} bytes")
        metrics = json.loads(data.decode("utf-8"))
        return Parameters.from_dict(metrics["parameters"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: cannot be read ({exc})") from None
    except (KeyError, TypeError, ParametersError) as exc:
        raise ModelError(f'{path}: no valid "parameters" ({exc})') from None


def check_model(weights: Weights, activations: tuple[str, ...], name: str = "model") -> None:
    if len(activations) != len(weights):
        raise ModelError(
            f"{name}: {len(weights)} layers of weights but {len(activations)} activations"
        )


def newest_run(runs_dir: Path) -> Path | None:
    """The run folder under runs_dir whose model.npz was written last."""
    if not runs_dir.is_dir():
        return None
    models = [p / "model.npz" for p in runs_dir.iterdir() if (p / "model.npz").is_file()]
    return max(models, key=lambda m: m.stat().st_mtime_ns).parent if models else None


def load_model(where: str | Path | None, runs_dir: str | Path = "runs") -> Model:
    """A run folder, or a model.npz (with the activations of a metrics.json beside it, if any);
    by default the newest run folder under runs_dir that has a model.npz."""
    if where is None:
        found = newest_run(Path(runs_dir))
        if found is None:
            raise ModelError(
                f"no model: {runs_dir}/ holds no run folder with a model.npz; train one with "
                "`snn train` or pass --model RUN_FOLDER_OR_model.npz"
            )
        where = found
    where = Path(where)
    if where.is_dir():
        path = where / "model.npz"
        if not path.is_file():
            raise ModelError(f"{where}: no model.npz in this folder (is it a run folder?)")
    elif where.is_file():
        path = where
    else:
        raise ModelError(f"{where}: no such run folder or model file")
    weights, info = read_model(path, str(path))
    metrics = path.parent / "metrics.json"
    parameters = parameters_from_metrics(metrics) if metrics.is_file() else None
    if parameters is not None:
        activations, folder = parameters.activations, path.parent
    else:
        activations, folder = default_activations(len(weights)), None
    check_model(weights, activations, str(path))
    classes = tuple(info["classes"])
    return Model(weights, activations, path, folder, classes, info["input"], parameters)


# --- pictures ------------------------------------------------------------------------------------


def _rgb(im: Image.Image) -> Image.Image:
    """The picture as RGB; transparent parts are laid on white, as a viewer shows them."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def load_image(source: str | Path | bytes, size: int = 64, name: str | None = None) -> np.ndarray:
    """A picture file (a path or its bytes, any format Pillow reads) as one column of X: shape
    (size * size * 3,), float64 in [0, 1], as `snn.data.preprocess` flattens the training set.

    It is turned upright (EXIF orientation), converted to RGB and resized to size x size with
    RESAMPLE (the whole picture, not a crop, as the data set's pictures are framed). A picture
    already of that size is used pixel for pixel."""
    label = name or ("<bytes>" if isinstance(source, bytes) else str(source))
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        nbytes = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
        if nbytes > MAX_PICTURE_BYTES:
            raise ImageError(
                f"{label}: {nbytes:,} bytes is over the limit of {MAX_PICTURE_BYTES:,} bytes"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as im:
                width, height = im.size
                if width * height > MAX_PIXELS:
                    raise ImageError(
                        f"{label}: {width} x {height} pixels is over the limit of {MAX_PIXELS:,}"
                    )
                im.load()
                picture = _rgb(ImageOps.exif_transpose(im))
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: is a folder, not a picture") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{label}: not a picture Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{label}: refused as a possible decompression bomb ({exc})") from None
    except _IMAGE_FAILURES as exc:
        raise ImageError(f"{label}: cannot be read as a picture ({exc})") from None
    if picture.size != (size, size):
        picture = picture.resize((size, size), RESAMPLE)
    pixels = np.asarray(picture, dtype=np.uint8).reshape(1, size, size, 3)
    return preprocess(pixels)[:, 0]


# --- classifying ---------------------------------------------------------------------------------


def cat_probabilities(weights: Weights, activations: tuple[str, ...], X: np.ndarray) -> np.ndarray:
    """P(cat) for each column of X (n_x, m): the network's forward pass, shape (m,)."""
    return nn.forward(weights, activations, X)[0]


def label_of(probability: float, classes: tuple[str, ...] = LABELS) -> str:
    """The network's decision rule (`network.predict`): the positive class (cat) when its
    probability is > 0.5."""
    return classes[int(nn.predict(np.array([[probability]]))[0, 0])]


def classify(model: Model, pictures: list[np.ndarray]) -> list[dict[str, Any]]:
    """[{"label", "probability"}] for pictures already loaded with `load_image`."""
    if not pictures:
        return []
    probabilities = cat_probabilities(model.weights, model.activations, np.column_stack(pictures))
    return [
        {"label": label_of(float(p), model.classes), "probability": float(p)} for p in probabilities
    ]
