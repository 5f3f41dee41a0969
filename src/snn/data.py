"""The cat/non-cat data set: find or download it, validate it, flatten it for the network.

The data set is two HDF5 files in one folder. The folder comes from, in order: an explicit
argument (the CLI's --data DIR), the SNN_DATA_DIR environment variable, or the user cache,
which is filled by downloading from DEFAULT_URL (or SNN_DATA_URL) and checking SHA256.
"""

import hashlib
import http.client
import math
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from snn.errors import DataError

TRAIN_FILE = "train_catvnoncat.h5"
TEST_FILE = "test_catvnoncat.h5"
SHA256: dict[str, str] = {
    TRAIN_FILE: "fbe56ab67c3ae28d564e3a644189117976d6b31af0a3ce9bb17dbf22908af242",
    TEST_FILE: "6a9d39ce52fa85953c5834695b8534a30ed8cfd54971fb2f080b5a24d002b951",
}
# A public mirror of the course files, pinned to one commit; the sha256 values above guard it.
# Override with SNN_DATA_URL.
DEFAULT_URL = (
    "https://raw.githubusercontent.com/Youngyi/DeepLearning/"
    "dff21304241c5e651d4a6680cba6e23c3990e915/datasets"
)
IMAGE_SHAPE = (64, 64, 3)
# The most a data set's examples and labels may take as float64, the form the network reads
# (and the run stores): 512 MiB, about 5,400 pictures of 64 x 64. Checked against the shapes a
# file declares, before anything is read.
MAX_DATA_BYTES = 512 * 2**20

