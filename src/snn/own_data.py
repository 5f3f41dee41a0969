"""Your own data, besides the cat/non-cat set: an .npz of arrays, or a folder of pictures.

An .npz holds `train_x` (m, n_x), `train_y` (m,) of 0 and 1, and optionally `test_x`, `test_y`;
without them, a fifth of the examples is held out as the test set by a seeded split (stated in
metrics.json). Values are used as they are (finite numbers).

A folder of pictures holds two class folders (the pictures of each class), or `train/` and
`test/` each holding the same two class folders. Pictures of any size, PNG, JPEG or any format
Pillow reads, are brought to the network's input exactly as `snn predict` brings a picture:
RGB, resized to S x S (parameters.json's "image_size", 64 by default), values / 255. The positive
class (label 1) is the one the user names, by default a folder named "cat". A folder of
pictures becomes one .npz in this form (with an `info` member: the class names and the input),
so a run's data is one content-addressed upload whatever its source.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from snn import network as nn
from snn.data import Dataset, check_data_size
from snn.errors import DataError
from snn.npz import Member, NpzError, read_members, read_npz

MEMBERS = ("train_x", "train_y", "test_x", "test_y", "info")
TEST_FRACTION = 0.2


def read_npz_dataset(source: str | Path | bytes, name: str, seed: int) -> Dataset:
    """A data set from an .npz (a path or its bytes), every member checked before it is read,
    and its size too (`check_npz_members`). Each array becomes float64 once, straight into the
    layout the network reads, so loading takes little more than the float64 data set."""
    try:
        arrays = read_npz(
            source,
            name,
            lambda key: key in MEMBERS,
            check=lambda members: check_npz_members(members, name),
            what="data set",
        )
    except NpzError as exc:
        raise DataError(str(exc)) from None
    if ("test_x" in arrays) != ("test_y" in arrays):
        raise DataError(f"{name}: test_x and test_y go together")
    info = _info(arrays.get("info"), name)
    train_x, train_y = arrays.pop("train_x"), arrays.pop("train_y")
    _check_examples(train_x, train_y, "train", name)
    split = None
    if "test_x" in arrays:
        test_x, test_y = arrays.pop("test_x"), arrays.pop("test_y")
        _check_examples(test_x, test_y, "test", name)
        if test_x.shape[1] != train_x.shape[1]:
            raise DataError(
                f"{name}: test_x has {test_x.shape[1]} values per example, train_x "
                f"{train_x.shape[1]}"
            )
        test = (_columns(test_x), _labels(test_y))
        del test_x
        train = (_columns(train_x), _labels(train_y))
    else:
        if train_x.shape[0] < 2:
            raise DataError(f"{name}: with no test set, train_x needs at least 2 examples")
        keep, held = nn.validation_split(train_x.shape[0], TEST_FRACTION, seed)
        test = (_columns(train_x, held), _labels(train_y[held]))
        train = (_columns(train_x, keep), _labels(train_y[keep]))
        split = {"fraction": TEST_FRACTION, "seed": seed, "examples": len(held)}
    del train_x
    classes = tuple(info.get("classes", ("0", "1")))
    inputs = info.get("input", {"kind": "values"})
    return Dataset(
        train_x=train[0],
        train_y=train[1],
        test_x=test[0],
        test_y=test[1],
        classes=classes,
        inputs=inputs,
        test_split=split,
    )


def check_npz_members(members: dict[str, Member], name: str) -> None:
    """What the headers of an .npz data set tell before any array is read: train_x and
    train_y are there, and the examples fit the size limit once they are float64."""
    for key in ("train_x", "train_y"):
        if key not in members:
            raise DataError(f"{name}: no {key} (an .npz data set needs train_x and train_y)")
    values = sum(math.prod(m.shape) for key, m in members.items() if key != "info")
    check_data_size(name, values * 8)


def check_npz_file(path: Path) -> None:
    """An .npz data file's zip structure and headers, checked before it is read whole: a file
    that is not one is refused having read its last few KB only."""
    try:
        members = read_members(path, str(path), lambda key: key in MEMBERS, what="data set")
    except NpzError as exc:
        raise DataError(str(exc)) from None
    check_npz_members(members, str(path))


# Rows of examples converted at a time: the temporaries of a conversion stay a few MB.
_BLOCK_VALUES = 1 << 20


def _check_examples(x: np.ndarray, y: np.ndarray, split: str, name: str) -> None:
    """Rows of examples (m, n_x) of finite numbers and their 0/1 labels (m,)."""
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise DataError(f"{name}: {split}_x must be (examples, values), got shape {x.shape}")
    if y.shape != (x.shape[0],):
        raise DataError(f"{name}: {split}_y must be ({x.shape[0]},), got shape {y.shape}")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{name}: {split}_x must hold finite numbers")
    if x.dtype.kind == "f":  # whole numbers are always finite
        rows = max(1, _BLOCK_VALUES // x.shape[1])
        for i in range(0, x.shape[0], rows):
            if not np.isfinite(x[i : i + rows]).all():
                raise DataError(f"{name}: {split}_x must hold finite numbers")
    if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
        raise DataError(f"{name}: {split}_y must hold labels 0 and 1 only")


def _columns(x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """The examples `rows` of x (all of them by default) as the columns of one C-contiguous
    float64 array (n_x, m), converted a block of rows at a time: no whole temporary copy."""
    count = x.shape[0] if rows is None else len(rows)
    out = np.empty((x.shape[1], count), dtype=np.float64)
    step = max(1, _BLOCK_VALUES // x.shape[1])
    for i in range(0, count, step):
        out[:, i : i + step] = (x[i : i + step] if rows is None else x[rows[i : i + step]]).T
    return out


def _labels(y: np.ndarray) -> np.ndarray:
    return y.astype(np.float64).reshape(1, -1)


def _info(raw: np.ndarray | None, name: str) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        info = json.loads(raw.astype(np.uint8).tobytes().decode("utf-8"))
        classes = info["classes"]
        if not (
            isinstance(classes, list)
            and len(classes) == 2
            and all(isinstance(c, str) for c in classes)
        ):
            raise ValueError("classes must be two names")
        return info
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise DataError(f"{name}: its info member is not readable ({exc})") from None


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz whose bytes depend only on the arrays (so its upload key does too)."""
    from snn.report import npz_bytes as deterministic

    return deterministic(arrays)


