"""`cimtool neurosim-trace`: a DNN+NeuroSim layer record from a model and a batch of its data.

Writes a ``trace`` artifact: ``NetWork.csv``, per crossbar layer ``weight<k>.csv`` and
``input<k>.csv`` (the bits of sample ``--sample`` of the batch), for ``--format v21`` also
``weightOld<k>.csv`` (the weights before the update: of a ``qat --mode onchip`` qmodel, those
before its last on-chip update; of another qmodel, its source model's; else the same weights),
a ``trace_command.sh`` (relative, quoted paths; ``NEUROSIM`` = the binary) and
``layers.parquet`` (per layer: shapes, scales, windows, the input bit activity of the written
sample and averaged over the batch, the padding note). File formats: ``cimtool.neurosim.trace``; the
record is written by ``cimtool.neurosim.record``.

A V2.1 trace of a ``qat --mode onchip`` qmodel holds the record of every epoch its training recorded
(``--record-every``), as V2.1's ``train.py`` writes one per epoch: the last is the record above,
each earlier one the folder ``epoch<e>/`` of the same files, from that epoch's weights and
weightOld (the weights before its last update); ``summary.epochs`` lists them, and each
``trace_command.sh`` gives V2.1 its epoch.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from cimtool import artifacts
from cimtool.checks import check_choice, check_range
from cimtool.errors import CimtoolError
from cimtool.neurosim.record import (
    V21_EPOCH,
    WEIGHT_BITS,
    epoch_folder,
    onchip_training,
    with_weights,
    write_record,
)
from cimtool.neurosim.trace import FORMATS
from cimtool.params import TraceParams  # noqa: F401 (re-exported)
from cimtool.stages.common import StageOutput
from cimtool.ui import Reporter, plural

KIND = "trace"
SPLITS = ("train", "val", "test")


def validate(p: TraceParams) -> None:
    check_choice("--format", p.format, FORMATS)
    for name in ("weight_bits", "input_bits"):
        if getattr(p, name) is not None:
            check_range(f"--{name.replace('_', '-')}", getattr(p, name), 2, 15)
    check_choice("--split", p.split, SPLITS)
    check_range("--batch-size", p.batch_size, 1)
    check_range("--sample", p.sample, 0, p.batch_size - 1, note="(an index into the batch)")


def headline(artifact: artifacts.Artifact) -> str:
    s = artifact.summary
    activity = ", ".join(f"{a:.3f}" for a in s["activity_batch"])
    return (f"[green]trace[/green] {artifact.path}  {plural(s['n_layers'], 'layer')} ({s['format']}, "
            f"{s['weight_bits']}/{s['input_bits']} bits); input bit activity over the batch: {activity}")


def run(p: TraceParams, out: Path | None, root: Path, force: bool, reporter: Reporter) -> artifacts.Artifact:
    from cimtool.models.io import (
        model_splits,
        onchip_epochs,
        onchip_scales,
        open_model,
        resolve_model,
        weights_before_update,
    )
    from cimtool.train.batching import to_float

    validate(p)
    t_start = time.perf_counter()
    model_path = resolve_model(p.model, p.method, root, reporter)
    source, model, spec = open_model(model_path)
    p = TraceParams(**{**asdict(p), "model": str(model_path)})
    if not spec.get("crossbar_layers"):
        raise CimtoolError(f"{model_path}: the model has no crossbar layer to trace")
    splits = model_splits(source, p.data_dir)
    data = splits[p.split]
    if p.batch_size > len(data):
        raise CimtoolError(f"--batch-size {p.batch_size} exceeds the {len(data)} samples "
                           f"of the {p.split} split")
    training = onchip_training(source.params, len(splits["train"])) if source.kind == "qmodel" else None
    if p.weight_bits is None:  # V2.1 maps a weight onto one cell only when WBITS = cellBit
        p = TraceParams(**{**asdict(p), "weight_bits": training["weight_bits"] if training else WEIGHT_BITS})
    elif training and p.format == "v21" and p.weight_bits != training["weight_bits"]:
        reporter.log(f"[yellow]note: --weight-bits {p.weight_bits}: {model_path} was trained on chip with "
                     f"{training['weight_bits']}-bit weights (one cell each); V2.1 takes one precision for "
                     "both")
    before = weights_before_update(source) if p.format == "v21" else None
    old_weights, old_from = before or (None, "the same weights (no update)")
    epochs = (onchip_epochs(source) or {}) if p.format == "v21" else {}  # as V2.1's train.py, each priced
    last = max(epochs, default=V21_EPOCH)
    name = f"{model_path.name}-{p.format}-w{p.weight_bits}a{p.input_bits}"
    output = StageOutput(KIND, out, root, name, force, inputs=[model_path], started=t_start)
    out = output.path
    layers = plural(len(spec['crossbar_layers']), 'layer')
    reporter.log(f"neurosim-trace: {model_path}, {layers}, {p.format}, "
                 f"{p.weight_bits}/{p.input_bits} bits, sample {p.sample} of {p.batch_size} "
                 f"({p.split}) → {out}" + (f"; weightOld: {old_from}" if p.format == "v21" else ""))
    with output.writer(asdict(p)) as writer:
        x = to_float(data.x[: p.batch_size])
        scales = onchip_scales(source)  # on-chip weights: the files hold the device states
        rows = write_record(model, spec, x, p, writer.partial, old_weights, reporter.log, last, scales)
        for epoch, weights in epochs.items():
            if folder := epoch_folder(epoch, last):
                (writer.partial / folder).mkdir()
                twin = with_weights(model, {n: w for n, (w, _) in weights.items()})
                write_record(twin, spec, x, p, writer.partial / folder,
                             {n: old for n, (_, old) in weights.items()}, epoch=epoch, scales=scales)
        summary = {"format": p.format, "weight_bits": p.weight_bits, "input_bits": p.input_bits,
                   "n_layers": len(rows), "sample": p.sample, "batch_size": p.batch_size,
                   "activity_sample": [r["activity_sample"] for r in rows],
                   "activity_batch": [r["activity_batch"] for r in rows],
                   "padding_notes": sum(bool(r["padding_note"]) for r in rows)}
        if p.format == "v21":
            summary["weight_old"] = old_from
            summary["epochs"] = list(epochs) or [V21_EPOCH]
            if training:  # what run-neurosim sets V2.1's training estimate from
                summary["onchip_training"] = training
        return output.commit(writer, [source.as_input("model")], summary)
