"""Versioned, content-hashed artifact directories (docs/design.md#artifact-contract).

An artifact is a directory holding payload files and a ``manifest.json`` that records the schema,
the command line, the resolved parameters, the input artifacts with their manifest hashes, every
payload file with its sha256 and size, library versions and a small summary. Writes are atomic:
the directory is built as a sibling ``<out>.partial`` and renamed into place at the end. Reads
validate the schema and every payload hash.

Output safety (what every stage gets through ``check_out`` and ``ArtifactWriter``): ``--out`` is
resolved before any work (``resolve_out``: no symlink loop, no dangling symlink, a writable parent
directory); it may not be, contain or lie inside an input artifact of the run
(``check_not_input``); and one run at a time writes to it (``OutputLock``: ``<out>.lock``, an
``flock`` that the kernel releases when its process dies, holding the owner's PID for the message
a second run gets). A ``.partial`` left by a dead run is removed by the next run that writes next
to it, unless it holds checkpoints that ``--resume`` can continue from.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: a PID lock file instead (see OutputLock)
    fcntl = None

from cimtool import __version__
from cimtool.errors import CimtoolError, IncompleteRun

MANIFEST = "manifest.json"
PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".lock"  # <out>.lock: held by the one run writing <out>
PARTIAL_INFO = "partial.json"  # inside a partial artifact: parameters hash, owner, resumable
SCRATCH_DIR = "scratch"  # inside a partial artifact: checkpoints etc., never part of the payload

_SCHEMA_RE = re.compile(r"cimtool\.([a-z_]+)/(\d{1,6})")


@dataclass(frozen=True)
class Kind:
    """One artifact kind: the newest schema version this cimtool writes and reads, the default
    sub-directory of the artifacts root, and the payload files every artifact of it must have."""

    name: str
    version: int
    directory: str
    required: tuple[str, ...]


_MODEL_FILES = ("weights.safetensors", "arch.json", "metrics.parquet", "timing.parquet")
KINDS = (  # each written by the stage of the same name (cmap: map-weights, weightmap: export-weightmap)
    Kind("model", 1, "models", _MODEL_FILES),
    Kind("qmodel", 1, "qmodels", (*_MODEL_FILES, "evaluation.parquet")),
    Kind("cmap", 1, "cmaps", ("cmap.parquet", "layers.parquet", "scales.parquet")),
    Kind("weightmap", 1, "exports", ()),
    Kind("snn", 1, "snns", ("snn.json", "calibration.parquet", "thresholds.parquet", "accuracy_vs_t.parquet",
                            "evaluation.parquet")),
    Kind("sweep", 1, "sweeps", ("sweep.parquet", "selection.parquet")),
    Kind("trace", 1, "traces", ("NetWork.csv", "trace_command.sh", "layers.parquet")),
    Kind("neurosim", 1, "neurosim", ("stdout.txt", "summary.parquet", "layers.parquet", "settings.json")),
    Kind("report", 1, "reports", ("report.md", "report.html", "accuracy.parquet", "sources.parquet")),
    Kind("profile", 1, "profiles", ("profile.parquet", "ops.parquet")),
    Kind("device", 1, "devices", ("card.toml", "fit.parquet", "points.parquet")),
)
# the lookups the reader and writer use, one view of KINDS each
SCHEMAS: dict[str, int] = {k.name: k.version for k in KINDS}
KIND_DIRS: dict[str, str] = {k.name: k.directory for k in KINDS}
REQUIRED_FILES: dict[str, tuple[str, ...]] = {k.name: k.required for k in KINDS if k.required}

_LIBRARIES = ("torch", "numpy", "pandas", "pyarrow", "safetensors")
# significant digits of the floats in a manifest's summary: the rest is arithmetic noise
# (0.8990000000000002); the payloads and the params (which readers rebuild from) keep every digit
SUMMARY_DIGITS = 12


def rounded(value: Any) -> Any:
    """``value`` with every float (also inside dicts and lists) rounded to ``SUMMARY_DIGITS``
    significant digits."""
    if isinstance(value, float):
        return float(f"{value:.{SUMMARY_DIGITS}g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


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
    while out.exists() or _partial_of(out).exists() or _lock_of(out).exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _partial_of(out: Path) -> Path:
    return out.with_name(out.name + PARTIAL_SUFFIX)


def _lock_of(out: Path) -> Path:
    return out.with_name(out.name + LOCK_SUFFIX)


def _check_name(out: Path) -> None:
    if not out.name or out.name in (".", "..") or out.name.endswith((PARTIAL_SUFFIX, LOCK_SUFFIX)):
        raise CimtoolError(f"{out}: not a usable artifact directory name")


def _real(path: Path, what: str) -> Path:
    """``path`` with every symlink resolved (it need not exist); a symlink loop is a user error."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as exc:  # RuntimeError: a loop (Python < 3.13); OSError: ELOOP
        reason = "a symlink loop" if isinstance(exc, RuntimeError) or getattr(
            exc, "errno", None) == errno.ELOOP else (getattr(exc, "strerror", None) or str(exc))
        raise CimtoolError(f"{path}: {what} path cannot be resolved ({reason})") from None


