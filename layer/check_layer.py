"""Check a built layer folder: every installed wheel is pure Python or built for CPython X.Y on
manylinux aarch64 with a glibc no newer than the runtime's, and every shared library in it is an
AArch64 ELF file. Exits non-zero with one line per problem.

Usage: python check_layer.py LAYER_PYTHON_FOLDER PYTHON_VERSION (for example 3.13)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# The runtime's glibc: python3.12 and later run on Amazon Linux 2023 (glibc 2.34).
RUNTIME_GLIBC = (2, 34)
ELF_MAGIC = b"\x7fELF"
EM_AARCH64 = 183  # e_machine of a 64-bit ARM ELF file
MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_aarch64|manylinux2014_aarch64")


def tag_problem(tag: str, cpython: str) -> str | None:
    """Why a wheel tag (python-abi-platform) cannot run on the runtime, or None if it can."""
    python, abi, platform = tag.split("-")
    if platform == "any":
        return None if python.startswith("py") else f"{tag}: not a pure Python wheel"
    # cpXY-cpXY is built for that CPython alone; cpXY-abi3 runs on CPython X.Y and later.
    stable = abi == "abi3" and python.startswith("cp") and _minor(python) <= _minor(cpython)
    if not stable and (python != cpython or abi != cpython):
        return f"{tag}: built for another Python than {cpython}"
    match = MANYLINUX.fullmatch(platform)
    if not match:
        return f"{tag}: not a manylinux aarch64 wheel"
    glibc = (int(match[1]), int(match[2])) if match[1] else (2, 17)
    if glibc > RUNTIME_GLIBC:
        return f"{tag}: needs glibc {glibc[0]}.{glibc[1]}, the runtime has 2.34"
    return None


def _minor(cp: str) -> int:
    """The minor version of a CPython 3 tag: cp313 -> 13."""
    return int(cp.removeprefix("cp3") or 0)


def problems(folder: Path, version: str) -> list[str]:
    cpython = "cp" + version.replace(".", "")
    found = []
    wheels = sorted(folder.glob("*.dist-info/WHEEL"))
    if not wheels:
        found.append(f"{folder}: no installed wheels")
    for wheel in wheels:
        tags = [
            line.split(":", 1)[1].strip()
            for line in wheel.read_text(encoding="utf-8").splitlines()
            if line.startswith("Tag:")
        ]
        # A wheel runs if any one of its tags fits (a wheel may carry several platforms).
        verdicts = [tag_problem(tag, cpython) for tag in tags]
        if not tags or all(verdicts):
            found.append(f"{wheel.parent.name}: {'; '.join(v for v in verdicts if v) or 'no tag'}")
    for library in sorted(folder.rglob("*.so*")):
        if not library.is_file() or library.is_symlink():
            continue
        with library.open("rb") as f:
            header = f.read(20)
        if header[:4] != ELF_MAGIC:
            continue
        byteorder = "little" if header[5] == 1 else "big"
        if int.from_bytes(header[18:20], byteorder) != EM_AARCH64:
            found.append(f"{library.relative_to(folder)}: not an AArch64 library")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: check_layer.py LAYER_PYTHON_FOLDER PYTHON_VERSION", file=sys.stderr)
        return 2
    folder, version = Path(argv[1]), argv[2]
    found = problems(folder, version)
    for problem in found:
        print(f"layer: {problem}", file=sys.stderr)
    if not found:
        count = len(list(folder.glob("*.dist-info")))
        print(
            f"layer: {count} wheels for CPython {version} on manylinux aarch64, "
            "every shared library AArch64"
        )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
