"""Tests for snn.data: preprocessing, validation of the HDF5 files, download and cache."""

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest

from snn import data
from snn.data import TEST_FILE, TRAIN_FILE
from snn.errors import DataError

# --- helpers -----------------------------------------------------------------------------


def _images(m: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(m, 64, 64, 3), dtype=np.uint8)


def _write_h5(path: Path, **items: np.ndarray) -> None:
    with h5py.File(path, "w") as h5:
        for key, value in items.items():
            h5.create_dataset(key, data=value)


CLASSES = np.array([b"non-cat", b"cat"])


def _write_pair(folder: Path, m_train: int = 4, m_test: int = 2) -> Path:
    """A small valid data set: the real layout with fewer images."""
    folder.mkdir(parents=True, exist_ok=True)
    _write_h5(
        folder / TRAIN_FILE,
        train_set_x=_images(m_train, 1),
        train_set_y=np.arange(m_train) % 2,
        list_classes=CLASSES,
    )
    _write_h5(
        folder / TEST_FILE,
        test_set_x=_images(m_test, 2),
        test_set_y=np.arange(m_test) % 2,
        list_classes=CLASSES,
    )
    return folder


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- preprocess and synthetic data ---------------------------------------------------------


def test_preprocess_matches_reference_formula_and_layout() -> None:
    images = _images(5)
    out = data.preprocess(images)
    assert out.shape == (12288, 5)
    assert out.dtype == np.float64
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, images.reshape(5, -1).T / 255.0)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_synthetic_dataset_is_deterministic_and_well_formed() -> None:
    a = data.synthetic_dataset(n_x=7, m_train=30, m_test=10, seed=3)
    b = data.synthetic_dataset(n_x=7, m_train=30, m_test=10, seed=3)
    c = data.synthetic_dataset(n_x=7, m_train=30, m_test=10, seed=4)
    assert a.n_x == 7
    assert a.train_x.shape == (7, 30) and a.test_x.shape == (7, 10)
    assert a.train_y.shape == (1, 30) and a.test_y.shape == (1, 10)
    assert a.classes == ("non-cat", "cat")
    for arr in (a.train_x, a.train_y, a.test_x, a.test_y):
        assert arr.dtype == np.float64 and arr.flags.c_contiguous
    assert a.train_x.min() >= 0.0 and a.train_x.max() <= 1.0
    assert set(np.unique(a.train_y)) == {0.0, 1.0}
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes()
    assert a.train_x.tobytes() != c.train_x.tobytes()


def test_synthetic_dataset_is_learnable() -> None:
    """A nearest-class-mean rule fitted on train must do well on test."""
    ds = data.synthetic_dataset(m_train=64, m_test=64)
    y = ds.train_y[0].astype(bool)
    mean1, mean0 = ds.train_x[:, y].mean(axis=1), ds.train_x[:, ~y].mean(axis=1)
    d1 = ((ds.test_x - mean1[:, None]) ** 2).sum(axis=0)
    d0 = ((ds.test_x - mean0[:, None]) ** 2).sum(axis=0)
    accuracy = ((d1 < d0) == ds.test_y[0].astype(bool)).mean()
    assert accuracy >= 0.9


# --- the real data set ---------------------------------------------------------------------


@pytest.fixture
def real_data_dir() -> Path:
    value = os.environ.get("SNN_DATA_DIR")
    if not value:
        pytest.skip("SNN_DATA_DIR is not set: no copy of the real cat/non-cat data set")
    return Path(value)


def test_real_files_match_published_checksums(real_data_dir: Path) -> None:
    for name, expected in data.SHA256.items():
        assert _digest(real_data_dir / name) == expected


