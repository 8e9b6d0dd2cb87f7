"""`cimtool neurosim-trace`: a DNN+NeuroSim layer record from a model and a batch of its data.

Writes a ``trace`` artifact: ``NetWork.csv``, per crossbar layer ``weight<k>.csv`` and
``input<k>.csv`` (the bits of sample ``--sample`` of the batch), for ``--format v21`` also
``weightOld<k>.csv``, a ``trace_command.sh`` (relative, quoted paths; ``NEUROSIM`` = the binary) and
``layers.parquet`` (per layer: shapes, scales, windows, the input bit activity of the written
sample and averaged over the batch, the padding note). File formats: ``cimtool.neurosim.trace``.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cimtool import artifacts
from cimtool.checks import check_choice, check_range
from cimtool.errors import CimtoolError
from cimtool.neurosim.trace import FORMATS
from cimtool.params import TraceParams  # noqa: F401 (re-exported)
from cimtool.stages.common import StageOutput
from cimtool.ui import Reporter

KIND = "trace"
NETWORK = "NetWork.csv"
COMMAND = "trace_command.sh"
SPLITS = ("train", "val", "test")
V21_EPOCH = 1  # the epoch number a V2.1 run of this record reports




def validate(p: TraceParams) -> None:
    check_choice("--format", p.format, FORMATS)
    for name in ("weight_bits", "input_bits"):
        check_range(f"--{name.replace('_', '-')}", getattr(p, name), 2, 15)
    check_choice("--split", p.split, SPLITS)
    check_range("--batch-size", p.batch_size, 1)
    check_range("--sample", p.sample, 0, p.batch_size - 1, note="(an index into the batch)")


def _layer_inputs(model, spec: dict[str, Any], x) -> dict[str, Any]:
    """Each crossbar layer's input on the batch (float64 numpy) and its output shape."""
    import torch

    record: dict[str, Any] = {}
    hooks = [model.get_submodule(layer["name"]).register_forward_hook(
        lambda _m, inp, out, name=layer["name"]: record.__setitem__(
            name, (inp[0].detach().double().numpy(), tuple(out.shape))))
        for layer in spec["crossbar_layers"]]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return record


def _followed_by_pool(model, names: list[str]) -> dict[str, bool]:
    """Whether a max-pool comes between each crossbar layer and the next (NetWork.csv column 7)."""
    from torch import nn

    pooled = dict.fromkeys(names, False)
    by_id = {id(model.get_submodule(n)): n for n in names}
    current = None
    for module in model.modules():
        if id(module) in by_id:
            current = by_id[id(module)]
        elif isinstance(module, nn.MaxPool2d) and current is not None:
            pooled[current] = True
    return pooled


def _activity(batch: np.ndarray, layer: dict[str, Any], bits: int, padding: tuple[int, int]) -> np.ndarray:
    """Mean input bit of each sample's unrolled input, without unrolling the whole batch: each
    pixel counts once per window that covers it, and padding contributes zeros."""
    import torch
    from torch.nn import functional as F

    from cimtool.neurosim.trace import input_codes

    ones = input_codes(batch, bits).sum(axis=0, dtype=np.float64)  # [B, …] one-bits per value
    if layer["type"] == "linear":
        return ones.reshape(len(batch), -1).mean(axis=1) / bits
    (kh, kw), height, width = layer["kernel_size"], *batch.shape[2:]
    (ph, pw), (sh, sw) = padding, layer["stride"]
    oh, ow = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    cover = F.conv_transpose2d(torch.ones(1, 1, oh, ow, dtype=torch.float64),
                               torch.ones(1, 1, kh, kw, dtype=torch.float64),
                               stride=(sh, sw), padding=(ph, pw))[0, 0].numpy()
    full = np.zeros((height, width))
    full[: cover.shape[0], : cover.shape[1]] = cover[:height, :width]
    return (ones * full).reshape(len(batch), -1).sum(axis=1) / (oh * ow * layer["rows"] * bits)


def _command(p: TraceParams, files: list[list[str]], activities: list[float]) -> str:
    """trace_command.sh: the NeuroSim command line of this record, run from its own directory."""
    args = [NETWORK, str(p.weight_bits), str(p.input_bits)]
    if p.format == "v21":
        args.insert(0, str(V21_EPOCH))
        for (weight, old, inp), act in zip(files, activities, strict=True):
            args += [weight, old, inp, repr(act)]
    else:
        for weight, inp in files:
            args += [weight, inp]
    version = "V2.1 (training)" if p.format == "v21" else "V1.3 (inference)"
    return ("#!/bin/sh\n"
            f"# DNN+NeuroSim {version} on this layer record (written by cimtool neurosim-trace).\n"
            "# NEUROSIM: the NeuroSim binary (cimtool run-neurosim builds one and runs it for you).\n"
            'cd "$(dirname "$0")" || exit 1\n'
            'exec "${NEUROSIM:-./NeuroSIM/main}" ' + " ".join(shlex.quote(a) for a in args) + "\n")


