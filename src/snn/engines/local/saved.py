"""What `snn train --resume` needs, kept in the run folder's resume/ while a local run goes:

    resume/state.json       the run record (costs included), the execution input, what earlier
                            executions did, and a manifest: the sha256 of every object below
    resume/objects/<key>    the objects a new execution reads (`stages.state_keys`):
                            parameters.json, the uploads, the preprocessed data, the weights
                            and optimizer state entering the committed step, the best epoch's
                            weights (early stopping), the neuron statistics so far

It is written at most every few seconds while the run goes (`Snapshots`), and once more when
the run fails or is interrupted, so a run killed outright (SIGKILL, power loss) loses at most
that much work. Objects are written before state.json, each atomically, and state.json is
replaced in one rename: a snapshot cut short leaves the previous one whole.

Nothing saved is trusted on the way back (`load`): state.json's fields, each object against its
sha256, each matrix finite float64, each upload against the sha256 in its key; anything amiss is
one line that names the file, and nothing is uploaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snn import keys
from snn.engines.stack import Stack
from snn.errors import SnnError
from snn.parameters import Parameters
from snn.run_folder import write_json
from snn.stages import state_keys
from snn.stores import CorruptObject, MissingObject, from_npy

FORMAT = 2
STATE = "state.json"
OBJECTS = "objects"
SAFE_KEY = re.compile(r"(uploads|runs|scratch)/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
INPUT_FORMS = (
    {"run_id", "parameters_key", "train_key", "test_key"},
    {"run_id", "parameters_key", "data_key"},
)


class ResumeError(SnnError):
    """What resume/ holds cannot be trusted or used."""


@dataclass
class SavedRun:
    run_id: str
    record: dict[str, Any]
    execution_input: dict[str, str]
    summary: dict[str, Any]
    manifest: dict[str, str]
    series: dict[str, dict[int, float]]  # mini-batch costs of the epoch under way, validation
    objects: list[tuple[str, bytes]] | None = None  # once checked (`load` with objects)

    @property
    def committed(self) -> int:
        """The epochs done."""
        return int(self.record["committed_epoch"])

    @property
    def step(self) -> int:
        return int(self.record.get("committed_step", self.committed))

    @property
    def parameters(self) -> Parameters:
        return Parameters.from_json(self.record["parameters"])


class Snapshots:
    """Keeps resume/ up to date from the embedded stack's objects and run record."""

    def __init__(
        self, st: Stack, run_id: str, event: dict[str, str], resume_dir: Path, every: float = 15.0
    ) -> None:
        self.st, self.run_id, self.event, self.dir, self.every = (
            st,
            run_id,
            event,
            resume_dir,
            every,
        )
        self.manifest: dict[str, str] = {}
        self._next = time.monotonic()  # the first, as soon as the run exists
        self.saved_epoch: int | None = None

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def save(self, summary: dict[str, Any]) -> int | None:
        """Save the run at its committed epoch; returns the epoch the saved state resumes from
        (None: nothing saved yet). Immutable objects already saved are not read again. An
        object that is not there (Init still writing, or an old step deleted while it was
        read) leaves the last snapshot as it is, to be saved again at the next poll."""
        for _ in range(3):  # the committed step's weights go once two more steps commit
            record = self.st.runs.get(self.run_id)
            if record is None:
                break
            try:
                self._save(record, summary)
                self._next = time.monotonic() + self.every
                return self.saved_epoch
            except MissingObject:
                continue
        self._next = time.monotonic() + 1.0
        return self.saved_epoch

    def _save(self, record: dict[str, Any], summary: dict[str, Any]) -> None:
        committed, step = int(record["committed_epoch"]), int(record["committed_step"])
        wanted = state_keys(self.run_id, record, self.event)
        objects = self.dir / OBJECTS
        for key in sorted(wanted - set(self.manifest)):
            data = self.st.store.get_bytes(key)
            _write_atomically(objects / key, data)
            self.manifest[key] = hashlib.sha256(data).hexdigest()
        record = {
            **record,
            "costs": {e: c for e, c in record.get("costs", {}).items() if int(e) < committed},
        }
        manifest = {k: self.manifest[k] for k in sorted(wanted)}
        batches = int(record.get("batches", 1))
        series = {
            "loss": self.st.runs.values(self.run_id, "loss", range(committed * batches, step)),
            "valid": self.st.runs.values(self.run_id, "valid", range(committed)),
        }
        state = {
            "format": FORMAT,
            "engine": "local",
            "run_id": self.run_id,
            "execution_input": self.event,
            "record": record,
            "series": {
                name: {str(k): repr(v) for k, v in values.items()}
                for name, values in series.items()
            },
            "summary": summary,
            "manifest": manifest,
        }
        write_json(self.dir / STATE, state)
        for key in set(self.manifest) - set(manifest):  # the weights of an older epoch
            (objects / key).unlink(missing_ok=True)
        self.manifest = manifest
        self.saved_epoch = committed


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


# --- reading it back -----------------------------------------------------------------------------