_HOW_TO_SUPPLY = (
    f"pass --data DIR or set SNN_DATA_DIR to a folder holding {TRAIN_FILE} and {TEST_FILE}"
)
_CHUNK = 1 << 16


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays with == has no single truth value
class Dataset:
    """Flattened images (n_x, m) and labels (1, m), all float64 and C-contiguous."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]  # the names of labels 0 and 1
    # what one example is: {"kind": "image", "size": S} (S x S RGB pictures, flattened as
    # `preprocess` does), or {"kind": "values"} (numbers as given)
    inputs: dict[str, Any] = field(default_factory=lambda: {"kind": "values"})
    test_split: dict[str, Any] | None = None  # how a test set was held out, if it was

    @property
    def n_x(self) -> int:
        """Number of input features (rows of train_x)."""
        return int(self.train_x.shape[0])


def preprocess(images: np.ndarray) -> np.ndarray:
    """(m, S, S, 3) uint8 -> (S * S * 3, m) float64 scaled to [0, 1] (12288 rows for the real
    64x64 images).

    Always C-contiguous, so every engine feeds BLAS the same memory layout and gets the
    same floating-point results.
    """
    m = images.shape[0]
    flat = images.reshape(m, -1).T
    out = np.empty(flat.shape, dtype=np.float64)  # one float64 copy, no temporary
    return np.divide(flat, 255.0, out=out)


def _labels(y: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(y.reshape(1, -1), dtype=np.float64)


def _dataset(h5: h5py.File, path: Path, key: str) -> h5py.Dataset:
    """The data set at key, checked and not yet read: its data must be in this file. A link to
    elsewhere (soft or external), external storage (`external=`, raw data in other files) or a
    virtual data set (views of other data sets, in other files too) would make the reader open
    whatever file it names: in the Init function, a local file copied into the bucket."""
    link = h5.get(key, getlink=True)
    if link is None:
        raise DataError(f"{path.name} has no key '{key}' (in {path})")
    if not isinstance(link, h5py.HardLink):
        kind = "an external link" if isinstance(link, h5py.ExternalLink) else "a soft link"
        raise DataError(f"'{key}' in {path} is {kind}; the data must be in the file itself")
    item = h5[key]
    if not isinstance(item, h5py.Dataset):
        raise DataError(f"'{key}' in {path.name} is not a data set")
    if item.is_virtual:
        raise DataError(f"'{key}' in {path} is a virtual data set; the data must be in the file")
    if item.id.get_create_plist().get_external_count():
        raise DataError(
            f"'{key}' in {path} keeps its data in external files; the data must be in the file"
        )
    return item


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path.name} not found in {path.parent}; {_HOW_TO_SUPPLY}")
    if not h5py.is_hdf5(path):
        raise DataError(f"{path} is not an HDF5 file")


def _image_sets(h5: h5py.File, path: Path, split: str) -> tuple[h5py.Dataset, h5py.Dataset]:
    """'<split>_set_x' and '<split>_set_y', their declared shapes and dtypes checked, unread."""
    x_key, y_key = f"{split}_set_x", f"{split}_set_y"
    x, y = _dataset(h5, path, x_key), _dataset(h5, path, y_key)
    if x.ndim != 4 or x.shape[1] != x.shape[2] or x.shape[1] < 1 or x.shape[3] != 3:
        raise DataError(
            f"'{x_key}' in {path.name} has shape {x.shape}; expected (m, S, S, 3): m square "
            f"RGB images of S x S pixels (the real data set's are {_shape_text(IMAGE_SHAPE)})"
        )
    if x.dtype != np.uint8:
        raise DataError(f"'{x_key}' in {path.name} has dtype {x.dtype}; expected uint8")
    if y.ndim != 1:
        raise DataError(f"'{y_key}' in {path.name} has shape {y.shape}; expected (m,)")
    if len(y) != len(x):
        raise DataError(
            f"{path.name} has {len(x)} images in '{x_key}' but {len(y)} labels in '{y_key}'"
        )
    if y.dtype.kind not in "biuf":
        raise DataError(f"'{y_key}' in {path.name} has labels outside {{0, 1}}")
    return x, y


def h5_float_bytes(path: Path, split: str) -> int:
    """What the images and labels of one file take once made float64 for the network, from
    their declared shapes (nothing read)."""
    _check_file(path)
    try:
        with h5py.File(path, "r") as h5:
            x, y = _image_sets(h5, path, split)
            return (math.prod(x.shape) + len(y)) * 8
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def check_data_size(name: str, float_bytes: int) -> None:
    """Refuse a data set whose examples would take more than MAX_DATA_BYTES as float64."""
    if float_bytes > MAX_DATA_BYTES:
        raise DataError(
            f"{name}: its examples take {float_bytes:,} bytes as 64-bit numbers, over the limit "
            f"of {MAX_DATA_BYTES:,}: refused unread"
        )


def images_from_h5(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate '<split>_set_x' (m, S, S, 3) uint8 and '<split>_set_y' (m,) in {0, 1}.

    The real images are 64x64 (IMAGE_SHAPE); any square size S >= 1 is accepted, so small
    stand-ins in the same layout can exercise the same code (see `read_h5_pair` for the check
    that both files agree). Shapes, dtypes and size are checked before anything is read: a
    small file can declare a data set of any size."""
    check_data_size(str(path), h5_float_bytes(path, split))
    try:
        with h5py.File(path, "r") as h5:
            x_set, y_set = _image_sets(h5, path, split)
            x, y = x_set[()], y_set[()]  # both checked before either is read
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"'{split}_set_y' in {path.name} has labels outside {{0, 1}}")
    return x, y


def _shape_text(shape: tuple[int, ...]) -> str:
    return " x ".join(map(str, shape))


def _classes(path: Path) -> tuple[str, ...]:
    try:
        with h5py.File(path, "r") as h5:
            raw = _dataset(h5, path, "list_classes")[()]
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    names = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in np.ravel(raw))
    if len(names) != 2:
        raise DataError(f"'list_classes' in {path.name} has {len(names)} names; expected 2")
    return names


