"""Init: create the run from parameters.json and its data (uploaded to the bucket under its
sha256: the cat/non-cat set's two h5 files, or one .npz), and return the plan the state machine
loops over.

Event (events/init.json): the execution's input, and the execution's name:
    {"input": {"run_id": "sample", "parameters_key": "runs/sample/parameters.json",
               "train_key": "uploads/<sha256>/train_catvnoncat.h5",
               "test_key": "uploads/<sha256>/test_catvnoncat.h5"},
     "execution_name": "sample"}
    (for an .npz data set, the input has "data_key": "uploads/<sha256>/data.npz" instead of
    train_key and test_key)
Result (the plan; small, it travels in the execution's state):
    {"run_id": "sample", "epochs": 10, "batches": 1, "steps": 10, "chunk_end": 10,
     "progress": {"epoch": 0, "batch": 0, "step": 0, "stopped": false},
     "forward": [{"layer": 1, "shards": [0, 1, 2]}, {"layer": 2, "shards": [0]}],
     "backward": [{"layer": 2, "shards": [0]}, {"layer": 1, "shards": [0, 1, 2]}],
     "update": [{"layer": 1, "shard": 0}, ..., {"layer": 2, "shard": 0}]}

Each upload is checked against the sha256 in its key before it is read. A run that exists is
carried on from its committed epoch if its parameters and data are the same, and refused,
with nothing changed, otherwise.
"""

import hashlib
from typing import Any

from snn import keys, stages
from snn.errors import EventError, SnnError
from snn.handlers import Event, handle
from snn.parameters import Parameters
from snn.sources import DATA_FIELDS, MAX_UPLOAD_BYTES, dataset_from_uploads


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
    forms = (("data_key",), ("train_key", "test_key"))
    fields = next((f for f in forms if all(k in event for k in f)), None)
    if fields is None or any(k in event for k in DATA_FIELDS if k not in fields):
        raise EventError("the event names its data as train_key and test_key, or as data_key")
    uploads = {k: _upload(ctx, k, event[k]) for k in fields}
    try:
        p = Parameters.from_json(ctx.store.get_bytes(event["parameters_key"]).decode("utf-8"))
        dataset = dataset_from_uploads(uploads, p, event[fields[0]])
    except UnicodeDecodeError:
        raise EventError(f"{event['parameters_key']} is not UTF-8 text") from None
    except SnnError as exc:
        raise EventError(str(exc)) from None
    data_keys = {k: event[k] for k in fields}
    return stages.init(ctx, run_id, p, dataset, data_keys, event["execution_name"])


def _flatten(event: Any) -> Any:
    """The execution's input and its name, as one event."""
    if not isinstance(event, dict) or not isinstance(event.get("input"), dict):
        raise EventError(
            'the event must be {"input": <the execution input>, "execution_name": ...}'
        )
    if "execution_name" in event["input"] or set(event) != {"input", "execution_name"}:
        raise EventError("the event must have exactly the fields input and execution_name")
    return {**event["input"], "execution_name": event["execution_name"]}


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    return handle(
        event,
        ("run_id", "parameters_key", "execution_name"),
        _init,
        optional=DATA_FIELDS,
        prepare=_flatten,
    )
