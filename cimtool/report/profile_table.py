"""The rich table of a ``profile`` artifact's rows (``cimtool profile`` prints it): a row per
mode/phase/dtype/device, a column per batch size."""

from __future__ import annotations

import math
from typing import Any

PHASE_LABELS = {"forward": "fwd", "forward_backward": "fwd+bwd"}  # in the rich table


def si(value: float) -> str:
    """A positive figure to 3 significant digits with a k/M/G suffix: 1.23k, 45.6M."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _cell_text(latency: float | None, throughput: float | None) -> str:
    if latency is None or throughput is None or not math.isfinite(latency):
        return "—"
    return f"{latency:.3g} ms\n{si(throughput)}/s"


def render(rows: list[dict[str, Any]], title: str | None = None, caption: str | None = None):
    """The ANN vs SNN table: a row per mode/phase/dtype/device, a column per batch size, cells
    "median latency ms" over "samples per second" ("—": not measured, see the notes)."""
    from rich import box
    from rich.table import Table

    batches = sorted({int(r["batch_size"]) for r in rows})
    groups: dict[tuple[str, str, str, str], dict[int, dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["mode"], r["phase"], r["dtype"], r["device"]), {})[int(r["batch_size"])] = r
    notes = list(dict.fromkeys(r["note"] for r in rows if r.get("note")))
    legend = (f"cells: median latency, samples per second; peak MB and ops at B={batches[-1]}; "
              "fwd+bwd = forward + backward" if batches else None)
    table = Table(title=title, caption="\n".join(filter(None, [caption, legend, *notes])) or None,
                  box=box.SIMPLE_HEAD, show_lines=True)
    body = []
    for (mode, phase, dtype, device), by_batch in groups.items():
        memory = by_batch.get(batches[-1], {}).get("peak_memory_mb")
        op_count = next((r["op_count"] for r in by_batch.values() if r.get("op_count") is not None), None)
        cells = [by_batch.get(b, {}) for b in batches]
        body.append([mode, PHASE_LABELS.get(phase, phase), dtype, device,
                     *(_cell_text(c.get("latency_ms"), c.get("throughput_sps")) for c in cells),
                     "—" if memory is None else f"{memory:.3g}",
                     "—" if op_count is None else f"{int(op_count):,}"])
    headers = ["mode", "phase", "dtype", "device", *(f"B={b}" for b in batches), "peak MB", "ops"]
    for i, name in enumerate(headers):
        width = max(len(line) for text in [name, *(row[i] for row in body)] for line in text.splitlines())
        table.add_column(name, style="bold" if i == 0 else None, justify="left" if i < 4 else "right",
                         no_wrap=True, min_width=width)
    for row in body:
        table.add_row(*row)
    return table
