"""The run folders under --runs, read and never written: which runs there are, how each is going.

A run folder holds, once its run succeeded, metrics.json, model.npz, neurons.npz and cost.png
(and maybe a progress.json whose status is "succeeded"). A run in progress, interrupted or
failed holds progress.json and, when it can be resumed, resume/state.json. progress.json is
rewritten atomically about once a second while its run goes (its format: docs/serve.md).

A request names a run by its folder's name, which must be a plain name (no path, no leading
dot) of a real folder directly under --runs (not a symbolic link), so no request reads outside.
Files are opened without following symbolic links, and no file over its size limit is read.
Errors name the file and what is wrong with it, never what it holds.

A long run's files are large (a million epochs' costs are about 25 MB of JSON and, parsed, a
list of 32 MB), so each version of a file (its inode, size and time) is parsed once and shared
by every request and live page that reads it: whole, with its costs as one float64 array, for a
run's page and its live stream; without its costs (only their number and the last one) for
the runs page, which then reads the costs as bytes and never parses them.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from snn.errors import SnnError
from snn.npz import read_members

RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
RUNNING_WITHIN = 30.0  # seconds: a "running" progress.json older than this is a killed run
MAX_JSON_BYTES = 64 * 2**20  # a metrics.json of a million epochs' costs is about 25 MB
STATUSES = ("running", "finished", "interrupted", "failed", "unreadable")
LONG_ARRAYS = ("costs", "validation_costs")  # the arrays of one number per epoch
KEPT_WHOLE = 8  # whole parsed files kept (with their costs): the runs being watched
KEPT_BRIEF = 1024  # parsed files kept without their costs: the runs page's rows
_ARRAY_START = re.compile(rb'"(costs|validation_costs)"\s*:\s*\[')
_NUMBERS = re.compile(rb"[-+.,0-9eE\sNaInfinityul]*")  # numbers, null, NaN, Infinity


class RunError(SnnError):
    """A run that does not exist or cannot be read: the message says which and why."""


@dataclass(frozen=True)
class Skipped:
    """A long array of numbers left unparsed: how many numbers, and the last one."""

    count: int
    last: float | None


@dataclass(frozen=True)
class Run:
    """One run folder, as read now."""

    name: str
    folder: Path
    status: str  # one of STATUSES
    resumable: bool
    metrics: dict[str, Any] | None
    progress: dict[str, Any] | None
    changed: float  # when its files last changed (seconds since the epoch)
    error: str | None = None

    @property
    def has_model(self) -> bool:
        return _regular(self.folder / "model.npz") is not None

    @property
    def inputs(self) -> int | None:
        """What W1 of its model.npz takes (its header only is read), if there is a model; else
        what its progress.json says the network takes."""
        found = _regular(self.folder / "model.npz")
        if found is None:
            inputs = (self.progress or {}).get("inputs")
            return inputs if isinstance(inputs, int) and not isinstance(inputs, bool) else None
        key = (str(self.folder), found.st_ino, found.st_mtime_ns, found.st_size)
        with _LOCK:
            if key in _INPUTS:
                return _INPUTS[key]
        try:
            with open_regular(self.folder / "model.npz") as f:
                members = read_members(f, "model.npz", lambda k: True)  # type: ignore[arg-type]
            shape = members["W1"].shape if "W1" in members else ()
            inputs = int(shape[1]) if len(shape) == 2 else None
        except (SnnError, OSError):
            inputs = None
        with _LOCK:
            _INPUTS[key] = inputs
            while len(_INPUTS) > KEPT_BRIEF:
                _INPUTS.popitem(last=False)
        return inputs

    @property
    def source(self) -> dict[str, Any]:
        """What the run's numbers come from: its metrics, else its progress."""
        return self.metrics or self.progress or {}

    @property
    def parameters(self) -> dict[str, Any]:
        parameters = self.source.get("parameters")
        return parameters if isinstance(parameters, dict) else {}

    @property
    def costs(self) -> list[float | None] | np.ndarray:
        """Every epoch's cost (a run read whole: `Runs.get`); NaN where a cost was not finite."""
        costs = self.source.get("costs")
        return costs if isinstance(costs, list | np.ndarray) else []

    @property
    def epoch(self) -> int:
        """The epochs done: how many costs there are."""
        costs = self.source.get("costs")
        return costs.count if isinstance(costs, Skipped) else len(self.costs)

    @property
    def last_cost(self) -> Any:
        costs = self.source.get("costs")
        if isinstance(costs, Skipped):
            return costs.last
        return self.costs[-1] if len(self.costs) else None

    def summary(self) -> dict[str, Any]:
        """The runs page's row."""
        source, parameters = self.source, self.parameters
        neurons = parameters.get("neurons")
        layers = list(neurons.values()) if isinstance(neurons, dict) else []
        planned = parameters.get("epochs") if self.metrics else source.get("epochs")
        return {
            "name": self.name,
            "run_id": source.get("run_id"),
            "engine": source.get("engine"),
            "network": "-".join(str(n) for n in [self.inputs, *layers] if n is not None),
            "activations": list((parameters.get("activations") or {}).values()),
            "epoch": self.epoch,
            "epochs": planned,
            "final_cost": self.last_cost,
            "train_accuracy": (self.metrics or {}).get("train_accuracy"),
            "test_accuracy": (self.metrics or {}).get("test_accuracy"),
            "status": self.status,
            "resumable": self.resumable,
            "has_model": self.has_model,
            "changed": _iso(self.changed),
            "error": self.error or source.get("error"),
        }


