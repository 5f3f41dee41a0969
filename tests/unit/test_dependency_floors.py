"""What the lower bounds of pyproject.toml must give the project, checked wherever the tests run
(CI also runs the fast tests against the lowest versions allowed): each of these failed with an
older release that the bounds used to allow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from snn import blas


@pytest.fixture
def restored_threads() -> Iterator[None]:
    """The project's thread count again after the test (it is process-wide)."""
    yield
    blas.use_threads(blas.DEFAULT_THREADS)


def test_the_blas_thread_count_is_applied(restored_threads: None) -> None:
    """threadpoolctl before 3.5 does not see the OpenBLAS that numpy 2 wheels bundle: the
    limit would do nothing, silently, and BLAS would run one thread per core."""
    np.ones((2, 2)).dot(np.ones((2, 2)))  # BLAS loaded
    assert blas.threads_in_use(), "threadpoolctl finds no BLAS library in numpy"
    blas.use_threads(2)
    assert blas.threads_in_use() == [2]
    blas.use_threads(1)
    assert blas.threads_in_use() == [1]


def test_h5py_reads_with_this_numpy(tmp_path: Path) -> None:
    """h5py before 3.11 is built against numpy 1: with numpy 2 it cannot even be imported."""
    import h5py

    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(6, dtype=np.uint8).reshape(2, 3)
    with h5py.File(path, "r") as f:
        assert f["x"][()].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_the_handlers_logger_clears_keys_per_thread() -> None:
    """aws-lambda-powertools before 3.2 has no thread-safe keys, which every handler uses."""
    from aws_lambda_powertools import Logger

    logger = Logger(service="floors")
    logger.thread_safe_append_keys(run_id="r")
    logger.thread_safe_clear_keys()


def test_matplotlib_draws_with_this_numpy(tmp_path: Path) -> None:
    """matplotlib before 3.8.4 is built against numpy 1 (cost.png of every run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0.7, 0.5, 0.3])
    path = tmp_path / "cost.png"
    fig.savefig(path)
    plt.close(fig)
    assert path.stat().st_size > 0