def test_load_real_dataset(real_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNN_DATA_DIR", str(real_data_dir))
    ds = data.load_dataset()
    assert ds.train_x.shape == (12288, 209)
    assert ds.test_x.shape == (12288, 50)
    assert ds.train_y.shape == (1, 209)
    assert ds.test_y.shape == (1, 50)
    assert ds.n_x == 12288
    assert ds.classes == ("non-cat", "cat")
    for arr in (ds.train_x, ds.train_y, ds.test_x, ds.test_y):
        assert arr.dtype == np.float64 and arr.flags.c_contiguous
    assert set(np.unique(ds.train_y)) == {0.0, 1.0}
    assert set(np.unique(ds.test_y)) <= {0.0, 1.0}
    with h5py.File(real_data_dir / TRAIN_FILE, "r") as h5:
        raw = h5["train_set_x"][()]
    np.testing.assert_array_equal(ds.train_x, raw.reshape(209, -1).T / 255.0)


# --- validation errors ---------------------------------------------------------------------


def test_read_valid_pair(tmp_path: Path) -> None:
    ds = data.read_h5_pair(_write_pair(tmp_path, m_train=4, m_test=2))
    assert ds.train_x.shape == (12288, 4) and ds.test_x.shape == (12288, 2)
    np.testing.assert_array_equal(ds.train_y, [[0.0, 1.0, 0.0, 1.0]])
    assert ds.classes == ("non-cat", "cat")


@pytest.mark.parametrize("size", [1, 3, 8])
def test_read_pair_of_any_square_size(tmp_path: Path, size: int) -> None:
    rng = np.random.default_rng(size)
    train = rng.integers(0, 256, size=(5, size, size, 3), dtype=np.uint8)
    test = rng.integers(0, 256, size=(3, size, size, 3), dtype=np.uint8)
    data.write_h5_pair(tmp_path, train, [0, 1, 1, 0, 1], test, [1, 0, 0])
    ds = data.read_h5_pair(tmp_path)
    assert ds.n_x == size * size * 3
    assert ds.train_x.shape == (size * size * 3, 5) and ds.test_x.shape == (size * size * 3, 3)
    np.testing.assert_array_equal(ds.train_x, train.reshape(5, -1).T / 255.0)
    np.testing.assert_array_equal(ds.test_y, [[1.0, 0.0, 0.0]])


def test_test_file_of_another_size_is_rejected(tmp_path: Path) -> None:
    _write_pair(tmp_path)
    _write_h5(
        tmp_path / TEST_FILE,
        test_set_x=np.zeros((2, 8, 8, 3), np.uint8),
        test_set_y=np.array([0, 1]),
        list_classes=CLASSES,
    )
    with pytest.raises(DataError, match=r"64 x 64 x 3 but images in test_catvnoncat\.h5 are 8 x 8"):
        data.read_h5_pair(tmp_path)


def test_write_h5_pair_uses_the_real_layout(tmp_path: Path) -> None:
    real = {
        TRAIN_FILE: {"list_classes", "train_set_x", "train_set_y"},
        TEST_FILE: {"list_classes", "test_set_x", "test_set_y"},
    }
    train_x, train_y, test_x, test_y = data.synthetic_images(size=5, m_train=6, m_test=4)
    assert data.write_h5_pair(tmp_path / "d", train_x, train_y, test_x, test_y) == tmp_path / "d"
    for name, split, x, y in (
        (TRAIN_FILE, "train", train_x, train_y),
        (TEST_FILE, "test", test_x, test_y),
    ):
        with h5py.File(tmp_path / "d" / name, "r") as h5:
            assert set(h5) == real[name]
            assert h5[f"{split}_set_x"].dtype == np.uint8
            assert h5[f"{split}_set_x"].shape == x.shape
            assert h5[f"{split}_set_y"].shape == (len(y),)
            np.testing.assert_array_equal(h5[f"{split}_set_x"][()], x)
            np.testing.assert_array_equal(h5[f"{split}_set_y"][()], y)
            assert list(h5["list_classes"][()]) == [b"non-cat", b"cat"]
    assert data.read_h5_pair(tmp_path / "d").classes == ("non-cat", "cat")


@pytest.mark.parametrize(
    ("images", "labels"),
    [
        (np.zeros((2, 4, 4, 3), np.float64), [0, 1]),
        (np.zeros((2, 4, 4), np.uint8), [0, 1]),
        (np.zeros((2, 4, 4, 3), np.uint8), [0, 1, 1]),
        (np.zeros((2, 4, 4, 3), np.uint8), [0, 2]),
    ],
    ids=["float-images", "three-d", "label-count", "label-2"],
)
def test_write_h5_pair_rejects_what_read_would_reject(
    tmp_path: Path, images: np.ndarray, labels: list[int]
) -> None:
    good = np.zeros((1, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="train"):
        data.write_h5_pair(tmp_path, images, labels, good, [0])
    assert not (tmp_path / TRAIN_FILE).exists()


def test_synthetic_images_are_deterministic_and_well_formed() -> None:
    a = data.synthetic_images(size=4, m_train=40, m_test=12, seed=0)
    b = data.synthetic_images()
    c = data.synthetic_images(seed=1)
    shapes = [(40, 4, 4, 3), (40,), (12, 4, 4, 3), (12,)]
    assert [x.shape for x in a] == shapes
    assert [x.dtype for x in a] == [np.uint8, np.int64, np.uint8, np.int64]
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True))
    assert a[0].tobytes() != c[0].tobytes()
    labels = np.concatenate([a[1], a[3]])
    assert set(np.unique(labels)) == {0, 1} and labels.sum() == len(labels) // 2