def write_record(model, spec: dict[str, Any], x, p: TraceParams, directory: Path,
                 old_model=None, log=lambda _msg: None) -> list[dict[str, Any]]:
    """Write the layer record of ``model`` on the batch ``x`` into ``directory``; one row per layer."""
    from cimtool.neurosim.trace import bits_csv, layer_weight_csv, network_row, stretch

    layers = spec["crossbar_layers"]
    inputs = _layer_inputs(model, spec, x)
    pooled = _followed_by_pool(model, [layer["name"] for layer in layers])
    rows, net_rows, files = [], [], []

    def weights_file(weight: np.ndarray, scale: float, name: str) -> None:
        (directory / name).write_bytes(layer_weight_csv(weight, scale, p.weight_bits))

    for k, layer in enumerate(layers, start=1):
        name = layer["name"]
        batch, _ = inputs[name]
        in_scale = float(np.abs(batch).max()) or 1.0
        scaled = batch / in_scale
        weight = model.get_submodule(name).weight.detach().numpy()
        w_scale = float(np.abs(weight).max()) or 1.0
        names = [f"weight{k}.csv", f"input{k}.csv"]
        weights_file(weight, w_scale, names[0])
        # V2.1's hook and C++ take the unpadded windows only; V1.3's hook pads
        padding = (0, 0) if p.format == "v21" else tuple(layer.get("padding", (0, 0)))
        if layer["type"] == "conv2d":
            kh, kw = layer["kernel_size"]
            if kh != kw:
                raise CimtoolError(f"layer {name}: NeuroSim traces need square kernels, got {kh}x{kw}")
            unrolled = stretch(scaled[p.sample], kh, padding, tuple(layer["stride"]))
            height, width = batch.shape[2:]
        else:
            unrolled, (height, width) = scaled[p.sample][None, :], (1, 1)
        (directory / names[1]).write_bytes(bits_csv(unrolled, p.input_bits))
        if p.format == "v21":
            old = old_model.get_submodule(name).weight.detach().numpy() if old_model else weight
            names.insert(1, f"weightOld{k}.csv")
            weights_file(old, w_scale, names[1])
        per_sample = _activity(scaled, layer, p.input_bits, padding)
        net_rows.append(network_row(layer, height, width, pooled[name]))
        note = ""
        if any(layer.get("padding", (0, 0))):
            kh, kw = layer["kernel_size"]
            unpadded = f"{height - kh + 1}x{width - kw + 1}"
            note = (f"padding {layer['padding'][0]}: NeuroSim assumes none and counts {unpadded} windows, "
                    + ("as this V2.1 input file holds" if p.format == "v21" else
                       f"the layer computes {len(unrolled)} (the input file has them all)"))
            log(f"[yellow]note: layer {k} ({name}): {note}")
        files.append(names)
        rows.append({"layer": k, "name": name, "type": layer["type"], "rows": layer["rows"],
                     "cols": layer["cols"], "height": height, "width": width,
                     "followed_by_pool": pooled[name], "windows": len(unrolled),
                     "weight_scale": w_scale, "input_scale": in_scale,
                     "activity_sample": float(per_sample[p.sample]),
                     "activity_batch": float(per_sample.mean()), "padding_note": note,
                     "weight_file": names[0], "input_file": names[-1]})
    (directory / NETWORK).write_text("".join(",".join(map(str, r)) + "\n" for r in net_rows))
    (directory / COMMAND).write_text(_command(p, files, [r["activity_sample"] for r in rows]))
    (directory / COMMAND).chmod(0o755)
    pq.write_table(pa.Table.from_pylist(rows), directory / "layers.parquet")
    return rows


def headline(artifact: artifacts.Artifact) -> str:
    s = artifact.summary
    activity = ", ".join(f"{a:.3f}" for a in s["activity_batch"])
    return (f"[green]trace[/green] {artifact.path}  {s['n_layers']} layers ({s['format']}, "
            f"{s['weight_bits']}/{s['input_bits']} bits); input bit activity over the batch: {activity}")


def run(p: TraceParams, out: Path | None, root: Path, force: bool, reporter: Reporter) -> artifacts.Artifact:
    from cimtool.models.io import model_splits, open_model, resolve_model
    from cimtool.train.batching import to_float

    validate(p)
    t_start = time.perf_counter()
    model_path = resolve_model(p.model, p.method, root, reporter)
    source, model, spec = open_model(model_path)
    p = TraceParams(**{**asdict(p), "model": str(model_path)})
    if not spec.get("crossbar_layers"):
        raise CimtoolError(f"{model_path}: the model has no crossbar layer to trace")
    data = model_splits(source, p.data_dir)[p.split]
    if p.batch_size > len(data):
        raise CimtoolError(f"--batch-size {p.batch_size} exceeds the {len(data)} samples "
                           f"of the {p.split} split")
    old_model = _weights_before_update(source) if p.format == "v21" else None
    name = f"{model_path.name}-{p.format}-w{p.weight_bits}a{p.input_bits}"
    output = StageOutput(KIND, out, root, name, force, inputs=[model_path], started=t_start)
    out = output.path
    reporter.log(f"neurosim-trace: {model_path}, {len(spec['crossbar_layers'])} layers, {p.format}, "
                 f"{p.weight_bits}/{p.input_bits} bits, sample {p.sample} of {p.batch_size} "
                 f"({p.split}) → {out}")
    with output.writer(asdict(p)) as writer:
        rows = write_record(model, spec, to_float(data.x[: p.batch_size]), p, writer.partial, old_model,
                            reporter.log)
        summary = {"format": p.format, "weight_bits": p.weight_bits, "input_bits": p.input_bits,
                   "n_layers": len(rows), "sample": p.sample, "batch_size": p.batch_size,
                   "activity_sample": [r["activity_sample"] for r in rows],
                   "activity_batch": [r["activity_batch"] for r in rows],
                   "padding_notes": sum(bool(r["padding_note"]) for r in rows)}
        return output.commit(writer, [source.as_input("model")], summary)


def _weights_before_update(source: artifacts.Artifact):
    """V2.1 weightOld: a fine-tuned qmodel's source model (the weights before its update), else None."""
    from cimtool.models.io import open_model

    if source.kind != "qmodel":
        return None
    ref = next((i for i in source.manifest.get("inputs", []) if i.get("role") == "model"), None)
    return open_model(ref["path"])[1] if ref else None