_LOCK = threading.Lock()
_INPUTS: OrderedDict[tuple, int | None] = OrderedDict()  # model.npz's version -> its n_x


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _regular(path: Path) -> os.stat_result | None:
    """The file's status if it is a regular file (not a link, not a folder), else None."""
    try:
        found = os.lstat(path)
    except OSError:
        return None
    return found if stat.S_ISREG(found.st_mode) else None


def open_regular(path: Path) -> IO[bytes]:
    """A regular file, opened for reading without following a symbolic link (a RunError for a
    link, a folder, a device or a missing file)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise RunError(f"{path.name}: no such file") from None
    except OSError as exc:
        raise RunError(f"{path.name}: cannot be opened ({exc.strerror})") from None
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise RunError(f"{path.name}: not a regular file")
    return f


def read_bytes(path: Path, limit: int) -> bytes:
    """A regular file's bytes, opened without following a symbolic link; at most limit bytes."""
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise RunError(f"{path.name}: over {limit:,} bytes")
    return data


def parse_json(data: bytes, name: str, whole: bool = True) -> dict[str, Any]:
    """A JSON object. Whole: its costs as float64 arrays (NaN for null). Else without them: each
    long array of numbers is counted in its bytes, unparsed (a `Skipped`)."""
    value = None if whole else _brief(data)
    if value is None:
        try:
            value = json.loads(data)
        except UnicodeDecodeError:
            raise RunError(f"{name}: not UTF-8 text") from None
        except ValueError as exc:  # the position only: never what the file holds
            where = f"line {exc.lineno} column {exc.colno}" if hasattr(exc, "lineno") else "?"
            raise RunError(f"{name}: not valid JSON (at {where})") from None
        for key in LONG_ARRAYS:
            if isinstance(value, dict) and key in value:
                value[key] = _array(value[key])
    if not isinstance(value, dict):
        raise RunError(f"{name}: not a JSON object")
    return value


def _array(values: Any) -> Any:
    """A list of numbers (None for a cost that was not finite) as float64, else as it is."""
    if not isinstance(values, list) or not all(
        v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values
    ):
        return values
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _brief(data: bytes) -> dict[str, Any] | None:
    """The object with each top-level long array of numbers cut out unparsed, or None when the
    file is not laid out so (then it is parsed whole)."""
    pieces, skipped, at = [], {}, 0
    for match in _ARRAY_START.finditer(data):
        if match.start() < at:
            return None
        end = data.find(b"]", match.end())
        body = data[match.end() : end]
        if end < 0 or not _NUMBERS.fullmatch(body):
            return None
        key = match[1].decode()
        tail = body.rpartition(b",")[2]
        try:
            last = json.loads(tail) if tail.strip() else None
        except ValueError:
            return None
        count = body.count(b",") + 1 if tail.strip() else 0
        skipped[key] = Skipped(count, last if isinstance(last, int | float) else None)
        pieces += [data[at : match.start()], b'"%s": "\\u0000skipped"' % match[1]]
        at = end + 1
    if not skipped:
        return None
    try:
        value = json.loads(b"".join([*pieces, data[at:]]))
    except ValueError:
        return None
    if not isinstance(value, dict) or any(value.get(k) != "\0skipped" for k in skipped):
        return None
    value.update(skipped)
    return value


