"""Everything the end of a run checks, checked at its start: a run that would be refused after
all its training (its model over the model reader's size limit, class names the reader refuses,
more steps than a run can count) is refused before it starts, in one line, with nothing written.

The checks are the reader's own (`snn.predict`, `snn.npz`) applied to the model the run plans to
write, computed from its shape without building it.
"""

from __future__ import annotations

import io
import itertools
import json
from typing import Any

import numpy as np

from snn import keys, npz
from snn.data import Dataset
from snn.epoch import batches_per_epoch, training_examples
from snn.errors import DataError, ParametersError
from snn.parameters import Parameters


def _npy_header_bytes(shape: tuple[int, ...], dtype: str) -> int:
    """The bytes of the .npy header `np.save` writes for an array of this shape and dtype."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
    )
    return len(buf.getvalue())


def model_bytes(layer_dims: list[int], info: dict[str, Any]) -> int:
    """What the model.npz of a network of `layer_dims` (n_x, n1, ..., nL) unpacks to: every
    member's .npy, as the model reader adds them up before reading any."""
    total = 0
    for n_prev, n in itertools.pairwise(layer_dims):
        for shape in ((n, n_prev), (n, 1)):
            total += _npy_header_bytes(shape, "<f8") + 8 * n * shape[1]
    text = json.dumps(info, sort_keys=True).encode()
    return total + _npy_header_bytes((len(text),), "|u1") + len(text)


def check_run(p: Parameters, dataset: Dataset) -> None:
    """Refuse a run whose end would fail: a ParametersError or DataError naming why."""
    from snn.predict import ModelError, _model_info, image_size

    examples = training_examples(p, dataset.train_x.shape[1])
    batches = batches_per_epoch(p, examples)
    if p.epochs * batches > keys.MAX_STEP:
        raise ParametersError(
            f"{p.epochs} epochs of {batches} batches is over {keys.MAX_STEP:,} steps"
        )
    info = {"classes": list(dataset.classes), "input": dataset.inputs}
    raw = np.frombuffer(json.dumps(info, sort_keys=True).encode(), dtype=np.uint8)
    try:
        _model_info(raw, "the model of this run")
    except ModelError as exc:
        reason = str(exc).rsplit(" (", 1)[-1].rstrip(")")
        names = ", ".join(repr(c[:40] + ("..." if len(c) > 40 else "")) for c in dataset.classes)
        raise DataError(
            f"the data's class names ({names}) cannot be kept in a model: {reason}; "
            "rename the class folders"
        ) from None
    taken = dataset.inputs
    if taken.get("kind") == "image":  # the reader takes pictures of the side W1 gives
        try:
            side = image_size(dataset.n_x)
        except ModelError as exc:
            raise DataError(f"the data's pictures: {exc}") from None
        if taken.get("size") != side:
            raise DataError(
                f"the data says {taken.get('size')!r}-pixel pictures, its examples hold "
                f"{side} x {side}"
            )
    size = model_bytes(p.layer_dims(dataset.n_x), info)
    if size > npz.MAX_NPZ_BYTES:
        dims = "-".join(str(n) for n in p.layer_dims(dataset.n_x))
        raise ParametersError(
            f"a {dims} network's model.npz would take {size:,} bytes, over the limit of "
            f"{npz.MAX_NPZ_BYTES:,} that a model may unpack to: fewer or smaller layers"
        )
