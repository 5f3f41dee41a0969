"""Model files read as anyone could have written them: snn.predict.read_weights (through
snn.npz) checks every member's name, dtype, shape and declared size before any array is read,
refuses a zip bomb unread, and refuses weights that are not finite float64."""

from __future__ import annotations

import io
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from snn import predict
from snn.own_data import info_array
from snn.predict import ModelError
from snn.report import model_arrays, model_bytes

SIZE = 4  # a model for 4 x 4 RGB pictures


def weights(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(0, 0.5, (3, SIZE * SIZE * 3)), rng.normal(0, 0.1, (3, 1))),
        (rng.normal(0, 1, (1, 3)), np.zeros((1, 1))),
    ]


def npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def zipped(members: dict[str, bytes], deflate: bool = False) -> bytes:
    """An .npz written by hand: each member's bytes as given."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def model_members(seed: int = 0) -> dict[str, bytes]:
    (W1, b1), (W2, b2) = weights(seed)
    return {"W1.npy": npy(W1), "b1.npy": npy(b1), "W2.npy": npy(W2), "b2.npy": npy(b2)}


@pytest.fixture
def unpacked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the bytes unpacked from any zip member while the test runs."""
    counts: list[int] = []
    read = zipfile.ZipExtFile.read

    def counting(self: zipfile.ZipExtFile, n: int = -1) -> bytes:
        data = read(self, n)
        counts.append(len(data))
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", counting)
    return counts


@pytest.mark.parametrize(("key", "value"), [("W2", np.nan), ("b1", np.inf), ("W1", -np.inf)])
def test_a_model_with_non_finite_weights_is_refused_naming_the_array(
    tmp_path: Path, key: str, value: float
) -> None:
    arrays = model_arrays(weights())
    arrays[key].flat[0] = value
    path = tmp_path / "model.npz"
    path.write_bytes(npz(**arrays))
    with pytest.raises(ModelError, match=rf"^{path}: {key} holds NaN or infinite values"):
        predict.read_weights(path, str(path))
    # As the Predict function reads a model: the object's bytes, named by its key.
    key_name = "runs/diverged/model.npz"
    with pytest.raises(ModelError, match=rf"^{key_name}: {key} holds NaN or infinite values"):
        predict.read_weights(model_bytes(_pairs(arrays)), key_name)


def _pairs(arrays: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(arrays[f"W{i}"], arrays[f"b{i}"]) for i in range(1, len(arrays) // 2 + 1)]


def test_float32_weights_are_refused(tmp_path: Path) -> None:
    arrays = model_arrays(weights())
    arrays["W2"] = arrays["W2"].astype(np.float32)
    with pytest.raises(ModelError, match="W2 is float32; only float64 weights are accepted"):
        predict.read_weights(npz(**arrays), "m.npz")


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"W1": b"x"}, "member 'W1' is not a .npy array"),
        ({**model_members(), "notes.txt": b"hi"}, "member 'notes.txt' is not a .npy array"),
        ({**model_members(), "W0.npy": npy(np.zeros((1, 1)))}, "unexpected member 'W0.npy'"),
        ({**model_members(), "extra.npy": npy(np.zeros(1))}, "unexpected member 'extra.npy'"),
        ({**model_members(), "../W3.npy": npy(np.zeros(1))}, "unexpected member '../W3.npy'"),
        ({"W1.npy": b"not an npy header"}, "W1.npy is not a readable .npy array"),
        ({"W1.npy": npy(np.array(["a"], dtype=object))}, "holds object, not numbers"),
        ({"W1.npy": npy(np.array(["text"]))}, "holds <U4, not numbers"),
        ({"W1.npy": npy(np.zeros((1, 48), dtype=">f8"))}, "not in this machine's byte order"),
    ],
)
def test_odd_members_are_one_line(members: dict[str, bytes], message: str) -> None:
    with pytest.raises(ModelError, match=f"^m.npz: .*{re.escape(message)}"):
        predict.read_weights(zipped(members), "m.npz")