def test_synthetic_images_are_learnable() -> None:
    """A nearest-class-mean rule fitted on the train images must classify the test images."""
    train_x, train_y, test_x, test_y = data.synthetic_images(size=4, m_train=40, m_test=40)
    flat = train_x.reshape(len(train_x), -1).astype(np.float64)
    mean1, mean0 = flat[train_y == 1].mean(axis=0), flat[train_y == 0].mean(axis=0)
    t = test_x.reshape(len(test_x), -1).astype(np.float64)
    predicted = ((t - mean1) ** 2).sum(axis=1) < ((t - mean0) ** 2).sum(axis=1)
    assert (predicted == test_y.astype(bool)).mean() >= 0.95


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as info:
        data.read_h5_pair(tmp_path / "nowhere")
    assert "SNN_DATA_DIR" in str(info.value)


def test_missing_file_names_file_and_remedy(tmp_path: Path) -> None:
    _write_pair(tmp_path)
    (tmp_path / TEST_FILE).unlink()
    with pytest.raises(DataError) as info:
        data.read_h5_pair(tmp_path)
    message = str(info.value)
    assert TEST_FILE in message and "--data DIR" in message and "SNN_DATA_DIR" in message


def test_not_an_hdf5_file(tmp_path: Path) -> None:
    _write_pair(tmp_path)
    (tmp_path / TRAIN_FILE).write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="not an HDF5 file") as info:
        data.read_h5_pair(tmp_path)
    assert TRAIN_FILE in str(info.value)


def _rewrite_train(folder: Path, **overrides: np.ndarray | None) -> None:
    """Replace the train file with the valid one modified by overrides (None drops a key)."""
    items: dict[str, np.ndarray | None] = {
        "train_set_x": _images(4),
        "train_set_y": np.array([0, 1, 0, 1]),
        "list_classes": CLASSES,
    }
    items.update(overrides)
    _write_h5(folder / TRAIN_FILE, **{k: v for k, v in items.items() if v is not None})


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"train_set_y": None}, ["train_set_y", TRAIN_FILE]),
        ({"train_set_x": None}, ["train_set_x", TRAIN_FILE]),
        ({"list_classes": None}, ["list_classes", TRAIN_FILE]),
        (
            {"train_set_x": np.zeros((4, 32, 32, 3), np.uint8)},
            ["32 x 32 x 3", "64 x 64 x 3", TRAIN_FILE, TEST_FILE, "one size"],
        ),
        ({"train_set_x": np.zeros((4, 12288), np.uint8)}, ["(4, 12288)", "(m, S, S, 3)"]),
        ({"train_set_x": np.zeros((4, 64, 64), np.uint8)}, ["(4, 64, 64)", "(m, S, S, 3)"]),
        ({"train_set_x": np.zeros((4, 64, 64, 4), np.uint8)}, ["(4, 64, 64, 4)", "(m, S, S, 3)"]),
        ({"train_set_x": np.zeros((4, 64, 32, 3), np.uint8)}, ["(4, 64, 32, 3)", "(m, S, S, 3)"]),
        ({"train_set_x": np.zeros((4, 0, 0, 3), np.uint8)}, ["(4, 0, 0, 3)", "(m, S, S, 3)"]),
        ({"train_set_x": _images(4).astype(np.float32)}, ["float32", "uint8"]),
        ({"train_set_y": np.array([0, 1, 2, 1])}, ["outside {0, 1}", "train_set_y"]),
        ({"train_set_y": np.array([0.0, 0.5, 1.0, 1.0])}, ["outside {0, 1}"]),
        ({"train_set_y": np.array([0, 1, 0])}, ["4 images", "3 labels"]),
        ({"train_set_y": np.array([[0, 1, 0, 1]])}, ["(1, 4)", "train_set_y"]),
    ],
    ids=[
        "missing-y",
        "missing-x",
        "missing-classes",
        "train-test-size-mismatch",
        "flat-images",
        "three-d-images",
        "four-channels",
        "not-square",
        "zero-size",
        "wrong-dtype",
        "label-2",
        "label-half",
        "count-mismatch",
        "labels-2d",
    ],
)
def test_bad_train_file(
    tmp_path: Path, overrides: dict[str, np.ndarray | None], expected: list[str]
) -> None:
    _write_pair(tmp_path)
    _rewrite_train(tmp_path, **overrides)
    with pytest.raises(DataError) as info:
        data.read_h5_pair(tmp_path)
    for fragment in expected:
        assert fragment in str(info.value)


