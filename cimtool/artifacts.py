"""Versioned, content-hashed artifact directories (DESIGN.md §3).

An artifact is a directory holding payload files and a ``manifest.json`` that records the schema,
the command line, the resolved parameters, the input artifacts with their manifest hashes, every
payload file with its sha256 and size, library versions and a small summary. Writes are atomic:
the directory is built as a sibling ``<out>.partial`` and renamed into place at the end. Reads
validate the schema and every payload hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from cimtool import __version__
from cimtool.errors import CimtoolError

MANIFEST = "manifest.json"
PARTIAL_SUFFIX = ".partial"
SCRATCH_DIR = "scratch"  # inside a partial artifact: checkpoints etc., never part of the payload

# kind -> newest schema version this cimtool writes and reads. Later stages register theirs here.
SCHEMAS: dict[str, int] = {"model": 1, "qmodel": 1, "cmap": 1, "weightmap": 1, "snn": 1, "sweep": 1,
                           "trace": 1, "neurosim": 1, "report": 1, "profile": 1}

# kind -> default sub-directory of the artifacts root
KIND_DIRS: dict[str, str] = {"model": "models", "qmodel": "qmodels", "cmap": "cmaps", "weightmap": "exports",
                             "snn": "snns", "sweep": "sweeps", "trace": "traces", "neurosim": "neurosim",
                             "report": "reports", "profile": "profiles"}

_SCHEMA_RE = re.compile(r"cimtool\.([a-z_]+)/(\d{1,6})")
# payload files every artifact of a kind must have (later stages add theirs)
REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "model": ("weights.safetensors", "arch.json", "metrics.parquet", "timing.parquet"),
    "qmodel": ("weights.safetensors", "arch.json", "metrics.parquet", "timing.parquet", "evaluation.parquet"),
    "cmap": ("cmap.parquet", "layers.parquet", "scales.parquet"),
    "snn": ("snn.json", "calibration.parquet", "thresholds.parquet", "accuracy_vs_t.parquet",
            "evaluation.parquet"),
    "sweep": ("sweep.parquet", "selection.parquet"),
    "trace": ("NetWork.csv", "trace_command.sh", "layers.parquet"),
    "neurosim": ("stdout.txt", "summary.parquet", "layers.parquet", "settings.json"),
    "report": ("report.md", "report.html", "accuracy.parquet", "sources.parquet"),
    "profile": ("profile.parquet", "ops.parquet"),
}
_LIBRARIES = ("torch", "numpy", "pandas", "pyarrow", "safetensors")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@dataclass(frozen=True)
class Artifact:
    """A validated artifact directory."""

    path: Path
    manifest: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def params(self) -> dict[str, Any]:
        return self.manifest.get("params", {})

    @property
    def summary(self) -> dict[str, Any]:
        return self.manifest.get("summary", {})

    def file(self, name: str) -> Path:
        if name not in self.manifest["files"]:
            raise CimtoolError(f"{self.path}: the artifact has no payload file '{name}'")
        return self.path / name

    def manifest_sha256(self) -> str:
        return sha256_file(self.path / MANIFEST)

    def as_input(self, role: str) -> dict[str, Any]:
        """How a later artifact records this one among its inputs."""
        return {
            "role": role,
            "kind": self.kind,
            "path": str(self.path),
            "manifest_sha256": self.manifest_sha256(),
        }


def _parse_schema(schema: Any, where: Path) -> tuple[str, int]:
    match = _SCHEMA_RE.fullmatch(schema) if isinstance(schema, str) else None
    if not match:
        raise CimtoolError(f"{where}: unrecognised schema {schema!r} (expected 'cimtool.<kind>/<n>')")
    kind, version = match.group(1), int(match.group(2))
    if kind not in SCHEMAS:
        raise CimtoolError(f"{where}: unknown artifact kind '{kind}' (known: {', '.join(SCHEMAS)})")
    if version > SCHEMAS[kind]:
        raise CimtoolError(
            f"{where}: schema {schema} is newer than this cimtool reads "
            f"(cimtool.{kind}/{SCHEMAS[kind]}); upgrade cimtool"
        )
    if version < 1:
        raise CimtoolError(f"{where}: invalid schema version in {schema!r}")
    return kind, version


_FIELD_TYPES = {"files": dict, "params": dict, "summary": dict, "inputs": list, "command": list}


def _check_structure(manifest: dict[str, Any], where: Path) -> None:
    """Field types, and payload names that stay inside the artifact directory."""
    for field, kind in _FIELD_TYPES.items():
        if field in manifest and not isinstance(manifest[field], kind):
            raise CimtoolError(f"{where}: '{field}' must be a {kind.__name__}")
    if not all(isinstance(entry, dict) for entry in manifest.get("inputs", [])):
        raise CimtoolError(f"{where}: every entry of 'inputs' must be an object")
    for name, entry in manifest["files"].items():
        parts = Path(name).parts
        if Path(name).is_absolute() or ".." in parts or not parts:
            raise CimtoolError(f"{where}: payload name {name!r} points outside the artifact")
        if not isinstance(entry, dict):
            raise CimtoolError(f"{where}: entry for {name!r} must be an object with sha256 and bytes")


def load(path: Path | str, kind: str | None = None, verify: bool = True) -> Artifact:
    """Open an artifact directory and validate its manifest and (by default) its payload hashes."""
    path = Path(path)
    if path.name.endswith(PARTIAL_SUFFIX):
        raise CimtoolError(f"{path}: an unfinished artifact (a run was interrupted); rerun it")
    if not path.exists():
        raise CimtoolError(f"{path}: no such artifact directory")
    if not path.is_dir():
        raise CimtoolError(f"{path}: not an artifact directory (it is a file)")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CimtoolError(f"{path}: not a cimtool artifact (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CimtoolError(f"{manifest_path}: corrupt manifest ({exc})") from None
    if not isinstance(manifest, dict) or "files" not in manifest or "schema" not in manifest:
        raise CimtoolError(f"{manifest_path}: not a cimtool manifest (no 'schema'/'files')")
    _check_structure(manifest, manifest_path)
    found_kind, _ = _parse_schema(manifest["schema"], manifest_path)
    if manifest.get("kind") != found_kind:
        raise CimtoolError(f"{manifest_path}: 'kind' does not match schema {manifest['schema']}")
    if kind is not None and found_kind != kind:
        raise CimtoolError(f"{path}: expected a '{kind}' artifact, found a '{found_kind}' artifact")
    missing = [n for n in REQUIRED_FILES.get(found_kind, ()) if n not in manifest["files"]]
    if missing:
        raise CimtoolError(f"{manifest_path}: a '{found_kind}' artifact needs {', '.join(missing)}")
    for name, entry in manifest["files"].items():
        file_path = path / name
        if not file_path.is_file():
            raise CimtoolError(f"{file_path}: payload file listed in the manifest is missing")
        if verify:
            if file_path.stat().st_size != entry.get("bytes"):
                raise CimtoolError(f"{file_path}: size differs from the manifest (file was altered)")
            if sha256_file(file_path) != entry.get("sha256"):
                raise CimtoolError(f"{file_path}: sha256 differs from the manifest (file was altered)")
    return Artifact(path=path, manifest=manifest)


def default_out(root: Path, kind: str, name: str) -> Path:
    """A new directory under the artifacts root: <root>/<kind dir>/<name>-<UTC timestamp>."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = root / KIND_DIRS.get(kind, kind) / f"{name}-{stamp}"
    out, n = base, 1
    while out.exists() or _partial_of(out).exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _partial_of(out: Path) -> Path:
    return out.with_name(out.name + PARTIAL_SUFFIX)