def read_h5_pair(folder: Path) -> Dataset:
    """Read both files from folder and return the validated, preprocessed data set."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist; {_HOW_TO_SUPPLY}")
    train_path, test_path = folder / TRAIN_FILE, folder / TEST_FILE
    for path in (train_path, test_path):
        _check_file(path)
    check_data_size(
        str(folder), h5_float_bytes(train_path, "train") + h5_float_bytes(test_path, "test")
    )
    train_x, train_y = images_from_h5(train_path, "train")
    test_x, test_y = images_from_h5(test_path, "test")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"images in {TRAIN_FILE} are {_shape_text(train_x.shape[1:])} but images in "
            f"{TEST_FILE} are {_shape_text(test_x.shape[1:])}; both files must hold images of "
            f"one size (in {folder})"
        )
    return Dataset(
        train_x=preprocess(train_x),
        train_y=_labels(train_y),
        test_x=preprocess(test_x),
        test_y=_labels(test_y),
        classes=_classes(train_path),
        inputs={"kind": "image", "size": int(train_x.shape[1])},
    )


def cache_dir() -> Path:
    """SNN_CACHE_DIR, else $XDG_CACHE_HOME/snn, else ~/.cache/snn."""
    if explicit := os.environ.get("SNN_CACHE_DIR"):
        return Path(explicit).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "snn"
    return Path.home() / ".cache" / "snn"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _base_url(base_url: str | None) -> str:
    return (base_url or os.environ.get("SNN_DATA_URL") or DEFAULT_URL).rstrip("/")


def _failure(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _download_file(url: str, target: Path, expected: str, timeout: float) -> None:
    """Fetch url into target via a temporary file in the same folder, so target is either
    untouched or complete and verified, whatever fails."""
    try:
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".part"
        )
    except OSError as exc:
        raise DataError(f"cannot write to data folder {target.parent}: {exc}") from exc
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        received = 0
        try:
            with os.fdopen(fd, "wb") as out:
                request = urllib.request.Request(url, headers={"User-Agent": "snn"})
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    length = response.headers.get("Content-Length")
                    while chunk := response.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        received += len(chunk)
        except (OSError, http.client.HTTPException) as exc:  # URLError and timeouts are OSError
            raise DataError(
                f"download failed from {url}: {_failure(exc)}; instead, {_HOW_TO_SUPPLY}"
            ) from exc
        # A dropped connection can end the body early without an exception.
        if length is not None and length.isdigit() and received != int(length):
            raise DataError(
                f"download failed from {url}: got {received} of {length} bytes; "
                f"instead, {_HOW_TO_SUPPLY}"
            )
        actual = digest.hexdigest()
        if actual != expected:
            raise DataError(
                f"checksum mismatch for {target.name} from {url}: "
                f"expected sha256 {expected}, got {actual}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _prepare(dest: Path) -> Path:
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create data folder {dest}: {exc}") from exc
    return dest


def download_dataset(dest: Path, base_url: str | None = None, timeout: float = 30) -> Path:
    """Download and verify both files into dest (base URL: argument, SNN_DATA_URL, DEFAULT_URL)."""
    dest = _prepare(dest)
    base = _base_url(base_url)
    for name in (TRAIN_FILE, TEST_FILE):
        _download_file(f"{base}/{name}", dest / name, SHA256[name], timeout)
    return dest


def _ensure_cached(dest: Path) -> Path:
    """Download only the files that are missing from dest or fail their checksum."""
    dest = _prepare(dest)
    base = _base_url(None)
    for name in (TRAIN_FILE, TEST_FILE):
        target = dest / name
        if target.is_file() and _sha256(target) == SHA256[name]:
            continue
        _download_file(f"{base}/{name}", target, SHA256[name], timeout=30)
    return dest


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The argument, else SNN_DATA_DIR, else the user cache (downloaded on first use)."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if env := os.environ.get("SNN_DATA_DIR"):
        return Path(env).expanduser()
    return _ensure_cached(cache_dir() / "catvnoncat")


def load_dataset(data_dir: str | Path | None = None) -> Dataset:
    """Locate the data set (see resolve_data_dir) and read it."""
    return read_h5_pair(resolve_data_dir(data_dir))


def synthetic_dataset(n_x: int = 12, m_train: int = 64, m_test: int = 16, seed: int = 0) -> Dataset:
    """A small, learnable stand-in: two gaussian blobs in [0, 1]^n_x, balanced 0/1 labels.

    The same arguments always give the same bytes.
    """
    if n_x < 1 or m_train < 1 or m_test < 0:
        raise ValueError(
            f"need n_x >= 1, m_train >= 1, m_test >= 0; got {n_x}, {m_train}, {m_test}"
        )
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.25, 0.75, size=(2, n_x))
    m = m_train + m_test
    y = rng.permutation(np.arange(m) % 2)
    x = np.clip(centres[y] + rng.normal(0.0, 0.1, size=(m, n_x)), 0.0, 1.0)
    x_t = np.ascontiguousarray(x.T, dtype=np.float64)
    labels = y.astype(np.float64).reshape(1, m)
    return Dataset(
        train_x=np.ascontiguousarray(x_t[:, :m_train]),
        train_y=np.ascontiguousarray(labels[:, :m_train]),
        test_x=np.ascontiguousarray(x_t[:, m_train:]),
        test_y=np.ascontiguousarray(labels[:, m_train:]),
        classes=("non-cat", "cat"),
    )


def write_h5_pair(
    folder: str | Path,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    classes: tuple[str, ...] = ("non-cat", "cat"),
) -> Path:
    """Write a data set as the two h5 files of the real one, in its layout: in each file
    '<split>_set_x' (m, S, S, 3) uint8, '<split>_set_y' (m,) int64 and 'list_classes' (bytes).
    Labels may be given as (m,) or (1, m). Returns the folder (created if need be); reading it
    back goes through `read_h5_pair`."""
    pairs = []
    for split, images, labels in (
        ("train", train_images, train_labels),
        ("test", test_images, test_labels),
    ):
        images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(
                f"{split} images must be uint8 (m, H, W, 3), got {images.dtype} {images.shape}"
            )
        if len(labels) != len(images) or not np.isin(labels, (0, 1)).all():
            raise ValueError(f"{split} labels must be {len(images)} values in {{0, 1}}")
        pairs.append((split, images, labels.astype(np.int64)))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = np.array([c.encode() for c in classes])
    for (split, images, labels), name in zip(pairs, (TRAIN_FILE, TEST_FILE), strict=True):
        with h5py.File(folder / name, "w") as h5:
            h5.create_dataset(f"{split}_set_x", data=images)
            h5.create_dataset(f"{split}_set_y", data=labels)
            h5.create_dataset("list_classes", data=names)
    return folder


def synthetic_images(
    size: int = 4, m_train: int = 40, m_test: int = 12, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Small images in the real layout, for `write_h5_pair`: (train_images, train_labels,
    test_images, test_labels), images (m, size, size, 3) uint8, labels (m,) int64 in {0, 1}.

    Each class is one mean image plus noise, so the classes are separable (learnable); labels
    are balanced. The same arguments always give the same bytes.
    """
    if size < 1 or m_train < 1 or m_test < 1:
        raise ValueError(f"need size, m_train, m_test >= 1; got {size}, {m_train}, {m_test}")
    rng = np.random.default_rng(seed)
    means = rng.uniform(48.0, 208.0, size=(2, size, size, 3))
    m = m_train + m_test
    labels = rng.permutation(np.arange(m) % 2).astype(np.int64)
    noise = rng.normal(0.0, 16.0, size=(m, size, size, 3))
    images = np.clip(np.rint(means[labels] + noise), 0, 255).astype(np.uint8)
    return images[:m_train], labels[:m_train], images[m_train:], labels[m_train:]
