"""The run folder: the results of a run, written whole or not at all, and, while the run goes,
how it is going and what a later process needs to resume it.

    metrics.json, model.npz, neurons.npz, cost.png   the results (a run that succeeded)
    progress.json                                    how the run is going, written atomically
                                                     about once a second (docs/serve.md)
    resume/                                          what `snn train --resume` needs
    .lock                                            held by the one process writing the folder

One process writes a folder at a time (an advisory lock, released by the system however the
process ends). The results are written into a folder beside it, which then takes its place in
one rename, so a reader sees either the run in progress or the finished run, never a mix.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from snn.errors import SnnError
from snn.report import RunResult, write_results

LOCK = ".lock"
PROGRESS = "progress.json"
RESUME = "resume"
PROGRESS_FORMAT = 1
PARTIAL = ".results-"
_PARTIAL_NAME = re.compile(r"\..+\.results-[a-z0-9_]{8}")
_RUN_FILE = re.compile(
    r"metrics\.json|model\.npz|neurons\.npz|cost\.png|progress\.json|resume|\.lock|\..+\.tmp"
)


class FolderError(SnnError):
    """The run folder cannot be used (busy, not empty, not writable)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: Path, data: Any) -> None:
    """Strict JSON (no NaN), written to a temporary file beside `path` and renamed over it."""
    text = json.dumps(data, indent=1, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class RunFolder:
    """A run folder, locked by this process for as long as it is open (`with RunFolder(...)`)."""

    def __init__(self, path: str | Path, new: bool = True) -> None:
        self.path = Path(path)
        self.new = new
        self._fd: int | None = None
        self.created: list[Path] = []  # the folders __enter__ made, the run folder first

    @property
    def resume_dir(self) -> Path:
        return self.path / RESUME

    def __enter__(self) -> RunFolder:
        if not self.new and not self.path.is_dir():
            raise FolderError(f"{self.path}: no such run folder")
        created = [p for p in (self.path, *self.path.parents) if not p.exists()]
        self.created = created
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            self.discard()
            raise FolderError(f"{self.path}: cannot be used as the run folder ({exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderError(
                f"{self.path}: another snn process is writing this run folder"
            ) from None
        self._fd = fd
        if self.new and any(p.name != LOCK for p in self.path.iterdir()):
            self.close()
            raise FolderError(
                f"{self.path}: the run folder exists and is not empty; choose another --out"
            )
        # The results are put in place from a folder beside this one: both must be writable
        # now, not only once the run has trained.
        for folder in (self.path, self.path.resolve().parent):
            if not os.access(folder, os.W_OK | os.X_OK):
                self.discard()
                raise FolderError(f"{folder}: not writable, the run's results could not be kept")
        sweep(self.path.resolve().parent)
        return self

    def discard(self) -> None:
        """Remove what this process made of a new run folder: the folder, if it made it (and the
        parents it made, if empty), else its files only (a user's empty --out stays)."""
        if not self.new:
            return
        if self.path in self.created:
            shutil.rmtree(self.path, ignore_errors=True)
            for parent in self.created[1:]:
                with contextlib.suppress(OSError):
                    parent.rmdir()
        elif self.path.is_dir():
            for entry in self.path.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        entry.unlink()
        self.close()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def write_progress(self, progress: dict[str, Any]) -> None:
        write_json(self.path / PROGRESS, {"format": PROGRESS_FORMAT, **progress})

    def read_progress(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / PROGRESS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def finish(self, result: RunResult, progress: dict[str, Any] | None = None) -> None:
        """Put the results in place of the folder: written beside it, then swapped in by one
        rename. What the run kept while it went (resume state) goes with the old folder."""
        parent = self.path.parent
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}{PARTIAL}", dir=parent))
        # Locked while it is written, so that `sweep` leaves it alone; one that a killed process
        # left behind is removed by the next run or resume in the same parent folder.
        fd = os.open(tmp, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.chmod(tmp, 0o777 & ~_umask())
            write_results(tmp, result)
            if progress is not None:
                write_json(tmp / PROGRESS, {"format": PROGRESS_FORMAT, **progress})
            _swap(tmp, self.path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            os.close(fd)


def sweep(parent: Path) -> None:
    """Remove the partial results folders that processes killed while they wrote them left in
    `parent` (hidden, named `.RUN.results-XXXXXXXX`); one still locked is being written."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        if not _PARTIAL_NAME.fullmatch(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        try:  # only what a run folder holds: never a folder of the user's
            if not all(_RUN_FILE.fullmatch(p.name) for p in entry.iterdir()):
                continue
        except OSError:
            continue
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass  # locked: being written
        finally:
            os.close(fd)


def _swap(new: Path, target: Path) -> None:
    """Give `target` the contents of `new` at once (Linux's RENAME_EXCHANGE); where that is not
    available, in two renames (a crash between them leaves both folders beside each other)."""
    if _exchange(new, target):
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.rename(target, old)
    os.rename(new, target)
    os.rename(old, new)  # so that the caller removes it


def _exchange(a: Path, b: Path) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))