def resolve_out(out: Path | str) -> Path:
    """The real location ``--out`` names, checked before any work is done.

    Returns the absolute path with every symlink resolved (a symlink to an artifact directory is
    written through: the artifact it points to is replaced, the link stays). Raises CimtoolError,
    one line naming the path, for a name that cannot be an artifact directory (``.``, ``..``,
    ``*.partial``, ``*.lock``), a symlink loop, a dangling symlink (it would be replaced by a
    directory, not written through), an existing parent or ancestor that is not a directory, and a
    parent directory the run cannot write in (the ``.partial`` and ``.lock`` siblings live there).
    Missing parent directories are fine: the writer creates them."""
    out = Path(out)
    _check_name(out)
    if out.is_symlink():
        try:
            os.stat(out)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise CimtoolError(f"{out}: --out is a symlink loop") from None
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise CimtoolError(f"{out}: --out is a dangling symlink (to {os.readlink(out)}); "
                                   "remove it or give another --out") from None
            raise CimtoolError(f"{out}: --out cannot be read ({exc.strerror})") from None
    real = _real(out, "the --out")
    _check_name(real)
    ancestor = real.parent
    try:
        while not ancestor.exists():  # the nearest existing ancestor: where the writer's mkdir starts
            ancestor = ancestor.parent
    except OSError as exc:  # e.g. a directory on the way that may not be searched
        raise CimtoolError(f"{out}: cannot create the artifact there, {ancestor} cannot be accessed "
                           f"({exc.strerror})") from None
    if not ancestor.is_dir():
        raise CimtoolError(f"{out}: cannot create the artifact there, {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CimtoolError(f"{out}: cannot create the artifact there, {ancestor} is not writable")
    return real


def check_not_input(out: Path | str, inputs: Iterable[Path | str]) -> None:
    """Refuse an ``--out`` that is, contains or lies inside an input artifact of the run.

    Paths are compared resolved (symlinks, ``..``, relative spellings), so ``--out M --force``
    with ``--model M`` — which would replace the model by its own map — is caught however either is
    spelled. Raises CimtoolError, one line naming both paths; call it before any work, once the
    run's input artifacts are known (the writer checks again at ``commit``)."""
    real_out = _real(Path(out), "the --out")
    for source in inputs:
        real_in = _real(Path(source), "an input artifact's")
        if real_out == real_in:
            problem = "is the input artifact"
        elif real_in in real_out.parents:
            problem = "lies inside the input artifact"
        elif real_out in real_in.parents:
            problem = "contains the input artifact"
        else:
            continue
        raise CimtoolError(f"--out {out} {problem} {source}; write the result to another --out")


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (True when that cannot be told)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill would terminate it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


class Terminated(KeyboardInterrupt):
    """SIGTERM while an output is locked: raised like Ctrl-C, so that a partial artifact is removed
    (or kept for ``--resume`` when it has checkpoints) and the lock released before the exit."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated(f"terminated by signal {signum}")


# lock path -> [lock, depth]: the locks this process holds (a stage may lock its --out early, and
# the writer then takes the same lock again)
_HELD: dict[str, list] = {}
_HELD_GUARD = threading.Lock()


class OutputLock:
    """Exclusive right to write ``out`` (and its ``.partial``): the file ``<out>.lock``.

    ``acquire`` creates missing parent directories and the lock file, takes an ``flock`` on it and
    writes this process's PID and host into it; a second run on the same ``--out`` (in any
    process) gets a CimtoolError naming the holder's PID. The kernel drops an ``flock`` when its
    process dies, even on SIGKILL, so a lock file left by a dead run is simply taken over. Without
    ``fcntl`` (not POSIX) the file is created with ``O_EXCL`` and a dead holder's file (its PID no
    longer running) is replaced. ``release`` deletes the lock file and the parent directories
    ``acquire`` created, if they are still empty. Re-entrant within one process. While held (in the
    main thread), SIGTERM raises ``Terminated`` so that writers clean up before the exit.
    Use as a context manager, or call ``acquire``/``release`` (always in ``try``/``finally``)."""

    def __init__(self, out: Path | str) -> None:
        self.out = Path(out)
        self.path = _lock_of(_real(self.out, "the --out"))
        self._fd: int | None = None
        self._created: list[Path] = []
        self._old_sigterm: Any = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release()

    def acquire(self) -> None:
        key = str(self.path)
        with _HELD_GUARD:
            held = _HELD.get(key)
            if held is not None:
                held[1] += 1
                return
        self._created = [d for d in self.path.parents if not d.exists()]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._created = []
            raise CimtoolError(f"{self.out}: cannot create the artifact directory ({exc.strerror})") from None
        try:
            self._fd = self._lock_flock() if fcntl is not None else self._lock_exclusive()
        except BaseException:
            self._remove_created()
            raise
        with _HELD_GUARD:
            _HELD[key] = [self, 1]
        self._catch_sigterm()

    def release(self) -> None:
        key = str(self.path)
        with _HELD_GUARD:
            held = _HELD.get(key)
            if held is None:
                return
            held[1] -= 1
            if held[1] > 0:
                return
            del _HELD[key]
            owner = held[0]
        owner._restore_sigterm()
        fd, owner._fd = owner._fd, None
        try:
            owner.path.unlink(missing_ok=True)  # before closing: nobody takes over a file being deleted
        except OSError:
            pass
        if fd is not None:
            os.close(fd)
        owner._remove_created()

    def _remove_created(self) -> None:
        for parent in self._created:  # deepest first; only while still empty
            try:
                parent.rmdir()
            except OSError:
                break
        self._created = []

    def _describe(self, text: str) -> str:
        fields = text.split()
        if not fields or not fields[0].isdigit():
            return "another cimtool run"
        where = f" on {fields[1]}" if len(fields) > 1 and fields[1] != socket.gethostname() else ""
        return f"another cimtool run (PID {fields[0]}{where})"

    def _busy(self, text: str) -> CimtoolError:
        return CimtoolError(f"{self.out}: {self._describe(text)} is writing this artifact; wait for it "
                            f"to finish or stop it (lock {self.path})")

    def _stamp(self, fd: int) -> None:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())

    def _lock_flock(self) -> int:
        for _ in range(100):  # a retry per lock file deleted under us by a releasing run
            try:
                try:
                    fd, created = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
                except FileExistsError:
                    fd, created = os.open(self.path, os.O_RDWR), False
            except FileNotFoundError:
                continue  # deleted between the two opens
            except OSError as exc:
                raise CimtoolError(f"{self.path}: cannot create the lock file ({exc.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)  # a file system without flock: fall back to the PID file
                    if created:
                        self.path.unlink(missing_ok=True)
                    return self._lock_exclusive()
                text = ""
                for _ in range(20):  # the holder writes its PID just after locking
                    text = os.pread(fd, 200, 0).decode(errors="replace")
                    if text.strip():
                        break
                    time.sleep(0.01)
                os.close(fd)
                raise self._busy(text) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self._stamp(fd)
                return fd
            os.close(fd)  # locked a file its last holder had just deleted: take the new one
        raise CimtoolError(f"{self.path}: cannot take the lock (it keeps changing)")

    def _lock_exclusive(self) -> int:
        """PID lock file: created with O_EXCL; a file whose PID is no longer running is replaced."""
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    text = self.path.read_text(errors="replace")
                except FileNotFoundError:
                    continue
                fields = text.split()
                here = len(fields) < 2 or fields[1] == socket.gethostname()
                if fields and fields[0].isdigit() and here and not _pid_alive(int(fields[0])):
                    self.path.unlink(missing_ok=True)  # its owner died: stale
                    continue
                elif not fields and time.time() - self.path.stat().st_mtime > 60:
                    self.path.unlink(missing_ok=True)  # empty for a minute: its owner died creating it
                    continue
                else:
                    raise self._busy(text) from None
            except OSError as exc:
                raise CimtoolError(f"{self.path}: cannot create the lock file ({exc.strerror})") from None
            self._stamp(fd)
            return fd
        raise CimtoolError(f"{self.path}: cannot take the lock (it keeps changing)")

    def _catch_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                self._old_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError, AttributeError):  # no SIGTERM here, or not allowed
            self._old_sigterm = None

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is None:
            return
        try:
            if signal.getsignal(signal.SIGTERM) is _on_sigterm:
                signal.signal(signal.SIGTERM, self._old_sigterm)
        except (ValueError, OSError):
            pass
        self._old_sigterm = None


def _partial_is_resumable(partial: Path) -> bool:
    """Whether ``--resume`` could continue a partial: its run asked for that and left checkpoints."""
    try:
        info = json.loads((partial / PARTIAL_INFO).read_text())
    except (OSError, ValueError):
        info = None
    wants = info.get("resumable", True) if isinstance(info, dict) else False
    scratch = partial / SCRATCH_DIR
    try:
        return bool(wants) and scratch.is_dir() and any(scratch.iterdir())
    except OSError:
        return False


def remove_dead_partials(folder: Path | str, keep: Iterable[Path | str] = ()) -> list[Path]:
    """Delete the ``*.partial`` directories in ``folder`` that no running cimtool owns and that
    ``--resume`` cannot continue (no checkpoints, or a stage that does not resume); returns them.

    Only cimtool's own partials are touched (a ``partial.json`` inside), never those in
    ``keep`` or held by a live run (its lock is taken to make sure). The writer calls this for the
    folder it writes into, so a run killed by SIGKILL leaves its partial only until the next run
    there."""
    folder = Path(folder)
    kept = {os.path.abspath(p) for p in keep}
    removed = []
    try:
        partials = [p for p in folder.glob(f"*{PARTIAL_SUFFIX}") if p.is_dir() and not p.is_symlink()]
    except OSError:
        return removed
    for partial in partials:
        if os.path.abspath(partial) in kept:
            continue
        try:
            ours = (partial / PARTIAL_INFO).is_file()
        except OSError:
            continue
        if not ours or _partial_is_resumable(partial):
            continue
        out = partial.with_name(partial.name[: -len(PARTIAL_SUFFIX)])
        if str(_lock_of(_real(out, "a partial artifact's"))) in _HELD:
            continue  # this process is writing it
        lock = OutputLock(out)
        try:
            lock.acquire()
        except CimtoolError:
            continue  # a live run owns it
        try:
            if partial.is_dir() and not _partial_is_resumable(partial):
                shutil.rmtree(partial, ignore_errors=True)
                removed.append(partial)
        finally:
            lock.release()
    return removed


def check_out(out: Path, force: bool, kind: str) -> Path:
    """Refuse to overwrite an existing artifact unless --force (checked before any work).

    --force replaces only a cimtool artifact of ``kind``, the one the stage writes (a directory with
    its manifest), or an empty directory: never an artifact of another kind nor a folder of the
    user's. ``out`` is checked through ``resolve_out`` first (a symlink loop, a dangling symlink or
    an unwritable parent is refused); returns the resolved path."""
    _check_name(out)
    real = resolve_out(out)
    if not real.exists():
        return real
    if not real.is_dir():
        raise CimtoolError(f"{out}: exists and is not a directory")
    if not force:
        raise CimtoolError(f"{out}: already exists (pass --force to replace it)")
    if not (real / MANIFEST).is_file() and any(real.iterdir()):
        raise CimtoolError(f"{out}: exists and is not a cimtool artifact; --force replaces only "
                           "artifacts (or empty directories)")
    found = _manifest_kind(real / MANIFEST)
    if found not in (None, kind):
        raise CimtoolError(f"{out}: is a '{found}' artifact; --force replaces only a '{kind}' artifact, "
                           "the kind this stage writes")
    return real


def _manifest_kind(path: Path) -> str | None:
    """The kind a manifest declares; None where there is no readable one."""
    try:
        kind = json.loads(path.read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def find_resumable(search_dir: Path, params_sha256: str) -> Path | None:
    """The newest interrupted run under ``search_dir`` whose parameters hash matches.

    Not a candidate: a partial of a stage that does not resume, or one a live run is writing."""
    if not search_dir.is_dir():
        return None
    candidates = []
    for partial in search_dir.glob(f"*{PARTIAL_SUFFIX}"):
        info = partial / PARTIAL_INFO
        try:
            info = json.loads(info.read_text())
            if info.get("params_sha256") == params_sha256 and info.get("resumable", True):
                candidates.append(partial)
        except (OSError, ValueError, AttributeError):  # unreadable: not a candidate
            continue
    candidates = [p for p in candidates
                  if not _owned_by_live_run(p.with_name(p.name[: -len(PARTIAL_SUFFIX)]))]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def _owned_by_live_run(out: Path) -> bool:
    """Whether another run holds the lock on ``out`` (this process's own locks count as free)."""
    try:
        lock = OutputLock(out)
        if str(lock.path) in _HELD:
            return False
        lock.acquire()
    except CimtoolError:
        return True
    lock.release()
    return False


class ArtifactWriter:
    """Builds an artifact in ``<out>.partial`` and moves it into place on ``commit``.

    Used as a context manager. On entry: ``out`` is checked (``check_out``, which resolves it with
    ``resolve_out``; a symlink to an artifact is written through), against ``inputs`` if given
    (``check_not_input``), and locked (``OutputLock``: a second run on the same ``out`` fails with
    one line naming this one's PID); the dead, non-resumable partials next to it are removed
    (``remove_dead_partials``). A user error (CimtoolError), a crash, Ctrl-C or SIGTERM removes the
    partial directory, except that with ``keep_on_interrupt`` a run that has written checkpoints
    (files in ``scratch``) keeps it after Ctrl-C, SIGTERM or a crash (not after a user error), so
    that ``--resume`` can continue; so does a SIGKILL, and an ``IncompleteRun`` error. ``resume``:
    continue a partial of the same parameters (True: refuse other parameters; ``"auto"``: start
    afresh over them). No reader accepts a partial directory.
    ``commit`` refuses to replace an input artifact of the run. The lock is released on exit.
    """

    def __init__(self, out: Path, kind: str, params: dict[str, Any], force: bool = False,
                 resume: bool | str = False, keep_on_interrupt: bool = False,
                 inputs: Iterable[Path | str] = ()) -> None:
        if kind not in SCHEMAS:
            raise ValueError(f"unregistered artifact kind {kind}")
        self.out = out
        self.kind = kind
        self.params = params
        self.force = force
        self.keep_on_interrupt = keep_on_interrupt
        self.inputs = list(inputs)
        self.partial = _partial_of(out)
        self.resumed = False
        self._resume = resume
        self._target = out  # where the artifact goes: out, or what a symlink out points to
        self._lock: OutputLock | None = None
        self._created_partial = False
        self._committed = False
        self.discarded_partial = False
        self.removed_partials: list[Path] = []  # dead runs' partials next to out, removed on entry

    @property
    def scratch(self) -> Path:
        return self.partial / SCRATCH_DIR

    def __enter__(self) -> ArtifactWriter:
        real = check_out(self.out, self.force, self.kind)
        if real != Path(os.path.abspath(self.out)):  # a symlink on the way: write where it leads
            self._target, self.partial = real, _partial_of(real)
        if self.inputs:
            check_not_input(self.out, self.inputs)
        self._lock = OutputLock(self._target)
        self._lock.acquire()
        try:
            self._prepare()
        except BaseException:
            self._cleanup()
            raise
        return self

    def _prepare(self) -> None:
        check_out(self._target, self.force, self.kind)  # again, now that no other run can be writing it
        self.removed_partials = remove_dead_partials(self._target.parent, keep=[self.partial])
        params_sha = sha256_json(self.params)
        info_path = self.partial / PARTIAL_INFO
        if self._resume and info_path.is_file():
            try:
                info = json.loads(info_path.read_text())
                if not isinstance(info, dict):
                    raise ValueError("not an object")
            except (OSError, ValueError) as exc:
                if self._resume != "auto":
                    raise CimtoolError(f"{info_path}: unreadable ({exc}); delete {self.partial} "
                                       "to start afresh") from None
                info = {}
            if info.get("params_sha256") == params_sha:
                self.resumed = True
            elif self._resume != "auto":
                raise CimtoolError(
                    f"{self.partial}: --resume with different parameters than the interrupted run"
                )
        if not self.resumed:
            if self.partial.exists() or self.partial.is_symlink():
                # an interrupted run that the user did not --resume (its owner is dead: we hold the lock)
                self.discarded_partial = True
                if self.partial.is_dir() and not self.partial.is_symlink():
                    shutil.rmtree(self.partial)
                else:
                    self.partial.unlink()
            try:
                self.partial.mkdir(parents=True)
            except OSError as exc:
                raise CimtoolError(f"{self.out}: cannot create the artifact directory "
                                   f"({exc.strerror})") from None
            self._created_partial = True
            info_path.write_text(json.dumps({
                "params_sha256": params_sha, "params": self.params, "pid": os.getpid(),
                "host": socket.gethostname(), "resumable": self.keep_on_interrupt,
            }, sort_keys=True, indent=1, default=str))
        self.scratch.mkdir(exist_ok=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._committed:
                return
            # keep checkpoints for --resume after Ctrl-C/SIGTERM, and after a crash (a bug, a full
            # disk) of a run that has written some; a user error (CimtoolError), a run with nothing
            # to resume from and a body that ended without commit leave nothing behind
            has_checkpoint = self.scratch.is_dir() and any(self.scratch.iterdir())
            if (self.keep_on_interrupt and exc_type is not None and has_checkpoint
                    and (not issubclass(exc_type, CimtoolError) or issubclass(exc_type, IncompleteRun))):
                return
            shutil.rmtree(self.partial, ignore_errors=True)
        finally:
            self._cleanup(remove_partial=False)

    def _cleanup(self, remove_partial: bool = True) -> None:
        """Remove a partial this run created (on a failed entry) and release the lock."""
        try:
            if remove_partial and self._created_partial and not self._committed:
                shutil.rmtree(self.partial, ignore_errors=True)
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def path(self, name: str) -> Path:
        """Where to write payload file ``name`` inside the partial directory."""
        return self.partial / name

    def commit(self, inputs: list[dict[str, Any]], summary: dict[str, Any],
               extra: dict[str, Any] | None = None) -> Path:
        """Hash the payload, write the manifest and atomically move the directory into place.

        Refuses (CimtoolError, nothing replaced) an ``out`` that is, contains or lies inside one of
        ``inputs`` (the entries with a ``path``)."""
        check_not_input(self.out, [*self.inputs, *(i["path"] for i in inputs
                                                         if isinstance(i, dict) and i.get("path"))])
        shutil.rmtree(self.scratch, ignore_errors=True)
        (self.partial / PARTIAL_INFO).unlink(missing_ok=True)
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
            "summary": rounded(summary),
            **(extra or {}),
        }
        tmp = self.partial / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, self.partial / MANIFEST)
        target = self._target
        if target.exists():  # --force: swap the old artifact out, then delete it
            trash = target.with_name(f".{target.name}.old-{time.time_ns()}")
            os.replace(target, trash)
            os.replace(self.partial, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self.partial, target)
        self._committed = True
        return self.out
