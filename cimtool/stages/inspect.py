"""`cimtool inspect`: validate an artifact and show its manifest and summary."""

from __future__ import annotations

import json
from pathlib import Path

from cimtool import artifacts
from cimtool.errors import CimtoolError
from cimtool.ui import Reporter


def _check_model(artifact: artifacts.Artifact) -> None:
    from cimtool.models.io import load_model

    load_model(artifact)  # architecture spec, tensor names and shapes, finite values


def _check_cmap(artifact: artifacts.Artifact) -> None:
    from cimtool.devices.cmap import load_cmap

    load_cmap(artifact.path)  # levels in range, G = grid[level] on the recorded card, shapes


def _check_snn(artifact: artifacts.Artifact) -> None:
    from cimtool.nn.snn_spec import open_snn

    open_snn(artifact.path).network()  # snn.json parses, the source model is unchanged, θ > 0


# kind -> deeper check of the payload's content, beyond the hashes
CONTENT_CHECKS = {"model": _check_model, "qmodel": _check_model, "cmap": _check_cmap, "snn": _check_snn}


def check_inputs(artifact: artifacts.Artifact) -> None:
    """Input artifacts that still exist must be the ones this artifact was made from."""
    for entry in artifact.manifest.get("inputs", []):
        path, recorded = entry.get("path"), entry.get("manifest_sha256")
        if not path or not recorded or not (Path(path) / artifacts.MANIFEST).is_file():
            continue
        if artifacts.sha256_file(Path(path) / artifacts.MANIFEST) != recorded:
            raise CimtoolError(f"{artifact.path}: its input {path} ({entry.get('role')}) "
                               "changed since it was made; rerun this stage")


def run(path: Path, reporter: Reporter, deep: bool = True) -> artifacts.Artifact:
    artifact = artifacts.load(path)  # validates schema and every payload hash
    check_inputs(artifact)
    if deep:
        CONTENT_CHECKS.get(artifact.kind, lambda _: None)(artifact)
    manifest = artifact.manifest
    if reporter.json_mode:
        reporter.result({"artifact": str(artifact.path), "kind": artifact.kind, "verified": True,
                         "summary": artifact.summary, "manifest": manifest})
        return artifact

    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    head = Table(title=f"{artifact.path}  [green](verified)[/green]", show_header=False)
    head.add_column(style="bold")
    head.add_column()
    for key in ("schema", "cimtool_version", "created"):
        head.add_row(key, str(manifest.get(key)))
    head.add_row("command", " ".join(manifest.get("command", [])))
    for key, value in manifest.get("summary", {}).items():
        head.add_row(f"summary.{key}", _fmt(value))
    console.print(head)

    params = Table(title="parameters")
    params.add_column("name", style="bold")
    params.add_column("value")
    for key, value in sorted(manifest.get("params", {}).items()):
        params.add_row(key, _fmt(value))
    console.print(params)

    files = Table(title="payload")
    for col in ("file", "bytes", "sha256"):
        files.add_column(col)
    for name, entry in manifest["files"].items():
        files.add_row(name, str(entry["bytes"]), entry["sha256"][:16] + "…")
    console.print(files)

    inputs = Table(title="inputs")
    inputs.add_column("role")
    inputs.add_column("detail")
    for entry in manifest.get("inputs", []):
        detail = {k: v for k, v in entry.items() if k != "role"}
        inputs.add_row(entry.get("role", "?"), json.dumps(detail, sort_keys=True))
    console.print(inputs)
    return artifact


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value) if isinstance(value, list | dict) else str(value)