class _Parsed:
    """Parsed files, one per version (device, inode, time, size), least recently used first
    out: what the requests and streams that read one version share."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[tuple, dict[str, Any] | RunError] = OrderedDict()
        self.reading: dict[str, threading.Lock] = {}  # one reader of a file at a time

    def read(self, path: Path, whole: bool) -> dict[str, Any] | None:
        """The JSON object of a file (None if there is none): a RunError if it cannot be read.
        A new version is parsed by one thread; the others that want it wait and share it."""
        if not os.path.lexists(path):
            return None
        with _LOCK:
            reading = self.reading.setdefault(str(path), threading.Lock())
        with reading:
            return self._read(path, whole)

    def _read(self, path: Path, whole: bool) -> dict[str, Any] | None:
        found = _regular(path)
        key = None if found is None else _version(path, found, whole)
        with _LOCK:
            if key in self.items:
                self.items.move_to_end(key)
                hit = self.items[key]
                if isinstance(hit, RunError):
                    raise hit
                return hit
        with open_regular(path) as f:  # a link or a folder: a RunError, not cached
            key = _version(path, os.fstat(f.fileno()), whole)
            data = f.read(MAX_JSON_BYTES + 1)
        try:
            if len(data) > MAX_JSON_BYTES:
                raise RunError(f"{path.name}: over {MAX_JSON_BYTES:,} bytes")
            value: dict[str, Any] | RunError = parse_json(data, path.name, whole)
        except RunError as exc:
            value = exc
        del data
        with _LOCK:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        if isinstance(value, RunError):
            raise value
        return value


def _version(path: Path, found: os.stat_result, whole: bool) -> tuple:
    times = (found.st_mtime_ns, found.st_ctime_ns)
    return (str(path), found.st_dev, found.st_ino, *times, found.st_size, whole)


_WHOLE = _Parsed(KEPT_WHOLE)
_BRIEF = _Parsed(KEPT_BRIEF)


def read_json(path: Path, whole: bool = True) -> dict[str, Any] | None:
    """A JSON object from a file, or None if there is no such file (shared: never change it)."""
    return (_WHOLE if whole else _BRIEF).read(path, whole)
def _updated(progress: dict[str, Any]) -> float | None:
    try:
        return datetime.fromisoformat(
            str(progress["updated_at"]).replace("Z", "+00:00")
        ).timestamp()
    except (KeyError, ValueError):
        return None


def _alive(pid: Any) -> bool:
    """False only when that process is known not to exist any more."""
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def status_of(metrics: dict | None, progress: dict | None, resumable: bool, now: float) -> str:
    """finished (its results are there), running (its progress.json is fresh), interrupted
    (stopped, or killed: its progress.json stopped changing) or failed."""
    if metrics is not None:
        return "finished"
    if progress is None:
        return "interrupted"  # only resume/: a run stopped before progress.json existed
    status = progress.get("status")
    if status == "running":
        updated = _updated(progress)
        fresh = updated is not None and now - updated < RUNNING_WITHIN
        return "running" if fresh and _alive(progress.get("pid")) else "interrupted"
    if status == "failed":
        return "failed"
    return "interrupted"  # "interrupted", or "succeeded" without its results


class Runs:
    """The run folders under one folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def folder(self, name: str) -> Path:
        """The folder of the run called name, checked: RunError if there is none."""
        if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
            raise RunError(f"{name!r} is not a run name (letters, digits, '-', '_', '.')")
        folder = self.root / name
        try:
            mode = os.lstat(folder).st_mode
        except OSError:
            raise RunError(f"no run {name}") from None
        if not stat.S_ISDIR(mode):
            raise RunError(f"no run {name}")
        return folder

    def get(self, name: str, now: float | None = None, whole: bool = True) -> Run:
        """The run, read now: whole (with its costs), or without its costs (their number and
        the last one only: `Run.epoch`, `Run.last_cost`)."""
        folder = self.folder(name)
        now = time.time() if now is None else now
        times = [
            s.st_mtime
            for s in (_regular(folder / f) for f in ("metrics.json", "progress.json", "model.npz"))
            if s is not None
        ]
        resumable = _regular(folder / "resume" / "state.json") is not None
        try:
            metrics = read_json(folder / "metrics.json", whole)
            progress = read_json(folder / "progress.json", whole)
        except RunError as exc:
            return Run(
                name, folder, "unreadable", False, None, None, max(times, default=0), str(exc)
            )
        if metrics is None and progress is None and not resumable:
            raise RunError(f"no run {name}: no metrics.json, progress.json or resume/ in it")
        status = status_of(metrics, progress, resumable, now)
        return Run(
            name,
            folder,
            status,
            resumable and status != "finished",
            metrics,
            progress,
            max(times, default=0),
        )

    def all(self) -> list[Run]:
        """Every run folder, newest first (by when its files last changed)."""
        try:
            names = sorted(p.name for p in self.root.iterdir())
        except OSError:
            return []
        found = []
        now = time.time()
        for name in names:
            try:
                found.append(self.get(name, now, whole=False))
            except RunError:
                continue  # not a run folder (or a temporary one of a run being written)
        return sorted(found, key=lambda r: (r.changed, r.name), reverse=True)
