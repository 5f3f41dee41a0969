"""A run's inputs as the stack stores them: content-addressed uploads of the data set's two h5
files (runs on the same data share one copy), named by their sha256."""

from __future__ import annotations

import hashlib
from pathlib import Path

from snn import keys
from snn.data import TEST_FILE, TRAIN_FILE

DATA_FILES = (("train_key", TRAIN_FILE), ("test_key", TEST_FILE))


def data_uploads(data_dir: Path) -> dict[str, tuple[str, bytes]]:
    """{"train_key": (key, bytes), "test_key": (key, bytes)} of the h5 files in data_dir."""
    out = {}
    for field, name in DATA_FILES:
        data = (Path(data_dir) / name).read_bytes()
        out[field] = (keys.upload_key(hashlib.sha256(data).hexdigest(), name), data)
    return out


def data_keys(data_dir: Path) -> dict[str, str]:
    return {field: key for field, (key, _) in data_uploads(data_dir).items()}
