"""Your own data: an .npz of arrays or a folder of pictures becomes the same Dataset a run
trains on; anything malformed is refused with one line naming the file and the problem."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from snn import network as nn
from snn import npz as npz_module
from snn import own_data
from snn.cli import main
from snn.data import MAX_DATA_BYTES
from snn.errors import DataError
from snn.own_data import TEST_FRACTION, pictures_npz, read_npz_dataset
from snn.sources import MAX_UPLOAD_BYTES, open_source
from snn.training import Training


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def blobs(m: int = 50, n_x: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(m) % 2
    return rng.normal(size=(m, n_x)) + y[:, None], y


def test_an_npz_with_a_test_set_is_read_as_it_is() -> None:
    x, y = blobs()
    data = read_npz_dataset(npz(train_x=x, train_y=y, test_x=x[:5], test_y=y[:5]), "d.npz", 1)
    assert data.train_x.shape == (3, 50) and data.train_y.shape == (1, 50)
    assert np.array_equal(data.train_x, x.T) and np.array_equal(data.test_y[0], y[:5])
    assert data.test_split is None
    assert data.classes == ("0", "1") and data.inputs == {"kind": "values"}


def test_without_a_test_set_a_seeded_fifth_is_held_out() -> None:
    x, y = blobs(m=50)
    raw = npz(train_x=x, train_y=y)
    a, b = read_npz_dataset(raw, "d.npz", 7), read_npz_dataset(raw, "d.npz", 7)
    other = read_npz_dataset(raw, "d.npz", 8)
    held = round(50 * TEST_FRACTION)
    assert a.test_x.shape == (3, held) and a.train_x.shape == (3, 50 - held)
    assert a.test_split == {"fraction": TEST_FRACTION, "seed": 7, "examples": held}
    assert np.array_equal(a.test_x, b.test_x)  # the same seed, the same split
    assert not np.array_equal(a.test_x, other.test_x)
    # every example is in exactly one of the two sets
    together = np.sort(np.concatenate([a.train_x, a.test_x], axis=1), axis=1)
    assert np.array_equal(together, np.sort(x.T, axis=1))


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"train_x": np.zeros((4, 2))}, "no train_y"),
        ({"train_x": np.zeros((4, 2)), "train_y": np.zeros(3)}, "train_y must be (4,)"),
        ({"train_x": np.zeros(4), "train_y": np.zeros(4)}, "train_x must be (examples, values)"),
        ({"train_x": np.full((4, 2), np.nan), "train_y": np.zeros(4)}, "finite numbers"),
        ({"train_x": np.zeros((4, 2)), "train_y": np.full(4, 2)}, "labels 0 and 1"),
        ({"train_x": np.array([["a", "b"]] * 4), "train_y": np.zeros(4)}, "not numbers"),
        (
            {"train_x": np.zeros((4, 2)), "train_y": np.zeros(4), "test_x": np.zeros((1, 2))},
            "test_x and test_y go together",
        ),
        (
            {
                "train_x": np.zeros((4, 2)),
                "train_y": np.zeros(4),
                "test_x": np.zeros((1, 3)),
                "test_y": np.zeros(1),
            },
            "test_x has 3 values per example",
        ),
        ({"train_x": np.zeros((1, 2)), "train_y": np.zeros(1)}, "at least 2 examples"),
        ({"train_x": np.zeros((4, 2)), "train_y": np.zeros(4), "info": np.zeros(3)}, "info"),
    ],
)
def test_a_malformed_npz_is_refused_in_one_line(arrays: dict, problem: str) -> None:
    with pytest.raises(DataError) as caught:
        read_npz_dataset(npz(**arrays), "mine.npz", 1)
    message = str(caught.value)
    assert message.startswith("mine.npz: ") and problem in message and "\n" not in message


def test_an_object_array_is_refused_before_it_is_unpickled() -> None:
    raw = npz(train_x=np.array([object()] * 4).reshape(4, 1), train_y=np.zeros(4))
    with pytest.raises(DataError, match=r"mine\.npz"):
        read_npz_dataset(raw, "mine.npz", 1)


def _peak(call: Callable[[], object]) -> int:
    """The most memory Python and numpy held at once while `call` ran, in bytes."""
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("with_test_set", [False, True])
def test_loading_an_integer_npz_takes_about_its_float64_size(
    tmp_path: Path, with_test_set: bool
) -> None:
    """Each array becomes float64 once, in place: no whole temporary copies (which made an
    int8 file take 8 times its size several times over)."""
    rng = np.random.default_rng(0)
    x = rng.integers(-100, 100, size=(3000, 1000), dtype=np.int8)
    y = np.arange(3000) % 2
    arrays = {"train_x": x, "train_y": y}
    if with_test_set:
        arrays = {"train_x": x[:2400], "train_y": y[:2400], "test_x": x[2400:], "test_y": y[2400:]}
    path = tmp_path / "ints.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    float64_bytes = x.size * 8
    found: list[Any] = []
    peak = _peak(lambda: found.append(open_source(path).dataset(Training(shuffle_seed=2))))
    data = found[0]
    assert np.array_equal(np.concatenate([data.train_x, data.test_x], axis=1).sum(), x.sum())
    if not with_test_set:
        keep, held = nn.validation_split(3000, TEST_FRACTION, 2)
        assert np.array_equal(data.train_x, x[keep].T.astype(np.float64))
        assert np.array_equal(data.test_x, x[held].T.astype(np.float64))
    else:
        assert np.array_equal(data.train_x, x[:2400].T.astype(np.float64))
    assert all(a.dtype == np.float64 and a.flags.c_contiguous for a in (data.train_x, data.test_x))
    # the float64 data set, the int8 arrays as read (an eighth of it) and small temporaries
    assert peak < 1.3 * float64_bytes, (peak, float64_bytes)


def test_a_file_that_is_not_an_npz_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    path.write_bytes(np.random.default_rng(0).bytes(16 << 20))  # 16 MB, not a zip
    caught: list[DataError] = []

    def load() -> None:
        with pytest.raises(DataError) as info:
            open_source(path).dataset(Training())
        caught.append(info.value)

    def upload() -> None:  # what the local and AWS engines upload
        with pytest.raises(DataError):
            open_source(path).keys(Training())

    assert _peak(load) < 1 << 20 and _peak(upload) < 1 << 20
    assert "not a readable .npz data set" in str(caught[0])


def test_a_data_file_over_the_upload_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    with path.open("wb") as f:  # sparse: takes no disk
        f.truncate(MAX_UPLOAD_BYTES + 1)
    with pytest.raises(DataError, match="over the limit of 536,870,912 for a data file"):
        open_source(path).dataset(Training())


def test_an_npz_declaring_more_than_the_data_limit_is_refused_before_any_array_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """64 MiB of int8 zeros compress to a small file, but are 512 MiB and more as float64."""
    rows = MAX_DATA_BYTES // 8 // 8192 + 1
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, train_x=np.zeros((rows, 8192), np.int8), train_y=np.zeros(rows))
    assert path.stat().st_size < 1 << 20

    def never(*args: Any) -> None:
        raise AssertionError("an array was read")

    monkeypatch.setattr(npz_module, "read_member", never)
    for source in (path, path.read_bytes()):
        with pytest.raises(DataError, match="over the limit of 536,870,912: refused unread"):
            read_npz_dataset(source, "zeros.npz", 1)


def test_running_out_of_memory_while_loading_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = blobs()
    path = tmp_path / "data.npz"
    np.savez(path, train_x=x, train_y=y)

    def out_of_memory(*args: Any) -> None:
        raise MemoryError

    monkeypatch.setattr(own_data, "_columns", out_of_memory)
    code = main(["train", "--engine", "direct", "--data", str(path), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err == f"snn: error: {path}: the data set does not fit in this machine's memory"
    assert not (tmp_path / "r").exists()


def picture(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (10, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_a_folder_of_pictures_is_resized_and_labelled_by_its_positive_class(
    tmp_path: Path,
) -> None:
    for k in range(3):
        picture(tmp_path / "dog" / f"{k}.png", (255, 0, 0))
        picture(tmp_path / "fox" / f"{k}.jpg", (0, 0, 255), size=(20, 30))
    source = open_source(tmp_path, positive="fox")
    assert source.kind == "pictures"
    data = source.dataset(Training(image_size=4, shuffle_seed=3))
    assert data.classes == ("dog", "fox") and data.inputs == {"kind": "image", "size": 4}
    assert data.n_x == 4 * 4 * 3
    X = np.concatenate([data.train_x, data.test_x], axis=1)
    Y = np.concatenate([data.train_y, data.test_y], axis=1)[0]
    blue = X[2::3].mean(axis=0)  # the blue channel of every picture, scaled to [0, 1]
    assert np.array_equal(blue > 0.9, Y == 1) and X.min() >= 0.0 and X.max() <= 1.0
    assert data.test_split is not None  # no test/ folder: a seeded fifth held out


def test_train_and_test_folders_are_kept_apart(tmp_path: Path) -> None:
    for split, n in (("train", 4), ("test", 2)):
        for name in ("cat", "other"):
            for k in range(n):
                picture(tmp_path / split / name / f"{k}.png", (k * 10, 0, 0))
    data = open_source(tmp_path).dataset(Training(image_size=2))
    assert data.train_x.shape == (12, 8) and data.test_x.shape == (12, 4)
    assert data.classes == ("other", "cat") and data.test_split is None


def test_hidden_files_and_folders_in_a_class_folder_are_skipped(tmp_path: Path) -> None:
    """A viewer's thumbnails (`cat/.thumbs/`) or a `.git/` are not pictures of the class."""
    for name in ("cat", "dog"):
        picture(tmp_path / name / "a.png", (1, 2, 3))
        (tmp_path / name / ".thumbs").mkdir()
        (tmp_path / name / ".thumbs" / "a.db").write_bytes(b"not a picture")
        (tmp_path / name / ".DS_Store").write_bytes(b"not a picture")
    picture(tmp_path / "cat" / ".hidden" / "deep" / "b.png", (9, 9, 9))
    data = open_source(tmp_path).dataset(Training(image_size=2))
    assert data.train_x.shape[1] + data.test_x.shape[1] == 2