def info_array(info: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(json.dumps(info, sort_keys=True).encode(), dtype=np.uint8)


# --- a folder of pictures ----------------------------------------------------------------------


def is_pictures_folder(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_dir() for p in folder.iterdir())


def pictures_npz(folder: Path, size: int, positive: str | None, seed: int) -> bytes:
    """The .npz of a folder of pictures (see the module's docstring)."""
    from snn.predict import ImageError, load_image

    splits = _layout(folder)
    names = sorted(next(iter(splits.values())))
    if positive is None:
        if "cat" not in names:
            raise DataError(
                f"{folder}: name the positive class with --positive ({' or '.join(names)})"
            )
        positive = "cat"
    if positive not in names:
        raise DataError(
            f"{folder}: no class folder {positive!r} (the classes are {', '.join(names)})"
        )
    classes = [n for n in names if n != positive] + [positive]
    arrays: dict[str, np.ndarray] = {}
    for split, by_class in splits.items():
        rows, labels = [], []
        for label, name in enumerate(classes):
            for path in by_class[name]:
                try:
                    rows.append(load_image(path, size))
                except ImageError as exc:
                    raise DataError(str(exc)) from None
                labels.append(label)
        if not rows:
            raise DataError(f"{folder}: no pictures for the {split} set")
        arrays[f"{split}_x"] = np.stack(rows)
        arrays[f"{split}_y"] = np.array(labels, dtype=np.int64)
    arrays["info"] = info_array({"classes": classes, "input": {"kind": "image", "size": size}})
    return npz_bytes(arrays)


def _layout(folder: Path) -> dict[str, dict[str, list[Path]]]:
    """{split: {class: [picture files]}}: split "train" (and "test" if the folder has both)."""
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        layout = {split: _classes(folder / split) for split in ("train", "test")}
        if sorted(layout["train"]) != sorted(layout["test"]):
            raise DataError(f"{folder}: train/ and test/ must hold the same two class folders")
        return layout
    return {"train": _classes(folder)}


def _classes(folder: Path) -> dict[str, list[Path]]:
    found = {
        p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")
    }
    if len(found) != 2:
        raise DataError(
            f"{folder}: expected two class folders (the pictures of each class), found "
            f"{len(found)}: {', '.join(found) or 'none'}"
        )
    out = {}
    for name, path in found.items():
        # hidden files and everything inside hidden folders (`.thumbs/`, `.git/`) are skipped
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        out[name] = files
    return out