def test_bad_test_file_is_named(tmp_path: Path) -> None:
    _write_pair(tmp_path)
    _write_h5(tmp_path / TEST_FILE, test_set_x=_images(2), list_classes=CLASSES)
    with pytest.raises(DataError) as info:
        data.read_h5_pair(tmp_path)
    assert "test_set_y" in str(info.value) and TEST_FILE in str(info.value)


# --- h5 files that point elsewhere ----------------------------------------------------------


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the h5 data sets whose data is read while the test runs."""
    names: list[str] = []
    getitem, read_direct = h5py.Dataset.__getitem__, h5py.Dataset.read_direct

    def recording_getitem(self: h5py.Dataset, args: object, *rest: object) -> object:
        names.append(self.name)
        return getitem(self, args, *rest)

    def recording_read_direct(self: h5py.Dataset, *args: object, **kwargs: object) -> None:
        names.append(self.name)
        read_direct(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", recording_getitem)
    monkeypatch.setattr(h5py.Dataset, "read_direct", recording_read_direct)
    return names


def _elsewhere(folder: Path, key: str, kind: str, value: np.ndarray) -> Path:
    """The train file with `key` stored elsewhere, as `kind` says; returns the other file."""
    items = {"train_set_x": _images(4), "train_set_y": np.array([0, 1, 0, 1])}
    items["list_classes"] = CLASSES
    other = folder / "elsewhere.bin"
    with h5py.File(folder / TRAIN_FILE, "w") as h5:
        for k, v in items.items():
            if k != key:
                h5.create_dataset(k, data=v)
        if kind == "external":
            other.write_bytes(value.tobytes())  # what the loader would copy: any local file
            h5.create_dataset(
                key, shape=value.shape, dtype=value.dtype, external=[(str(other), 0, value.nbytes)]
            )
        elif kind == "virtual":
            other = folder / "source.h5"
            _write_h5(other, data=value)
            layout = h5py.VirtualLayout(shape=value.shape, dtype=value.dtype)
            layout[...] = h5py.VirtualSource(str(other), "data", shape=value.shape)
            h5.create_virtual_dataset(key, layout)
        elif kind == "external link":
            other = folder / "linked.h5"
            _write_h5(other, data=value)
            h5[key] = h5py.ExternalLink(str(other), "/data")
        else:
            h5.create_dataset("hidden", data=value)
            h5[key] = h5py.SoftLink("/hidden")
    return other


def test_an_external_dataset_is_refused_and_its_file_never_read(
    tmp_path: Path, reads: list[str]
) -> None:
    _write_pair(tmp_path)
    secret = _images(4, seed=9)
    other = _elsewhere(tmp_path, "train_set_x", "external", secret)
    path = tmp_path / TRAIN_FILE
    with pytest.raises(DataError) as info:
        data.images_from_h5(path, "train")
    assert str(info.value) == (
        f"'train_set_x' in {path} keeps its data in external files; the data must be in the file"
    )
    assert reads == []  # refused before any data set was read
    # The same file read by h5py directly shows what the loader would have copied.
    with h5py.File(path, "r") as h5:
        assert np.array_equal(h5["train_set_x"][()], secret)
    assert other.read_bytes() == secret.tobytes()


@pytest.mark.parametrize("kind", ["external", "virtual", "external link", "soft link"])
@pytest.mark.parametrize("key", ["train_set_x", "train_set_y", "list_classes"])
def test_data_kept_outside_the_file_is_refused_before_any_read(
    tmp_path: Path, reads: list[str], kind: str, key: str
) -> None:
    _write_pair(tmp_path)
    value = {"train_set_x": _images(4, 9), "train_set_y": np.array([1, 1, 1, 1])}.get(
        key, np.array([7, 7], dtype=np.int64)
    )
    _elsewhere(tmp_path, key, kind, value)
    described = {
        "external": "keeps its data in external files",
        "virtual": "is a virtual data set",
        "external link": "is an external link",
        "soft link": "is a soft link",
    }[kind]
    with pytest.raises(DataError, match=f"^'{key}' in {tmp_path / TRAIN_FILE} {described}"):
        data.read_h5_pair(tmp_path)
    assert not any(name.lstrip("/") == key for name in reads)
    if key != "list_classes":
        assert reads == []  # neither images nor labels were read


def _declare_huge(path: Path, split: str, m: int) -> None:
    """An h5 file of a few KB that declares m pictures of 64 x 64 (none of them written)."""
    with h5py.File(path, "w") as h5:
        h5.create_dataset(f"{split}_set_x", shape=(m, 64, 64, 3), dtype=np.uint8, chunks=True)
        h5.create_dataset(f"{split}_set_y", shape=(m,), dtype=np.int64, chunks=True)
        h5.create_dataset("list_classes", data=CLASSES)


@pytest.mark.parametrize("which", [TRAIN_FILE, TEST_FILE])
def test_a_small_file_declaring_a_huge_data_set_is_refused_unread(
    tmp_path: Path, reads: list[str], which: str
) -> None:
    """Reading it would ask for 114 GiB; the declared shape is checked against the limit."""
    _write_pair(tmp_path)
    _declare_huge(tmp_path / which, "train" if which == TRAIN_FILE else "test", 10**7)
    assert (tmp_path / which).stat().st_size < 1 << 20
    with pytest.raises(DataError, match="over the limit of 536,870,912: refused unread"):
        data.read_h5_pair(tmp_path)
    assert reads == []


def test_the_size_limit_counts_both_files(tmp_path: Path, reads: list[str]) -> None:
    """Each file alone is within the limit, both together are not."""
    per_file = data.MAX_DATA_BYTES // (64 * 64 * 3 * 8 + 8) // 2 + 1
    _write_pair(tmp_path)
    _declare_huge(tmp_path / TRAIN_FILE, "train", per_file)
    _declare_huge(tmp_path / TEST_FILE, "test", per_file)
    with pytest.raises(DataError, match=f"^{tmp_path}: its examples take .* refused unread"):
        data.read_h5_pair(tmp_path)
    assert reads == []


# --- locating the data ---------------------------------------------------------------------


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SNN_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "snn"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.cache_dir() == tmp_path / "xdg" / "snn"
    monkeypatch.setenv("SNN_CACHE_DIR", str(tmp_path / "explicit"))
    assert data.cache_dir() == tmp_path / "explicit"


def test_resolve_prefers_argument_then_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNN_DATA_DIR", str(tmp_path / "env"))
    assert data.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data.resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    assert data.resolve_data_dir(None) == tmp_path / "env"


# --- download ------------------------------------------------------------------------------


class _Server:
    """A local HTTP server over a folder; `mode` selects how it misbehaves."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mode = "ok"
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                path = server.root / self.path.lstrip("/")
                if server.mode == "drop":
                    self.close_connection = True
                    return  # no status line at all
                if server.mode == "stall":
                    time.sleep(0.5)
                if not path.is_file():
                    self.send_error(404)
                    return
                body = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.mode == "truncate":
                    body = body[: len(body) // 2]
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    """Serves small valid files at <url>/<name>, with SHA256 patched to their digests."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    files = _write_pair(tmp_path / "served" / "files")
    for name in (TRAIN_FILE, TEST_FILE):
        monkeypatch.setitem(data.SHA256, name, _digest(files / name))
    srv = _Server(tmp_path / "served")
    yield srv
    srv.stop()


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


def test_download_good_files(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    assert data.download_dataset(dest, base_url=server.url + "/") == dest
    assert _leftovers(dest) == sorted([TRAIN_FILE, TEST_FILE])
    assert sorted(server.requests) == sorted([f"/files/{TRAIN_FILE}", f"/files/{TEST_FILE}"])
    ds = data.read_h5_pair(dest)
    assert ds.train_x.shape == (12288, 4)


def test_download_uses_env_url(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SNN_DATA_URL", server.url)
    data.download_dataset(tmp_path / "dest")
    assert len(server.requests) == 2


def test_download_rejects_wrong_checksum(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = "0" * 64
    monkeypatch.setitem(data.SHA256, TRAIN_FILE, expected)
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as info:
        data.download_dataset(dest, base_url=server.url)
    message = str(info.value)
    actual = _digest(server.root / "files" / TRAIN_FILE)
    assert TRAIN_FILE in message and expected in message and actual in message
    assert _leftovers(dest) == []


def _assert_download_failed(dest: Path, info: pytest.ExceptionInfo[DataError], url: str) -> None:
    message = str(info.value)
    assert f"download failed from {url}/{TRAIN_FILE}" in message
    assert "--data DIR" in message and "SNN_DATA_DIR" in message
    assert _leftovers(dest) == []


@pytest.mark.parametrize("mode", ["truncate", "drop"])
def test_download_interrupted(server: _Server, tmp_path: Path, mode: str) -> None:
    server.mode = mode
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as info:
        data.download_dataset(dest, base_url=server.url)
    _assert_download_failed(dest, info, server.url)


def test_download_not_found(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="404") as info:
        data.download_dataset(dest, base_url=server.url + "/missing")
    _assert_download_failed(dest, info, server.url + "/missing")


def test_download_timeout(server: _Server, tmp_path: Path) -> None:
    server.mode = "stall"
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as info:
        data.download_dataset(dest, base_url=server.url, timeout=0.1)
    _assert_download_failed(dest, info, server.url)


def test_download_unreachable_host(tmp_path: Path) -> None:
    # Bind and close a socket to get a port nothing listens on.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as info:
        data.download_dataset(dest, base_url=url)
    _assert_download_failed(dest, info, url)


# --- the cache -----------------------------------------------------------------------------


@pytest.fixture
def cache_env(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("SNN_DATA_DIR", raising=False)
    monkeypatch.setenv("SNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SNN_DATA_URL", server.url)
    return tmp_path / "cache" / "catvnoncat"


def test_cache_downloads_once(server: _Server, cache_env: Path) -> None:
    assert data.resolve_data_dir(None) == cache_env
    assert len(server.requests) == 2
    assert data.resolve_data_dir(None) == cache_env
    assert len(server.requests) == 2
    ds = data.load_dataset()
    assert len(server.requests) == 2
    assert ds.test_x.shape == (12288, 2)


def test_cache_redownloads_corrupt_file(server: _Server, cache_env: Path) -> None:
    data.resolve_data_dir(None)
    good = (cache_env / TEST_FILE).read_bytes()
    (cache_env / TEST_FILE).write_bytes(b"corrupt")
    data.resolve_data_dir(None)
    assert server.requests[2:] == [f"/files/{TEST_FILE}"]
    assert (cache_env / TEST_FILE).read_bytes() == good


def test_cache_download_failure_leaves_nothing(server: _Server, cache_env: Path) -> None:
    server.mode = "truncate"
    with pytest.raises(DataError, match="download failed"):
        data.load_dataset()
    assert _leftovers(cache_env) == []
