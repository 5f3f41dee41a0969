"""Shared fixtures: the data sets, an emulated AWS account (moto), the embedded stack."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from snn.data import Dataset, load_dataset, synthetic_dataset
from tests.helpers import FAKE_AWS_ENV, ROOT

# A shell without job control starts its background commands with SIGINT ignored, and a process
# that inherits an ignored SIGINT keeps it ignored (as `snn` rightly does). The tests send SIGINT
# to the processes they start: give those the default, whatever started the test run.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _data_dir() -> Path | None:
    value = os.environ.get("SNN_DATA_DIR")
    return Path(value) if value else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real cat/non-cat folder. Skipped (with the reason) when SNN_DATA_DIR is unset, except
    in CI, where a missing data set is a failure, never a silent skip."""
    folder = _data_dir()
    if folder is None:
        if os.environ.get("CI"):
            pytest.fail("SNN_DATA_DIR is not set in CI: the data-set tests cannot be skipped")
        pytest.skip("SNN_DATA_DIR is not set: point it at the cat/non-cat folder to run this")
    return folder


@pytest.fixture(scope="session")
def cat_data(data_dir: Path) -> Dataset:
    return load_dataset(data_dir)


@pytest.fixture(scope="session")
def synthetic() -> Dataset:
    return synthetic_dataset()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a region, so no test can reach a real account."""
    for k, v in FAKE_AWS_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def embedded_stack(aws_env: None) -> Iterator[object]:
    """The stack of template.yaml stood up in moto, as the local engine stands it up: bucket,
    table, state machine, and Lambda invokes served in-process. SNN_BUCKET and SNN_TABLE are set
    for the handlers while it lives."""
    from snn.engines.local import EmbeddedStack

    with EmbeddedStack(ROOT / "template.yaml") as stack:
        yield stack


@pytest.fixture
def synthetic_dir(tmp_path: Path) -> Path:
    """A small synthetic data set (4x4 images) written as the real pair of h5 files, in
    tmp_path/"data": the real layout, read by the same code, in a fraction of the time."""
    from snn.data import synthetic_images, write_h5_pair

    return write_h5_pair(tmp_path / "data", *synthetic_images())
