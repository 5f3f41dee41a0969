"""Reading .npz archives that may come from anyone: no pickles, and nothing unpacked unchecked.

Every member's name, .npy header (dtype, shape) and declared uncompressed size is checked before
any array is read, so a zip bomb or a malformed member is one line, not a traceback or gigabytes
of memory. `snn.predict.read_weights` (models) and `snn.inspection` (neurons.npz) use it.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from snn.errors import SnnError


class NpzError(SnnError):
    """An .npz cannot be read, or is not what it must be: the message names the file."""


# The most an .npz may unpack to. Every function has 1024 MB of memory and holds a model twice
# (the Evaluate function its arrays and the archive it writes, the Predict function the archive
# and its arrays), so no model over half of that is written or served on AWS. 512 MiB still holds
# the largest first layer parameters.json allows on 64 x 64 pictures (4096 x 12288 float64,
# 403 MB) and the largest neurons.npz (about 100 epochs x 6 statistics x 32 layers x 4096).
MAX_NPZ_BYTES = 512 * 2**20


@dataclass(frozen=True)
class Member:
    """One array of an .npz, as its zip entry and .npy header describe it (nothing read yet)."""

    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int  # bytes of .npy header before the data

    @property
    def key(self) -> str:
        return self.info.filename.removesuffix(".npy")

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _open_archive(source: str | Path | bytes, name: str, what: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise NpzError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise NpzError(f"{name}: is a folder, not an .npz {what}") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        if isinstance(source, bytes):
            magic = source[:6]
        else:
            try:
                with open(source, "rb") as f:
                    magic = f.read(6)
            except OSError:
                magic = b""
        if magic == b"\x93NUMPY":
            raise NpzError(f"{name}: a single array, not an .npz {what}") from None
        raise NpzError(f"{name}: not a readable .npz {what} ({exc})") from None


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> Member:
    """The member's .npy header, read from the start of its stream (a few hundred bytes)."""
    member = f"{name}: {info.filename}"
    if info.flag_bits & 0x1:
        raise NpzError(f"{member} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise NpzError(f"{member} uses a compression other than none or deflate")
    try:
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise NpzError(f"{member} is a .npy of version {version}, not 1.0 or 2.0")
            offset = f.tell()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise NpzError(f"{member} is not a readable .npy array ({exc})") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise NpzError(f"{member} holds {dtype}, not numbers")
    if not dtype.isnative:
        raise NpzError(f"{member} holds {dtype.str}, not in this machine's byte order")
    found = Member(info, tuple(shape), dtype, fortran_order, offset)
    # A zip entry declares its uncompressed size, and zipfile never unpacks more than that:
    # a size other than what the shape needs is a bomb (or a corrupt file), refused unread.
    if info.file_size != offset + found.nbytes:
        raise NpzError(
            f"{member} declares {info.file_size:,} bytes but a {dtype} array of shape "
            f"{found.shape} takes {offset + found.nbytes:,}: refused unread"
        )
    return found


def npz_members(
    archive: zipfile.ZipFile, name: str, valid: Callable[[str], bool], max_bytes: int
) -> dict[str, Member]:
    """Every member of an .npz, checked before any array is read: a name that `valid` accepts
    (without .npy), once; a numeric .npy header; a declared size that its shape needs, and all
    of them together at most max_bytes."""
    infos = archive.infolist()
    total = sum(info.file_size for info in infos)
    if total > max_bytes:
        raise NpzError(
            f"{name}: unpacks to {total:,} bytes, over the limit of {max_bytes:,}: refused unread"
        )
    members: dict[str, Member] = {}
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise NpzError(f"{name}: member {info.filename!r} is not a .npy array")
        if not valid(info.filename.removesuffix(".npy")):
            raise NpzError(f"{name}: unexpected member {info.filename!r}")
        if info.filename.removesuffix(".npy") in members:
            raise NpzError(f"{name}: member {info.filename!r} appears twice")
        member = _member(archive, info, name)
        members[member.key] = member
    return members


def read_member(archive: zipfile.ZipFile, member: Member, name: str) -> np.ndarray:
    """The array of a member checked by `npz_members`: exactly its declared bytes, CRC checked."""
    data = bytearray(member.nbytes)
    view = memoryview(data)
    try:
        with archive.open(member.info) as f:
            f.read(member.offset)
            filled = 0
            while filled < len(data) and (chunk := f.read(min(len(data) - filled, 1 << 20))):
                view[filled : filled + len(chunk)] = chunk
                filled += len(chunk)
            if filled < len(data) or f.read(1):  # the last read checks the CRC
                raise NpzError(f"{name}: {member.info.filename} is truncated")
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise NpzError(f"{name}: {member.info.filename} cannot be read ({exc})") from None
    order = "F" if member.fortran_order else "C"
    return np.frombuffer(data, dtype=member.dtype).reshape(member.shape, order=order)


def read_members(
    source: str | Path | bytes, name: str, valid: Callable[[str], bool], what: str = "archive"
) -> dict[str, Member]:
    """The members of an .npz, checked as `npz_members` checks them; no array is read."""
    with _open_archive(source, name, what) as archive:
        return npz_members(archive, name, valid, MAX_NPZ_BYTES)


def read_npz(
    source: str | Path | bytes,
    name: str,
    valid: Callable[[str], bool],
    check: Callable[[dict[str, Member]], None] | None = None,
    max_bytes: int | None = None,
    what: str = "archive",
) -> dict[str, np.ndarray]:
    """The arrays of an .npz (a path or its bytes), never unpickled, read only after every
    member passed `npz_members` and `check` (which sees the headers, not the data). max_bytes:
    default MAX_NPZ_BYTES."""
    with _open_archive(source, name, what) as archive:
        members = npz_members(archive, name, valid, max_bytes or MAX_NPZ_BYTES)
        if check is not None:
            check(members)
        return {key: read_member(archive, m, name) for key, m in members.items()}
