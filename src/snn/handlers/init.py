"""Init: create the run from parameters.json and the data set's two h5 files (uploaded to the
bucket under their sha256), and return the plan the state machine loops over.

Event (events/init.json):
    {"run_id": "sample", "parameters_key": "runs/sample/parameters.json",
     "train_key": "uploads/<sha256>/train_catvnoncat.h5",
     "test_key": "uploads/<sha256>/test_catvnoncat.h5", "execution_name": "sample"}
Result (the plan; small, it travels in the execution's state):
    {"run_id": "sample", "epochs": 10, "chunk_end": 10, "progress": {"epoch": 0},
     "forward": [{"layer": 1, "shards": [0, 1, 2]}, {"layer": 2, "shards": [0]}],
     "backward": [{"layer": 2, "shards": [0]}, {"layer": 1, "shards": [0, 1, 2]}],
     "update": [{"layer": 1, "shard": 0}, ..., {"layer": 2, "shard": 0}]}

Each upload is checked against the sha256 in its key before it is read. A run that exists is
carried on from its committed epoch if its parameters and data are the same, and refused,
with nothing changed, otherwise.
"""

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from snn import keys, stages
from snn.data import TEST_FILE, TRAIN_FILE, read_h5_pair
from snn.errors import EventError, SnnError
from snn.handlers import Event, handle
from snn.parameters import Parameters

# An h5 file of the data set is a few MB; anything far larger is not one.
MAX_UPLOAD_BYTES = 512 * 1024 * 1024


def _upload(ctx: stages.Context, name: str, key: str) -> bytes:
    """An upload's bytes, once they match the sha256 in its key."""
    sha256 = keys.check_upload_key(name, key)
    data = ctx.store.get_bytes(key, max_bytes=MAX_UPLOAD_BYTES)
    if len(data) > MAX_UPLOAD_BYTES:
        raise EventError(f"{key} is over the limit of {MAX_UPLOAD_BYTES:,} bytes")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise EventError(f"{key}: its content does not match the sha256 in its key")
    return data


def _init(ctx: stages.Context, event: Event) -> dict[str, Any]:
    run_id = event["run_id"]
    if event["parameters_key"] != keys.parameters_key(run_id):
        raise EventError(
            f"parameters_key must be {keys.parameters_key(run_id)!r}, "
            f"got {event['parameters_key']!r}"
        )
    train = _upload(ctx, "train_key", event["train_key"])
    test = _upload(ctx, "test_key", event["test_key"])
    try:
        p = Parameters.from_json(ctx.store.get_bytes(event["parameters_key"]).decode("utf-8"))
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, TRAIN_FILE).write_bytes(train)
            Path(tmp, TEST_FILE).write_bytes(test)
            dataset = read_h5_pair(Path(tmp))
    except UnicodeDecodeError:
        raise EventError(f"{event['parameters_key']} is not UTF-8 text") from None
    except SnnError as exc:
        raise EventError(str(exc)) from None
    data_keys = {"train_key": event["train_key"], "test_key": event["test_key"]}
    return stages.init(ctx, run_id, p, dataset, data_keys, event["execution_name"])


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    return handle(
        event, ("run_id", "parameters_key", "train_key", "test_key", "execution_name"), _init
    )
