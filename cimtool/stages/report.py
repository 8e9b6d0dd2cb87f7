"""`cimtool report`: one Markdown and one self-contained HTML report over a set of artifacts.

Takes artifact directories and/or folders to search (every verified artifact below them; an
artifact that does not verify, or has a newer schema than this cimtool, stops the report). Writes
a ``report`` artifact: ``report.md`` (with ``figures/*.png``), ``report.html`` (figures embedded),
``accuracy.parquet`` (the accuracy table at full precision) and ``sources.parquet`` (every
artifact used, with its manifest sha256). Sections: sources, accuracy across stages, training
curves, sweeps (heat-maps, accuracy vs T, accuracy-vs-energy Pareto), device fits (the fitted card's
values and measured vs fitted pulse trains, for ``device`` artifacts), conductance-level histograms,
NeuroSim (area and energy breakdowns, accuracy vs NeuroSim energy), profiles.
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
    return (f"[green]report[/green] {artifact.path / 'report.html'}  {s['artifacts']} artifacts, "
            f"{s['figures']} figures, {s['accuracy_rows']} accuracy rows")


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
    sections = [content.sources(arts), content.accuracy(accuracy), content.curves(arts),
                content.spiking(arts), content.sweeps(arts), content.devices(arts),
                content.conductances(arts), content.neurosim(arts, by_path), content.profiles(arts)]
    with output.writer({**asdict(p), "paths": [str(t) for t in targets]}) as writer:
        figure_dir = writer.path(FIGURES)
        figure_dir.mkdir()
        n_figures = 0
        for section in sections:
            for block in section.blocks:
                if isinstance(block, content.Figure):
                    (figure_dir / block.name).write_bytes(block.png)
                    n_figures += 1
        writer.path("report.md").write_text(markdown(p.title, sections, FIGURES))
        writer.path("report.html").write_text(html_page(p.title, sections))
        pq.write_table(pa.Table.from_pandas(accuracy, preserve_index=False), writer.path("accuracy.parquet"))
        pq.write_table(pa.Table.from_pylist([{"kind": a.kind, "path": str(a.path),
                                              "manifest_sha256": a.manifest_sha256()} for a in arts]),
                       writer.path("sources.parquet"))
        summary = {"artifacts": len(arts), "figures": n_figures, "accuracy_rows": len(accuracy),
                   "kinds": sorted({a.kind for a in arts})}
        return output.commit(writer, [a.as_input(a.kind) for a in arts], summary)