def load(resume_dir: Path, with_objects: bool = False) -> SavedRun:
    """The saved run, its state.json checked field by field (and, `with_objects`, every saved
    object checked and read)."""
    path = resume_dir / STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResumeError(f"{resume_dir.parent}: no resumable run there (no {path})") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ResumeError(f"{path}: cannot be read ({exc})") from None
    try:
        saved = _parse(state)
    except (KeyError, TypeError, ValueError, SnnError) as exc:
        raise ResumeError(f"{path}: not a saved local run ({exc})") from None
    if saved.record.get("status") == "SUCCEEDED":
        raise ResumeError(f"run {saved.run_id} has finished: nothing to resume")
    if with_objects:
        saved.objects = objects(resume_dir, saved)
    return saved


def _parse(state: Any) -> SavedRun:
    if (
        not isinstance(state, dict)
        or state.get("format") != FORMAT
        or state.get("engine") != "local"
    ):
        raise ValueError(f"format {FORMAT} of the local engine expected")
    run_id = keys.check_run_id(state["run_id"])
    record, event = state["record"], state["execution_input"]
    if not isinstance(record, dict) or not isinstance(event, dict):
        raise TypeError("record and execution_input must be objects")
    if set(event) not in INPUT_FORMS or event["run_id"] != run_id:
        raise ValueError("execution_input is not this run's")
    if event["parameters_key"] != keys.parameters_key(run_id):
        raise ValueError("parameters_key is not this run's")
    for field in set(event) - {"run_id", "parameters_key"}:
        keys.check_upload_key(field, event[field])
    p = Parameters.from_json(record["parameters"], source="the saved record")
    committed = record["committed_epoch"]
    if not isinstance(committed, int) or not 0 <= committed <= p.epochs:
        raise ValueError(f"committed_epoch {committed!r} is not in 0..{p.epochs}")
    step, batches = record.get("committed_step"), record.get("batches")
    if not isinstance(batches, int) or batches < 1:
        raise ValueError(f"batches {batches!r} is not a whole number >= 1")
    if not isinstance(step, int) or step // batches != committed or step > p.epochs * batches:
        raise ValueError(f"committed_step {step!r} is not in epoch {committed}")
    examples, best = record.get("examples"), record.get("best_epoch")
    if not isinstance(examples, int) or examples < 1:
        raise ValueError(f"examples {examples!r} is not a whole number >= 1")
    if best is not None and (not isinstance(best, int) or not 0 <= best < committed):
        raise ValueError(f"best_epoch {best!r} is not in 0..{committed - 1}")
    series = {}
    watched = 0 if p.training.validation is None else committed
    mini = p.training.batch_size is not None
    for name, first, stop in (
        ("loss", committed * batches, step if mini else 0),
        ("valid", 0, watched),
    ):
        values = state.get("series", {}).get(name, {})
        if not isinstance(values, dict) or sorted(map(int, values)) != list(
            range(first, max(first, stop))
        ):
            raise ValueError(f"series {name} must hold {first}..{stop - 1}")
        series[name] = {int(k): float(v) for k, v in values.items()}
        if not all(np.isfinite(v) for v in series[name].values()):
            raise ValueError(f"series {name} holds values that are not finite")
    costs = record.get("costs", {})
    if not isinstance(costs, dict) or sorted(map(int, costs)) != list(range(committed)):
        raise ValueError(f"costs must be those of epochs 0..{committed - 1}")
    for cost in costs.values():
        if not np.isfinite(float(cost)):
            raise ValueError(f"cost {cost!r} is not finite")
    manifest = state["manifest"]
    if not isinstance(manifest, dict) or not all(
        isinstance(k, str)
        and SAFE_KEY.fullmatch(k)
        and ".." not in k
        and isinstance(v, str)
        and re.fullmatch(r"[0-9a-f]{64}", v)
        for k, v in manifest.items()
    ):
        raise ValueError("manifest must map object keys to sha256 digests")
    summary = state.get("summary") or {}
    if not isinstance(summary, dict):
        raise TypeError("summary must be an object")
    return SavedRun(run_id, record, event, summary, manifest, series)


def objects(resume_dir: Path, saved: SavedRun) -> list[tuple[str, bytes]]:
    """The saved objects, each checked: present, equal to its sha256, and for matrices finite
    float64; the uploads also against the sha256 in their keys."""
    missing = state_keys(saved.run_id, saved.record, saved.execution_input)
    missing -= set(saved.manifest)
    if missing:
        raise ResumeError(f"{resume_dir / STATE}: incomplete, {sorted(missing)[0]} is not saved")
    out = []
    for key, sha256 in sorted(saved.manifest.items()):
        path = resume_dir / OBJECTS / key
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ResumeError(f"{path}: cannot be read ({exc.strerror})") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ResumeError(f"{path}: changed since it was saved (its sha256 does not match)")
        if key.startswith("uploads/") and keys.check_upload_key("upload", key) != sha256:
            raise ResumeError(f"{path}: its content does not match the sha256 in its key")
        if key.endswith(".npy"):
            _check_matrix(path, data)
        out.append((key, data))
    return out


def _check_matrix(path: Path, data: bytes) -> None:
    try:
        array = from_npy(data, str(path))
    except CorruptObject as exc:
        raise ResumeError(str(exc)) from None
    if array.dtype != np.float64:
        raise ResumeError(f"{path}: a {array.dtype} matrix, not float64")
    if not np.isfinite(array).all():
        raise ResumeError(f"{path}: holds values that are not finite (NaN or infinity)")
