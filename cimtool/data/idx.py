"""Reader for the IDX format of the official MNIST files (gzipped or not), with validation."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from cimtool.errors import CimtoolError

# IDX magic: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions.
IMAGES_MAGIC = 0x00000803  # 2051
LABELS_MAGIC = 0x00000801  # 2049


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes; refuse a wrong magic number or a truncated file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise CimtoolError(f"{path}: cannot read IDX file ({exc})") from None
    if len(raw) < 4:
        raise CimtoolError(f"{path}: truncated IDX file ({len(raw)} bytes, no header)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise CimtoolError(
            f"{path}: wrong IDX magic number 0x{magic:08x} (expected 0x{expected_magic:08x})"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CimtoolError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if 0 in dims:
        raise CimtoolError(f"{path}: empty IDX file (dimensions {dims})")
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise CimtoolError(
            f"{path}: {what}: {len(raw)} bytes, the header {dims} implies {expected}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
