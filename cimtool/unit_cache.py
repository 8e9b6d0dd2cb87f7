"""Finished units of work, kept by content so that a rerun computes only what is missing.

A unit's key is the SHA-256 of everything its result depends on: the model artifact's manifest,
the data it reads, the unit's configuration, the seed and the code (``code_sha256``: every source
file of the installed cimtool, so an edited cimtool never reuses an older result). Results are
JSON (floats round-trip exactly), one file per key, written atomically: a kill leaves either the
whole file or none.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import cimtool


@functools.cache
def code_sha256() -> str:
    """SHA-256 over cimtool's own source files (path and bytes, in path order)."""
    root = Path(cimtool.__file__).parent
    digest = hashlib.sha256(cimtool.__version__.encode())
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def unit_key(**content: Any) -> str:
    """The key of a unit whose result depends on ``content`` (JSON-able) and on the code."""
    payload = json.dumps({"code": code_sha256(), **content}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class UnitCache:
    """``{key}.json`` files in one directory (a partial artifact's scratch)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> Any | None:
        try:
            return json.loads(self._path(key).read_text())
        except (OSError, ValueError):  # absent, or unreadable: computed again
            return None

    def put(self, key: str, result: Any) -> None:
        path = self._path(key)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, path)

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*.json"))