def test_the_same_folder_gives_the_same_bytes(tmp_path: Path) -> None:
    picture(tmp_path / "cat" / "a.png", (1, 2, 3))
    picture(tmp_path / "dog" / "b.png", (4, 5, 6))
    assert pictures_npz(tmp_path, 8, None, 1) == pictures_npz(tmp_path, 8, None, 1)


@pytest.mark.parametrize(
    ("layout", "positive", "problem"),
    [
        (["cat/a.png"], None, "expected two class folders"),
        (["cat/a.png", "dog/b.png", "fox/c.png"], None, "found 3"),
        (["dog/a.png", "fox/b.png"], None, "name the positive class with --positive"),
        (["dog/a.png", "fox/b.png"], "cat", "no class folder 'cat'"),
        (["cat/a.png", "dog/notes.txt"], None, "notes.txt"),
        (
            ["train/cat/a.png", "train/dog/b.png", "test/cat/c.png", "test/fox/d.png"],
            None,
            "the same two class folders",
        ),
    ],
)
def test_a_malformed_folder_is_refused_in_one_line(
    tmp_path: Path, layout: list[str], positive: str | None, problem: str
) -> None:
    for name in layout:
        if name.endswith(".txt"):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text("not a picture")
        else:
            picture(tmp_path / name, (9, 9, 9))
    with pytest.raises(DataError) as caught:
        open_source(tmp_path, positive).dataset(Training(image_size=4))
    assert problem in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: p / "nothing-here", "no such data file or folder"),
        (lambda p: (p / "data.csv").write_text("1,2") and p / "data.csv", "must be an .npz"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "neither the two h5 files"),
    ],
)
def test_data_that_is_none_of_the_three_kinds_is_refused(tmp_path: Path, make, problem) -> None:
    with pytest.raises(DataError, match=problem):
        open_source(make(tmp_path))
