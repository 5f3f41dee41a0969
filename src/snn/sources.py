"""Where a run's data comes from: the cat/non-cat set's two h5 files, an .npz of arrays, or a
folder of pictures (`snn.own_data`). The CLI and every engine open it the same way; a stack
stores it as content-addressed uploads (runs on the same data share one copy):

    two h5 files         uploads/<sha256>/train_catvnoncat.h5 and .../test_catvnoncat.h5
                         (the execution input's train_key and test_key)
    an .npz, or a folder of pictures made into one
                         uploads/<sha256>/data.npz (the execution input's data_key)
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from snn import keys
from snn.data import TEST_FILE, TRAIN_FILE, Dataset, read_h5_pair
from snn.errors import DataError
from snn.own_data import check_npz_file, is_pictures_folder, pictures_npz, read_npz_dataset
from snn.parameters import Parameters
from snn.training import Training

if TYPE_CHECKING:
    from snn.predict import Model

# The fields of an execution input that name a run's data, in either form.
DATA_FIELDS = ("train_key", "test_key", "data_key")
NPZ_NAME = "data.npz"
# The most one uploaded file may hold (Init refuses more): an h5 file of the data set is a few
# MB, and an .npz within the data size limit (`snn.data.MAX_DATA_BYTES`) fits.
MAX_UPLOAD_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class DataSource:
    path: Path
    kind: str  # "h5", "npz" or "pictures"
    positive: str | None = None  # the positive class of a folder of pictures

    def uploads(self, training: Training) -> dict[str, tuple[str, bytes]]:
        """{execution input field: (upload key, bytes)}."""
        if self.kind == "h5":
            files = (("train_key", TRAIN_FILE), ("test_key", TEST_FILE))
            return {field: _upload((self.path / name).read_bytes(), name) for field, name in files}
        return {"data_key": _upload(self._npz(training), NPZ_NAME)}

    def keys(self, training: Training) -> dict[str, str]:
        return {field: key for field, (key, _) in self.uploads(training).items()}

    def dataset(self, training: Training) -> Dataset:
        """The data set, read as a run with these training settings reads it (the shuffle seed
        splits an .npz without a test set; pictures are resized to the image size)."""
        with _fits_in_memory(self.path):
            if self.kind == "h5":
                return read_h5_pair(self.path)
            if self.kind == "npz":
                self._check_npz()
                return read_npz_dataset(self.path, str(self.path), training.shuffle_seed)
            return read_npz_dataset(self._npz(training), str(self.path), training.shuffle_seed)

    def _npz(self, training: Training) -> bytes:
        with _fits_in_memory(self.path):
            if self.kind == "npz":
                self._check_npz()
                try:
                    return self.path.read_bytes()
                except OSError as exc:
                    raise DataError(f"{self.path}: cannot be read ({exc.strerror})") from None
            return pictures_npz(
                self.path, training.image_size, self.positive, training.shuffle_seed
            )

    def _check_npz(self) -> None:
        """The file's size, zip structure and members' headers, before it is read whole."""
        try:
            size = self.path.stat().st_size
        except OSError as exc:
            raise DataError(f"{self.path}: cannot be read ({exc.strerror})") from None
        if size > MAX_UPLOAD_BYTES:
            raise DataError(
                f"{self.path}: {size:,} bytes, over the limit of {MAX_UPLOAD_BYTES:,} for a "
                "data file: refused unread"
            )
        check_npz_file(self.path)


@contextlib.contextmanager
def _fits_in_memory(path: Path) -> Iterator[None]:
    """Loading data that this machine's memory cannot hold is one line, not a traceback."""
    try:
        yield
    except MemoryError:
        raise DataError(f"{path}: the data set does not fit in this machine's memory") from None


def _upload(data: bytes, name: str) -> tuple[str, bytes]:
    return keys.upload_key(hashlib.sha256(data).hexdigest(), name), data


def open_source(path: str | Path, positive: str | None = None) -> DataSource:
    """The data at `path`: a folder with the two h5 files, an .npz file, or a folder of
    pictures in class folders."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise DataError(f"{path}: a data file must be an .npz of train_x and train_y")
        return DataSource(path, "npz")
    if not path.is_dir():
        raise DataError(f"{path}: no such data file or folder")
    if (path / TRAIN_FILE).exists() or (path / TEST_FILE).exists():
        return DataSource(path, "h5")
    if is_pictures_folder(path):
        return DataSource(path, "pictures", positive)
    raise DataError(
        f"{path}: neither the two h5 files ({TRAIN_FILE}, {TEST_FILE}), nor class folders of "
        "pictures"
    )


def model_dataset(data: str | Path | None, model: Model) -> Dataset:
    """The data a trained model is judged on, read as its run read it: `data` (default as for
    `snn train`), with the run's training settings (an .npz's test split, the pictures' size)
    and, for a folder of pictures, the model's positive class."""
    from dataclasses import replace

    from snn.data import resolve_data_dir

    source = open_source(resolve_data_dir(data), positive=model.classes[1])
    if model.parameters is not None:
        training = model.parameters.training
    elif source.kind == "pictures":
        training = replace(Training(), image_size=model.image_size)
    else:
        training = Training()
    dataset = source.dataset(training)
    if dataset.n_x != model.n_x:
        raise DataError(
            f"{source.path}: its examples have {dataset.n_x} values but the model takes "
            f"{model.n_x} (is it the data this model was trained on?)"
        )
    return dataset


def dataset_from_uploads(fields: dict[str, bytes], p: Parameters, name: str) -> Dataset:
    """The data set of a run, from its uploads' bytes (what Init reads)."""
    import tempfile

    with _fits_in_memory(Path(name)):
        if "data_key" in fields:
            return read_npz_dataset(fields["data_key"], name, p.training.shuffle_seed)
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, TRAIN_FILE).write_bytes(fields["train_key"])
            Path(tmp, TEST_FILE).write_bytes(fields["test_key"])
            return read_h5_pair(Path(tmp))
