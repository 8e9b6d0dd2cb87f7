"""Report figures: matplotlib (Agg) plots of artifact tables, returned as PNG bytes."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # fixed metadata: the same tables give the same bytes
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)
    return buf.getvalue()


def training_curves(metrics: pd.DataFrame, title: str) -> bytes:
    """Loss and accuracy per epoch (train and val) of each training phase."""
    plt = _plt()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
    for phase, part in metrics.groupby("phase", sort=False):
        for split, style in (("train", "-"), ("val", "--")):
            ax_loss.plot(part["epoch"], part[f"{split}_loss"], style, label=f"{phase} {split}")
            ax_acc.plot(part["epoch"], part[f"{split}_acc"], style, label=f"{phase} {split}")
    ax_loss.set(xlabel="epoch", ylabel="loss", title=f"{title}: loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title=f"{title}: accuracy")
    ax_acc.legend(fontsize=7)
    return _png(fig)


def sweep_heatmap(table: pd.DataFrame, best: dict, recommended: dict, title: str) -> bytes:
    """Val accuracy vs weight bits × ADC bits, at the recommendation's scheme and T; best and
    recommended cells outlined."""
    plt = _plt()
    part = table[(table["scheme"] == recommended["scheme"]) & (table["timesteps"] == recommended["timesteps"])
                 & (table["method"] == recommended["method"])]
    grid = part.pivot_table(index="weight_bits", columns="adc_bits", values="val_mean")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    image = ax.imshow(grid.values, cmap="viridis", origin="lower", aspect="auto")
    ax.set_xticks(range(len(grid.columns)), grid.columns)
    ax.set_yticks(range(len(grid.index)), grid.index)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid.values[i, j]:.3f}", ha="center", va="center", fontsize=7, color="white")
    for row, color, label in ((best, "red", "best"), (recommended, "orange", "recommended")):
        same_slice = row["scheme"] == recommended["scheme"] and row["timesteps"] == recommended["timesteps"]
        if same_slice and row["weight_bits"] in grid.index and row["adc_bits"] in grid.columns:
            i, j = list(grid.index).index(row["weight_bits"]), list(grid.columns).index(row["adc_bits"])
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.5, ec=color, label=label))
    ax.set(xlabel="ADC bits", ylabel="weight bits",
           title=f"{title}: val accuracy (scheme {recommended['scheme']}, T={recommended['timesteps']})")
    ax.legend(loc="upper left", fontsize=7)
    fig.colorbar(image, ax=ax)
    return _png(fig)


def sweep_vs_t(table: pd.DataFrame, best: dict, recommended: dict, title: str) -> bytes:
    """Val accuracy vs timesteps for the best and recommended configurations (other knobs fixed)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for row, color, label in ((best, "red", "best"), (recommended, "orange", "recommended")):
        part = table[(table["weight_bits"] == row["weight_bits"]) & (table["adc_bits"] == row["adc_bits"])
                     & (table["scheme"] == row["scheme"]) & (table["method"] == row["method"])]
        part = part.sort_values("timesteps")
        ax.errorbar(part["timesteps"], part["val_mean"], yerr=part["val_std"], color=color, marker="o",
                    label=f"{label}: w{row['weight_bits']} {row['scheme']} adc{row['adc_bits']}")
        ax.plot([row["timesteps"]], [row["val_mean"]], "*", color=color, ms=14)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="timesteps T", ylabel="val accuracy", title=f"{title}: accuracy vs T")
    ax.legend(fontsize=7)
    return _png(fig)


def pareto(points: pd.DataFrame, x: str, y: str, label: str, title: str,
           highlight: dict[str, tuple[float, float]] | None = None) -> bytes:
    """Scatter of (x = energy, y = accuracy) with the Pareto front (lower x, higher y) drawn."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.scatter(points[x], points[y], s=10, alpha=0.5, label=label)
    front = pareto_front(points, x, y)
    ax.step(front[x], front[y], where="post", color="black", lw=1.2, label="Pareto front")
    for name, (px, py) in (highlight or {}).items():
        ax.plot([px], [py], "*", ms=14, label=name)
    ax.set_xscale("log")
    ax.set(xlabel=x, ylabel=y, title=title)
    ax.legend(fontsize=7)
    return _png(fig)


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows not dominated by another (one with lower or equal x and higher y)."""
    ordered = points.sort_values([x, y], ascending=[True, False])
    best = -np.inf
    keep = []
    for index, value in ordered[y].items():
        if value > best:
            keep.append(index)
            best = value
    return ordered.loc[keep]


def level_histograms(cells: pd.DataFrame, n_levels: int, title: str) -> bytes:
    """Per layer, how many cells sit on each conductance level (pos and neg branches)."""
    plt = _plt()
    layers = list(cells["layer"].astype(str).unique())
    fig, axes = plt.subplots(1, len(layers), figsize=(4.5 * len(layers), 3), squeeze=False)
    bins = np.arange(n_levels + 1) - 0.5
    for ax, layer in zip(axes[0], layers, strict=True):
        part = cells[cells["layer"].astype(str) == layer]
        ax.hist([part["level_pos"], part["level_neg"]], bins=bins, label=["pos", "neg"], log=True)
        ax.set(xlabel="conductance level", ylabel="cells", title=f"{title}: {layer}")
        ax.legend(fontsize=7)
    return _png(fig)


def breakdown_bars(runs: dict[str, dict[str, float]], keys: list[str], unit: str, title: str) -> bytes:
    """Stacked bars of one breakdown (area or energy) per NeuroSim run."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(runs) + 2), 3.4))
    bottom = np.zeros(len(runs))
    names = list(runs)
    for key in keys:
        values = np.array([runs[n].get(key) or 0.0 for n in names])
        ax.bar(range(len(names)), values, bottom=bottom, label=key)
        bottom += values
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=7)
    ax.set(ylabel=unit, title=title)
    ax.legend(fontsize=7)
    return _png(fig)
