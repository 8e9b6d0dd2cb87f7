"""LBPNet's cost table (docs/lbpnet.md#cost): per stage, the paper's LBP + RP count; per dense
layer (1×1 shortcuts and the head), its MACs; a total row; and, for scale, the MACs of
``mnist_cnn`` on the same input. ``train-ann`` and ``profile`` both write it (``cost.parquet``)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import torch

from cimtool.models.lbpnet import COST_TOTALS, LBPNet, cost_summary, paper_cost, reference_parameters
from cimtool.models.macs import count_macs, macs_by_layer
from cimtool.models.registry import MODELS, make_spec

COST_SCHEMA = pa.schema([
    ("layer", pa.string()), ("kind", pa.string()), ("height", pa.int64()), ("width", pa.int64()),
    ("in_channels", pa.int64()), ("out_channels", pa.int64()), ("comparisons", pa.int64()),
    ("additions", pa.int64()), ("multiplications", pa.int64()), ("gops", pa.float64()),
    ("lbp_bytes", pa.int64()), ("rp_bytes", pa.int64()), ("size_bytes", pa.int64()),
    ("channel_comparisons", pa.int64()), ("channel_additions", pa.int64()), ("dense_macs", pa.int64()),
])


def cost_table(model: LBPNet, input_shape: tuple[int, int, int]) -> tuple[pa.Table, dict[str, Any]]:
    """(``cost.parquet``'s table, the summary's cost entries) of ``model`` at ``input_shape``."""
    channels, height, width = input_shape
    sample = torch.zeros(1, channels, height, width)
    macs = macs_by_layer(model, sample)
    stages = paper_cost(model.cfg, height, width, channels)
    rows = [{**r, "kind": "lbp+rp", "dense_macs": macs.pop(f"{r['layer']}.shortcut", 0)} for r in stages]
    modules = dict(model.named_modules())
    for name, n in macs.items():  # what is left: the head's Linear layers
        layer = modules[name]
        rows.append({"layer": name, "kind": "dense", "height": 1, "width": 1,
                     "in_channels": layer.in_features, "out_channels": layer.out_features,
                     **dict.fromkeys(COST_TOTALS, 0), "gops": 0.0, "dense_macs": n})
    paper = cost_summary(stages)
    dense = sum(r["dense_macs"] for r in rows)
    rows.append({"layer": "total", "kind": "total", **paper, "dense_macs": dense})
    cnn = make_spec("mnist_cnn", None, input_shape, model.head[-1].out_features, [])
    summary = {"lbp_cost": paper, "n_parameters_reference": reference_parameters(model), "dense_macs": dense,
               "mnist_cnn_macs": count_macs(MODELS["mnist_cnn"].build(cnn), sample)}
    return pa.Table.from_pylist(rows, schema=COST_SCHEMA), summary
