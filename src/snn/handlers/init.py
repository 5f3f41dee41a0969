"""Init stage: create the run from parameters.json and the data set's two h5 files in S3."""

import re
import tempfile
from pathlib import Path
from typing import Any

from snn import stages
from snn.data import TEST_FILE, TRAIN_FILE, read_h5_pair
from snn.errors import EventError, SnnError
from snn.handlers import stage
from snn.parameters import Parameters
from snn.store import EXECUTION_NAME, parameters_key

UPLOAD_KEY = re.compile(r"^uploads/[0-9a-f]{64}/[\w.-]{1,100}$")


def _init(
    ctx: stages.Context,
    run_id: str,
    parameters_key: str,
    train_key: str,
    test_key: str,
    execution_name: str = "",
) -> dict[str, Any]:
    for name, key in (("train_key", train_key), ("test_key", test_key)):
        if not UPLOAD_KEY.fullmatch(key):
            raise EventError(f"{name} {key!r} is not an upload key uploads/<sha256>/<file>")
    if parameters_key != _expected_parameters_key(run_id):
        raise EventError(
            f"parameters_key must be {_expected_parameters_key(run_id)!r}, got {parameters_key!r}"
        )
    try:
        p = Parameters.from_json(ctx.store.get_bytes(parameters_key).decode("utf-8"))
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, TRAIN_FILE).write_bytes(ctx.store.get_bytes(train_key))
            Path(tmp, TEST_FILE).write_bytes(ctx.store.get_bytes(test_key))
            dataset = read_h5_pair(Path(tmp))
    except SnnError as exc:
        raise EventError(str(exc)) from None
    if execution_name and not EXECUTION_NAME.fullmatch(execution_name):
        raise EventError(f"invalid execution_name {execution_name!r}")
    return stages.init(ctx, run_id, p, dataset, execution_name)


def _expected_parameters_key(run_id: str) -> str:
    return parameters_key(run_id)


handler = stage("run_id", "parameters_key", "train_key", "test_key", optional=("execution_name",))(
    _init
)
