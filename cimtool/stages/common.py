"""What every stage needs: the --torch-device check and resolution, and :class:`StageOutput`, which
claims a stage's output before its work and writes it.

Finding, opening and reading the data of model artifacts live in :mod:`cimtool.models.io`, the
calibration sample in :mod:`cimtool.data.calibration`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cimtool import artifacts
from cimtool.checks import check_choice
from cimtool.errors import CimtoolError

TORCH_DEVICES = ("auto", "cpu", "cuda")


def check_torch_device(name: str) -> None:
    """A one-line error for an unknown --torch-device or for cuda on a machine without CUDA."""
    check_choice("--torch-device", name, TORCH_DEVICES)
    if name == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CimtoolError("--torch-device cuda: no CUDA device is available (use cpu or auto)")


def resolve_device(name: str):
    """--torch-device auto|cpu|cuda → a torch.device (auto: CUDA where available)."""
    import torch

    check_torch_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


class _RankWriter:
    """Where a torchrun rank other than 0 writes (its checkpoints, payloads): a temporary directory,
    deleted at the end. Rank 0 writes the artifact."""

    resumed = discarded_partial = False

    def __enter__(self) -> _RankWriter:
        self._tmp = tempfile.TemporaryDirectory(prefix="cimtool-rank-")
        self.partial = Path(self._tmp.name)
        self.scratch = self.partial / artifacts.SCRATCH_DIR
        self.scratch.mkdir()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._tmp.cleanup()

    def path(self, name: str) -> Path:
        return self.partial / name


class StageOutput:
    """The artifact a stage writes, claimed before its work (``docs/design.md``, artifact contract).

    Creating it names the default ``--out`` (a new directory under the artifacts root), refuses an
    existing ``--out`` without ``--force``, a symlink loop, a dangling link, an unwritable parent
    and an ``--out`` that is, contains or lies inside one of the run's ``inputs``; :meth:`writer`
    opens the atomic writer (it holds the output lock); :meth:`commit` records ``wall_s`` since
    ``started``, commits and returns the artifact as read back. A stage reads::

        output = StageOutput(KIND, out, root, name, force, inputs=[model_path], started=t0)
        with output.writer(params) as writer:
            ...  # payloads into writer.path(...)
            return output.commit(writer, [source.as_input("model")], summary)
    """

    def __init__(self, kind: str, out: Path | None, root: Path, name: str, force: bool,
                 inputs: Sequence[Path | str] = (), started: float | None = None,
                 writes: bool = True) -> None:
        self.kind, self.force, self.writes = kind, force, writes
        self.inputs = [Path(i) for i in inputs]
        self.started = time.perf_counter() if started is None else started
        if not writes:  # a torchrun rank other than 0: rank 0 claims and writes the output
            self.path = Path(out) if out is not None else Path("(written by rank 0)")
            return
        self.path = Path(out) if out is not None else artifacts.default_out(root, kind, name)
        artifacts.check_not_input(self.path, self.inputs)  # messages name --out as the user spelled it
        artifacts.check_out(self.path, force, kind)

    def writer(self, params: dict[str, Any], **options: Any) -> artifacts.ArtifactWriter | _RankWriter:
        if not self.writes:
            return _RankWriter()
        return artifacts.ArtifactWriter(self.path, self.kind, params, force=self.force, inputs=self.inputs,
                                        **options)

    def commit(self, writer: artifacts.ArtifactWriter, inputs: list[dict[str, Any]],
               summary: dict[str, Any]) -> artifacts.Artifact | None:
        """The committed artifact; None on a torchrun rank other than 0 (it writes nothing)."""
        if not self.writes:
            return None
        summary = {**summary, "wall_s": time.perf_counter() - self.started}
        return artifacts.load(writer.commit(inputs, summary), self.kind)
