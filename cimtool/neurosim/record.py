"""A DNN+NeuroSim layer record of a model on a batch: the files ``neurosim-trace`` writes and the
records ``sweep --cost neurosim`` runs (file formats: :mod:`cimtool.neurosim.trace`).

- :func:`write_record`: the record of an ANN (``input_bits`` two's complement bit planes per window,
  as DNN_NeuroSim's ``hook.py``), V1.3 or V2.1 layout, with ``trace_command.sh`` and ``layers.parquet``.
- :func:`write_spike_record`: the record of one timestep of the model's spiking twin: one bit per
  window, the spikes a rate-coded network carries (NeuroSim's ``numBitInput`` = 1, one read pulse).
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cimtool.errors import CimtoolError

NETWORK = "NetWork.csv"
COMMAND = "trace_command.sh"
V21_EPOCH = 1  # the epoch number a V2.1 run of a record without on-chip epochs reports
WEIGHT_BITS = 8  # WBITS of a record whose model was not trained on chip


def onchip_training(params: dict[str, Any], n_train: int) -> dict[str, int] | None:
    """What a ``qat --mode onchip`` run trained with, from its qmodel's params (None for any other
    model): ``weight_bits`` (its ``--weight-bits``, else ⌈log2 levels⌉ of its card, at least 2, as
    qat sets them), ``train_batch`` and ``iterations`` per epoch (⌈n_train/batch⌉: the last batch
    is not dropped) and ``epochs``: the figures V2.1's training estimate is set from."""
    if params.get("mode") != "onchip":
        return None
    bits = (params.get("mapping") or {}).get("weight_bits") or max(2, math.ceil(math.log2(
        params["card"]["levels"])))
    batch = int(params["batch_size"])
    return {"weight_bits": int(bits), "train_batch": batch, "iterations": -(-n_train // batch),
            "epochs": int(params["epochs"])}


def epoch_folder(epoch: int, last: int) -> str:
    """Where a V2.1 trace holds the record of a recorded on-chip epoch: the last one is the trace's
    own record (the qmodel's weights), every earlier one a folder of the same files."""
    return "" if epoch == last else f"epoch{epoch}"


def with_weights(model, weights: dict[str, np.ndarray]):
    """A copy of ``model`` whose crossbar layers (by name) hold ``weights``."""
    import copy

    import torch

    twin = copy.deepcopy(model)
    with torch.no_grad():
        for name, weight in weights.items():
            twin.get_submodule(name).weight.copy_(torch.from_numpy(np.asarray(weight)))
    return twin


class RecordOptions(Protocol):
    """What shapes a record (``TraceParams`` has these)."""

    format: str  # v13 or v21
    weight_bits: int | None  # None: WEIGHT_BITS
    input_bits: int
    sample: int  # index in the batch of the sample whose input files are written


def layer_inputs(model, spec: dict[str, Any], x) -> dict[str, Any]:
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


def followed_by_pool(model, names: list[str]) -> dict[str, bool]:
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


def _command(p: RecordOptions, files: list[list[str]], activities: list[float], epoch: int) -> str:
    """trace_command.sh: the NeuroSim command line of this record, run from its own directory."""
    args = [NETWORK, str(p.weight_bits), str(p.input_bits)]
    if p.format == "v21":
        args.insert(0, str(epoch))
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


def write_record(model, spec: dict[str, Any], x, p: RecordOptions, directory: Path,
                 old_weights: dict[str, np.ndarray] | None = None,
                 log=lambda _msg: None, epoch: int = V21_EPOCH,
                 scales: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Write the layer record of ``model`` on the batch ``x`` into ``directory``; one row per layer
    (V2.1: ``old_weights``, by layer name, are the weights before the update, default: the same;
    ``epoch`` is the training epoch its command line gives V2.1). ``scales``: each layer's device
    scale (an on-chip qmodel's α: the files then hold the device states); default max|W|."""
    from dataclasses import replace

    from cimtool.neurosim.trace import bits_csv, layer_weight_csv, network_csv, network_row, stretch

    if p.weight_bits is None:
        p = replace(p, weight_bits=WEIGHT_BITS)
    layers = spec["crossbar_layers"]
    inputs = layer_inputs(model, spec, x)
    pooled = followed_by_pool(model, [layer["name"] for layer in layers])
    rows, net_rows, files = [], [], []

    def weights_file(weight: np.ndarray, scale: float, name: str) -> None:
        (directory / name).write_bytes(layer_weight_csv(weight, scale, p.weight_bits))

    for k, layer in enumerate(layers, start=1):
        name = layer["name"]
        batch, _ = inputs[name]
        in_scale = float(np.abs(batch).max()) or 1.0
        scaled = batch / in_scale
        weight = model.get_submodule(name).weight.detach().numpy()
        w_scale = scales[name] if scales else float(np.abs(weight).max()) or 1.0
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
            old = old_weights[name] if old_weights else weight
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
    (directory / NETWORK).write_text(network_csv(net_rows))
    (directory / COMMAND).write_text(_command(p, files, [r["activity_sample"] for r in rows], epoch))
    (directory / COMMAND).chmod(0o755)
    pq.write_table(pa.Table.from_pylist(rows), directory / "layers.parquet")
    return rows


def write_spike_record(model, spec: dict[str, Any], x, thetas: list[float], input_range: float,
                       weight_bits: int, directory: Path, seed: int) -> list[dict[str, Any]]:
    """Write the V1.3 layer record of one timestep of ``model``'s spiking twin on the sample ``x``
    ([1, …]) into ``directory``: the weights as :func:`write_record` writes them, and per layer one
    bit per input and window, the spikes it receives (NeuroSim's ABITS = 1: one read pulse).

    A rate-coded network spikes with probability p = |x|/R at its input (R = ``input_range``) and at
    a rate a/θ after a neuron layer with threshold θ (a: the ANN activation there, clipped to 1):
    the spikes of a step are drawn with these probabilities (seeded), so NeuroSim sees the activity
    a step has on average. One row per layer (``activity_sample``: the input file's mean bit)."""
    from cimtool.neurosim.trace import layer_weight_csv, network_csv, network_row, planes_csv, stretch

    layers = spec["crossbar_layers"]
    inputs = layer_inputs(model, spec, x)
    pooled = followed_by_pool(model, [layer["name"] for layer in layers])
    gen = np.random.default_rng(seed)
    rows, net_rows = [], []
    for k, layer in enumerate(layers, start=1):
        name = layer["name"]
        value = inputs[name][0][0]
        full_scale = input_range if k == 1 else thetas[k - 2]  # neuron layer k−1 follows crossbar layer k−1
        rate = np.clip(np.abs(value) / full_scale, 0.0, 1.0)
        spikes = (gen.random(rate.shape) < rate).astype(np.uint8)
        weight = model.get_submodule(name).weight.detach().numpy()
        (directory / f"weight{k}.csv").write_bytes(
            layer_weight_csv(weight, float(np.abs(weight).max()) or 1.0, weight_bits))
        if layer["type"] == "conv2d":
            unrolled = stretch(spikes, layer["kernel_size"][0], tuple(layer.get("padding", (0, 0))),
                               tuple(layer["stride"]))
            height, width = value.shape[1:]
        else:
            unrolled, (height, width) = spikes.reshape(1, -1), (1, 1)
        (directory / f"input{k}.csv").write_bytes(planes_csv(unrolled[None]))
        net_rows.append(network_row(layer, height, width, pooled[name]))
        rows.append({"layer": k, "name": name, "rate": float(rate.mean()),
                     "activity_sample": float(unrolled.mean()), "windows": len(unrolled)})
    (directory / NETWORK).write_text(network_csv(net_rows))
    return rows
