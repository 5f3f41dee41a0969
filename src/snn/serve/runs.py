"""The run folders under --runs, read and never written: which runs there are, how each is going.

A run folder holds, once its run succeeded, metrics.json, model.npz, neurons.npz and cost.png
(and maybe a progress.json whose status is "succeeded"). A run in progress, interrupted or
failed holds progress.json and, when it can be resumed, resume/state.json. progress.json is
rewritten atomically about once a second while its run goes (its format: docs/serve.md).

A request names a run by its folder's name, which must be a plain name (no path, no leading
dot) of a real folder directly under --runs (not a symbolic link), so no request reads outside.
Files are opened without following symbolic links, and no file over its size limit is read.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from snn.errors import SnnError
from snn.npz import read_members

RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
RUNNING_WITHIN = 30.0  # seconds: a "running" progress.json older than this is a killed run
MAX_JSON_BYTES = 64 * 2**20  # a metrics.json of a million epochs' costs is about 25 MB
STATUSES = ("running", "finished", "interrupted", "failed", "unreadable")
_INPUTS: dict[tuple[str, int, int], int | None] = {}  # model.npz (path, mtime, size) -> n_x


class RunError(SnnError):
    """A run that does not exist or cannot be read: the message says which and why."""


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
        """What W1 of its model.npz takes (its header only is read), if there is a model."""
        found = _regular(self.folder / "model.npz")
        if found is None:
            return None
        key = (str(self.folder), found.st_mtime_ns, found.st_size)
        if key not in _INPUTS:
            try:
                members = read_members(self.folder / "model.npz", "model.npz", lambda k: True)
                shape = members["W1"].shape if "W1" in members else ()
                _INPUTS[key] = int(shape[1]) if len(shape) == 2 else None
            except (SnnError, OSError):
                _INPUTS[key] = None
        return _INPUTS[key]

    @property
    def source(self) -> dict[str, Any]:
        """What the run's numbers come from: its metrics, else its progress."""
        return self.metrics or self.progress or {}

    @property
    def parameters(self) -> dict[str, Any]:
        parameters = self.source.get("parameters")
        return parameters if isinstance(parameters, dict) else {}

    @property
    def costs(self) -> list[float | None]:
        costs = self.source.get("costs")
        return costs if isinstance(costs, list) else []

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
            "epoch": len(self.costs),
            "epochs": planned,
            "final_cost": self.costs[-1] if self.costs else None,
            "train_accuracy": (self.metrics or {}).get("train_accuracy"),
            "test_accuracy": (self.metrics or {}).get("test_accuracy"),
            "status": self.status,
            "resumable": self.resumable,
            "has_model": self.has_model,
            "changed": _iso(self.changed),
            "error": self.error or source.get("error"),
        }


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _regular(path: Path) -> os.stat_result | None:
    """The file's status if it is a regular file (not a link, not a folder), else None."""
    try:
        found = os.lstat(path)
    except OSError:
        return None
    return found if stat.S_ISREG(found.st_mode) else None


def read_bytes(path: Path, limit: int) -> bytes:
    """A regular file's bytes, opened without following a symbolic link; at most limit bytes."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise RunError(f"{path.name}: no such file") from None
    except OSError as exc:
        raise RunError(f"{path.name}: cannot be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RunError(f"{path.name}: not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise RunError(f"{path.name}: over {limit:,} bytes")
    return data


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file, or None if there is no such file."""
    if not os.path.lexists(path):
        return None
    try:
        value = json.loads(read_bytes(path, MAX_JSON_BYTES))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RunError(f"{path.name}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise RunError(f"{path.name}: not a JSON object")
    return value


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

    def get(self, name: str, now: float | None = None) -> Run:
        folder = self.folder(name)
        now = time.time() if now is None else now
        times = [
            s.st_mtime
            for s in (_regular(folder / f) for f in ("metrics.json", "progress.json", "model.npz"))
            if s is not None
        ]
        resumable = _regular(folder / "resume" / "state.json") is not None
        try:
            metrics = read_json(folder / "metrics.json")
            progress = read_json(folder / "progress.json")
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
                found.append(self.get(name, now))
            except RunError:
                continue  # not a run folder (or a temporary one of a run being written)
        return sorted(found, key=lambda r: (r.changed, r.name), reverse=True)