def test_a_zip_bomb_member_is_refused_before_it_is_unpacked(unpacked: list[int]) -> None:
    header = npy(np.zeros((3, SIZE * SIZE * 3)))  # what W1 says it is
    members = model_members()
    members["W1.npy"] = header + bytes(64 * 2**20)  # 64 MB of zeros: about 64 KB deflated
    bomb = zipped(members, deflate=True)
    assert len(bomb) < 200_000
    with pytest.raises(
        ModelError,
        match=r"W1\.npy declares 67,110,144 bytes but a float64 array of shape \(3, 48\) "
        r"takes 1,280: refused unread",
    ):
        predict.read_weights(bomb, "bomb.npz")
    assert sum(unpacked) < 64 * 1024  # the headers only


def test_a_member_larger_than_it_declares_is_never_unpacked_beyond(unpacked: list[int]) -> None:
    members = model_members()
    honest = zipped(members, deflate=True)
    members["W1.npy"] += bytes(8 * 2**20)  # the data goes on, the entry says it does not
    longer = bytearray(zipped(members, deflate=True))
    size = len(model_members()["W1.npy"])
    with zipfile.ZipFile(io.BytesIO(honest)) as z:
        declared = z.getinfo("W1.npy").file_size
    assert declared == size
    # Set the declared uncompressed size of W1.npy (central directory) back to the honest one.
    central = longer.index(b"PK\x01\x02")
    assert longer[central + 46 : central + 52] == b"W1.npy"
    struct.pack_into("<I", longer, central + 24, size)
    with pytest.raises(ModelError, match=r"W1\.npy .*Bad CRC-32"):
        predict.read_weights(bytes(longer), "m.npz")
    assert sum(unpacked) < 2 * size + 64 * 1024


def test_an_archive_beyond_the_limit_is_refused_unread(
    monkeypatch: pytest.MonkeyPatch, unpacked: list[int]
) -> None:
    data = model_bytes(weights())
    monkeypatch.setattr("snn.npz.MAX_NPZ_BYTES", len(data) // 2)
    with pytest.raises(ModelError, match=r"unpacks to [\d,]+ bytes, over the limit"):
        predict.read_weights(data, "m.npz")
    assert unpacked == []


def test_every_header_is_checked_before_any_array_is_read(unpacked: list[int]) -> None:
    members = model_members()
    members["W2.npy"] = npy(np.zeros((1, 4)))  # takes 4 inputs; layer 1 has 3 neurons
    with pytest.raises(ModelError, match="W2 takes 4 inputs but layer 1 has 3 neurons"):
        predict.read_weights(zipped(members), "m.npz")
    assert sum(unpacked) < 4 * 200  # four headers, no data (W1 alone is 1,152 bytes)


def test_the_reader_gives_what_numpy_gives(tmp_path: Path) -> None:
    arrays = model_arrays(weights())
    arrays["W1"] = np.asfortranarray(arrays["W1"])
    for data in (npz(**arrays), zipped({f"{k}.npy": npy(v) for k, v in arrays.items()}, True)):
        got = predict.read_weights(data, "m.npz")
        for layer, (W, b) in enumerate(got, 1):
            assert np.array_equal(W, arrays[f"W{layer}"]) and W.dtype == np.float64
            assert np.array_equal(b, arrays[f"b{layer}"])
            assert W.flags.writeable
    values = {"classes": ["a", "b"], "input": {"kind": "values"}}
    empty_layer = {"W1": np.zeros((1, 0)), "b1": np.zeros((1, 1)), "info": info_array(values)}
    assert predict.read_weights(npz(**empty_layer), "m.npz")[0][0].shape == (1, 0)
    # a model of pictures takes S x S x 3 inputs, the S its info says
    pictures = {"classes": ["a", "b"], "input": {"kind": "image", "size": 3}}
    wrong = {"W1": np.zeros((1, 12)), "b1": np.zeros((1, 1)), "info": info_array(pictures)}
    with pytest.raises(ModelError, match="3-pixel pictures, its weights take 2 x 2"):
        predict.read_weights(npz(**wrong), "m.npz")
