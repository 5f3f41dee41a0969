"""Where a run's data lives: the S3 key layout and the run table's item keys, and nowhere else.

    uploads/{sha256}/{file}                              inputs, content-addressed: the two h5
                                                         files, or data.npz (an .npz data set, or
                                                         a folder of pictures made into one), and
                                                         pictures to classify; a run's data never
                                                         changes
    runs/{run_id}/parameters.json                        the network, as validated
    runs/{run_id}/data/{split}_{x|y}.npy                 the preprocessed data set (Init):
                                                         train, valid (if held out), test
    runs/{run_id}/neurons/epoch{e:07d}/layer{l:03d}/shard{s:05d}.npy
                                                         per-neuron statistics, sampled epochs
    runs/{run_id}/model.npz, neurons.npz                 the trained model; all neuron statistics
    scratch/{run_id}/step/{k:09d}/{name}/layer{l:03d}/shard{s:05d}.npy
                                                         W, b: the weights *entering* step k;
                                                         vW, vb, sW, sb: the optimizer's state
                                                         entering step k (momentum, RMSprop,
                                                         Adam); Z, A, dW, db, dA_prev: step k's
                                                         work
    scratch/{run_id}/step/{k:09d}/dAL.npy                d cost / d A[L] of step k

A step is one gradient step, on one mini-batch: step k = epoch e, batch b, with k = e B + b for B
batches an epoch. Without mini-batches there is one batch an epoch, and step k is epoch k.

`runs/` holds what a run needs to its end and what it leaves behind; nothing there expires while
a run lives. `scratch/` is each step's work: Commit deletes a step once the next two exist
(keeping a checkpoint every few hundred, and the best epoch's weights when the run watches a
validation set), and on AWS a lifecycle rule on `scratch/` clears what an abandoned run left.

The run table (hash key run_id, range key entry):

    (run_id, "run")                                      the run record: parameters, data keys,
                                                         status, committed_step, committed_epoch,
                                                         execution, results
    (run_id, "cost#{epoch:07d}")                         the cost of one epoch
    (run_id, "loss#{step:09d}")                          with mini-batches: one batch's summed
                                                         cost (an epoch's cost is their sum / m)
    (run_id, "valid#{epoch:07d}")                        the validation cost of one epoch
    (run_id, "claim")                                    the starter that created the run

Keys are immutable and versioned by step: a stage reads objects of its step and writes new keys
only, and writing a key again writes the same bytes. That makes every stage safe to retry. Shard
keys sort in neuron order and are always assembled by index, never by listing.

Every part of a key that comes from outside (a run id, an epoch, a layer, a shard, an upload's
hash and name) is validated here before it becomes part of a key.
"""

from __future__ import annotations

import re
from typing import Any

from snn.errors import EventError

# Run ids are at most 60 characters, so that the names of a run's executions (the run id and a
# suffix) stay within Step Functions' 80.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,59}")
EXECUTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
UPLOAD_KEY = re.compile(r"uploads/([0-9a-f]{64})/([\w.-]{1,100})")
MATRIX_NAMES = ("W", "b", "Z", "A", "dW", "db", "dA_prev", "vW", "vb", "sW", "sb")
SPLITS = ("train", "valid", "test")
MAX_INDEX = 9_999_999
MAX_STEP = 999_999_999


