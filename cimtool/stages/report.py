"""`cimtool report`: one Markdown and one self-contained HTML report over a set of artifacts.

Takes artifact directories and/or folders to search (every verified artifact below them; an
artifact that does not verify, or has a newer schema than this cimtool, stops the report). Writes
a ``report`` artifact: ``report.md`` (with ``figures/*.png``), ``report.html`` (figures embedded),
``accuracy.parquet`` (the accuracy table at full precision) and ``sources.parquet`` (every
artifact used, with its manifest sha256). Sections: sources, accuracy across stages (each row with
its device, weight bits and effects), the device cards used (values, units, what is assumed), chip
geometry (the arrays map-weights simulated vs those NeuroSim costed), training curves, SNN accuracy
vs levels and vs T, sweeps (the statistically indistinguishable set, heat-maps, accuracy vs T,
accuracy-vs-energy Pareto), device fits (the fitted card's values and measured vs fitted pulse
trains, for ``device`` artifacts), conductance-level histograms (one per distinct set of levels),
NeuroSim (area and energy breakdowns, accuracy vs NeuroSim energy), profiles. An artifact summary's
``caveats`` are shown beside its numbers.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cimtool import artifacts
from cimtool.errors import CimtoolError
from cimtool.params import ReportParams  # noqa: F401 (re-exported)
from cimtool.stages.common import StageOutput
from cimtool.ui import Reporter

KIND = "report"
FIGURES = "figures"


def discover(paths: list[Path]) -> list[Path]:
    """Artifact directories at or below ``paths`` (partial and report artifacts left out)."""
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise CimtoolError(f"{path}: no such artifact or folder")
        if not path.is_dir():
            raise CimtoolError(f"{path}: not an artifact directory or folder (it is a file)")
        for folder, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs
                             if not d.startswith(".") and not d.endswith(artifacts.PARTIAL_SUFFIX))
            if artifacts.MANIFEST in files:
                found.append(Path(folder))
                dirs[:] = []  # an artifact's own sub-folders are payload
    return sorted(dict.fromkeys(p.resolve() for p in found))


def headline(artifact: artifacts.Artifact) -> str:
    s = artifact.summary
    caveats = f", [yellow]{s['caveats']} caveat(s)[/yellow]" if s.get("caveats") else ""
    return (f"[green]report[/green] {artifact.path / 'report.html'}  {s['artifacts']} artifacts, "
            f"{s['figures']} figures, {s['accuracy_rows']} accuracy rows{caveats}")


def run(p: ReportParams, out: Path | None, root: Path, force: bool, reporter: Reporter) -> artifacts.Artifact:
    from cimtool.report import content
    from cimtool.report.render import html_page, markdown

    t_start = time.perf_counter()
    targets = [Path(x) for x in p.paths] or [root]
    arts = [artifacts.load(path) for path in discover(targets)]  # verifies schema and hashes
    arts = [a for a in arts if a.kind != KIND]
    if not arts:
        raise CimtoolError(f"no cimtool artifacts under {', '.join(map(str, targets))}")
    output = StageOutput(KIND, out, root, "report", force, inputs=[a.path for a in arts], started=t_start)
    out = output.path
    reporter.log(f"report: {len(arts)} artifacts → {out}")
    by_path = {str(a.path.resolve()): a for a in arts}
    accuracy = content.accuracy_table(arts)
    sections = [content.sources(arts), content.accuracy(accuracy, arts), content.device_cards(arts),
                content.geometry(arts), content.curves(arts), content.spiking(arts),
                content.spiking_vs_t(arts), content.sweeps(arts), content.devices(arts),
                content.conductances(arts), content.neurosim(arts, by_path), content.profiles(arts)]
    blocks = [block for section in sections for block in section.blocks]
    with output.writer({**asdict(p), "paths": [str(t) for t in targets]}) as writer:
        figure_dir = writer.path(FIGURES)
        figure_dir.mkdir()
        figures = [block for block in blocks if isinstance(block, content.Figure)]
        for figure in figures:
            (figure_dir / figure.name).write_bytes(figure.png)
        writer.path("report.md").write_text(markdown(p.title, sections, FIGURES))
        writer.path("report.html").write_text(html_page(p.title, sections))
        pq.write_table(pa.Table.from_pandas(accuracy, preserve_index=False), writer.path("accuracy.parquet"))
        pq.write_table(pa.Table.from_pylist([{"kind": a.kind, "path": str(a.path),
                                              "manifest_sha256": a.manifest_sha256()} for a in arts]),
                       writer.path("sources.parquet"))
        summary = {"artifacts": len(arts), "figures": len(figures), "accuracy_rows": len(accuracy),
                   "caveats": sum(isinstance(block, content.Caveat) for block in blocks),
                   "kinds": sorted({a.kind for a in arts})}
        return output.commit(writer, [a.as_input(a.kind) for a in arts], summary)