def check_out(out: Path, force: bool) -> None:
    """Refuse to overwrite an existing artifact unless --force (checked before any work).

    --force replaces only a cimtool artifact (a directory with a manifest) or an empty directory,
    never an arbitrary folder of the user's."""
    if not out.name or out.name in (".", ".."):
        raise CimtoolError(f"{out}: not a usable artifact directory name")
    if not out.exists():
        return
    if not out.is_dir():
        raise CimtoolError(f"{out}: exists and is not a directory")
    if not force:
        raise CimtoolError(f"{out}: already exists (pass --force to replace it)")
    if not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise CimtoolError(f"{out}: exists and is not a cimtool artifact; --force replaces only "
                           "artifacts (or empty directories)")


def find_resumable(search_dir: Path, params_sha256: str) -> Path | None:
    """The newest interrupted run under ``search_dir`` whose parameters hash matches."""
    if not search_dir.is_dir():
        return None
    candidates = []
    for partial in search_dir.glob(f"*{PARTIAL_SUFFIX}"):
        info = partial / "partial.json"
        try:
            if json.loads(info.read_text()).get("params_sha256") == params_sha256:
                candidates.append(partial)
        except (OSError, ValueError, AttributeError):  # unreadable: not a candidate
            continue
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


class ArtifactWriter:
    """Builds an artifact in ``<out>.partial`` and moves it into place on ``commit``.

    Used as a context manager: a user error (CimtoolError) removes the partial directory. With
    ``keep_on_interrupt``, Ctrl-C and crashes of a run that has checkpoints keep it, so that
    ``--resume`` can continue; so does a SIGKILL. No reader accepts a partial directory.
    """

    def __init__(self, out: Path, kind: str, params: dict[str, Any], force: bool = False,
                 resume: bool = False, keep_on_interrupt: bool = False) -> None:
        if kind not in SCHEMAS:
            raise ValueError(f"unregistered artifact kind {kind}")
        self.out = out
        self.kind = kind
        self.params = params
        self.force = force
        self.keep_on_interrupt = keep_on_interrupt
        self.partial = _partial_of(out)
        self.resumed = False
        self._resume = resume
        self._created_parents: list[Path] = []  # removed again if the run fails
        self.discarded_partial = False

    @property
    def scratch(self) -> Path:
        return self.partial / SCRATCH_DIR

    def __enter__(self) -> ArtifactWriter:
        check_out(self.out, self.force)
        params_sha = sha256_json(self.params)
        info_path = self.partial / "partial.json"
        if self._resume and info_path.is_file():
            try:
                info = json.loads(info_path.read_text())
                if not isinstance(info, dict):
                    raise ValueError("not an object")
            except (OSError, ValueError) as exc:
                raise CimtoolError(f"{info_path}: unreadable ({exc}); delete {self.partial} "
                                   "to start afresh") from None
            if info.get("params_sha256") != params_sha:
                raise CimtoolError(
                    f"{self.partial}: --resume with different parameters than the interrupted run"
                )
            self.resumed = True
        else:
            if self.partial.exists():  # an interrupted run that the user did not --resume
                self.discarded_partial = True
                shutil.rmtree(self.partial)
            self._created_parents = [d for d in self.partial.parents if not d.exists()]
            try:
                self.partial.mkdir(parents=True)
            except OSError as exc:
                raise CimtoolError(f"{self.out}: cannot create the artifact directory "
                                   f"({exc.strerror})") from None
            info_path.write_text(json.dumps({"params_sha256": params_sha, "params": self.params},
                                            sort_keys=True, indent=1))
        self.scratch.mkdir(exist_ok=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            return
        # keep checkpoints for --resume after Ctrl-C, and after a crash (a bug, a full disk) of a
        # run that has checkpoints; a user error (CimtoolError) leaves nothing behind
        has_checkpoint = self.scratch.is_dir() and any(self.scratch.iterdir())
        if self.keep_on_interrupt and (exc_type is KeyboardInterrupt or (
                has_checkpoint and not issubclass(exc_type, CimtoolError))):
            return
        shutil.rmtree(self.partial, ignore_errors=True)
        for parent in self._created_parents:  # deepest first; only if still empty
            try:
                parent.rmdir()
            except OSError:
                break

    def path(self, name: str) -> Path:
        """Where to write payload file ``name`` inside the partial directory."""
        return self.partial / name

    def commit(self, inputs: list[dict[str, Any]], summary: dict[str, Any],
               extra: dict[str, Any] | None = None) -> Path:
        """Hash the payload, write the manifest and atomically move the directory into place."""
        shutil.rmtree(self.scratch, ignore_errors=True)
        (self.partial / "partial.json").unlink(missing_ok=True)
        files = {}
        for file_path in sorted(p for p in self.partial.rglob("*") if p.is_file()):
            rel = file_path.relative_to(self.partial).as_posix()
            files[rel] = {"sha256": sha256_file(file_path), "bytes": file_path.stat().st_size}
        manifest = {
            "schema": f"cimtool.{self.kind}/{SCHEMAS[self.kind]}",
            "kind": self.kind,
            "cimtool_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "params": self.params,
            "inputs": inputs,
            "files": files,
            "libraries": library_versions(),
            "summary": summary,
            **(extra or {}),
        }
        tmp = self.partial / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, self.partial / MANIFEST)
        if self.out.exists():  # --force: swap the old artifact out, then delete it
            trash = self.out.with_name(f".{self.out.name}.old-{time.time_ns()}")
            os.replace(self.out, trash)
            os.replace(self.partial, self.out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self.partial, self.out)
        return self.out