def check_run_id(run_id: Any) -> str:
    """A run id becomes part of S3 keys: only letters, digits, '-' and '_' (no '/', no '..')."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise EventError(
            f"invalid run_id {run_id!r}: use 1-60 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return run_id


def check_index(name: str, value: Any, low: int = 0, high: int = MAX_INDEX) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise EventError(f"invalid {name} {value!r}: expected a whole number >= {low}")
    return value


def check_execution_name(name: Any) -> str:
    if not isinstance(name, str) or not EXECUTION_NAME.fullmatch(name):
        raise EventError(f"invalid execution name {name!r}")
    return name


# --- executions ----------------------------------------------------------------------------------


def execution_name(run_id: str, epoch: int, batch: int = 0) -> str:
    """The execution that carries a run on from `epoch` (and mini-batch `batch` of it):
    continue-as-new."""
    name = f"{check_run_id(run_id)}-e{check_index('epoch', epoch):07d}"
    return name if batch == 0 else f"{name}b{check_index('batch', batch, high=99_999):05d}"


def resumed_execution_name(run_id: str, stamp: int) -> str:
    """An execution that resumes a stopped or failed run (`stamp`: seconds since the epoch)."""
    if not isinstance(stamp, int) or not 0 <= stamp < 10**10:
        raise ValueError(f"bad time stamp {stamp!r}")
    return f"{check_run_id(run_id)}-r{stamp}"


# --- the run table -------------------------------------------------------------------------------

RUN_ENTRY = "run"
CLAIM_ENTRY = "claim"


def cost_entry(epoch: int) -> str:
    return f"cost#{check_index('epoch', epoch):07d}"


def loss_entry(step: int) -> str:
    return f"loss#{check_index('step', step, high=MAX_STEP):09d}"


def validation_entry(epoch: int) -> str:
    return f"valid#{check_index('epoch', epoch):07d}"


def number_of_entry(entry: str) -> int:
    """The epoch or step an entry is of: cost#0000042 -> 42."""
    return int(entry.split("#", 1)[1])


def item_key(run_id: str, entry: str = RUN_ENTRY) -> dict[str, Any]:
    """The DynamoDB key of one of a run's items."""
    return {"run_id": {"S": check_run_id(run_id)}, "entry": {"S": entry}}


# --- uploads -------------------------------------------------------------------------------------


def upload_key(sha256: str, filename: str) -> str:
    key = f"uploads/{sha256}/{filename}"
    if not UPLOAD_KEY.fullmatch(key):
        raise ValueError(f"bad upload key parts {sha256!r}, {filename!r}")
    return key


def check_upload_key(name: str, key: Any) -> str:
    """An event's upload key, checked: uploads/<sha256>/<file>. Returns the sha256."""
    match = UPLOAD_KEY.fullmatch(key) if isinstance(key, str) else None
    if match is None:
        raise EventError(f"{name} {key!r} is not an upload key uploads/<sha256>/<file>")
    return match.group(1)


# --- what a run keeps ----------------------------------------------------------------------------


def run_prefix(run_id: str) -> str:
    return f"runs/{check_run_id(run_id)}/"


def parameters_key(run_id: str) -> str:
    return f"{run_prefix(run_id)}parameters.json"


def data_key(run_id: str, split: str, part: str) -> str:
    if split not in SPLITS or part not in ("x", "y"):
        raise ValueError(f"unknown data part {split}_{part}")
    return f"{run_prefix(run_id)}data/{split}_{part}.npy"


def neuron_stats_key(run_id: str, epoch: int, layer: int, shard: int) -> str:
    """Per-neuron statistics of a sampled epoch: outside scratch/, so they survive the garbage
    collection of old epochs."""
    return (
        f"{run_prefix(run_id)}neurons/epoch{check_index('epoch', epoch):07d}/"
        f"layer{check_index('layer', layer, 1):03d}/shard{check_index('shard', shard):05d}.npy"
    )


def neurons_key(run_id: str) -> str:
    return f"{run_prefix(run_id)}neurons.npz"


def model_key(run_id: str) -> str:
    return f"{run_prefix(run_id)}model.npz"


# --- each step's work ---------------------------------------------------------------------------


def scratch_prefix(run_id: str) -> str:
    return f"scratch/{check_run_id(run_id)}/"


def step_prefix(run_id: str, step: int) -> str:
    return f"{scratch_prefix(run_id)}step/{check_index('step', step, high=MAX_STEP):09d}/"


def matrix_key(run_id: str, step: int, name: str, layer: int, shard: int) -> str:
    if name not in MATRIX_NAMES:
        raise ValueError(f"unknown matrix {name!r}")
    layer = check_index("layer", layer, 1)
    shard = check_index("shard", shard)
    return f"{step_prefix(run_id, step)}{name}/layer{layer:03d}/shard{shard:05d}.npy"


def output_gradient_key(run_id: str, step: int) -> str:
    return f"{step_prefix(run_id, step)}dAL.npy"
