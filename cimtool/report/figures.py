"""Report figures: matplotlib (Agg) plots of artifact tables, returned as PNG bytes.

Axis and legend labels come from :data:`LABELS` (column and summary keys → words with units), so a
reader never sees a raw column name. Legends sit beside or below the axes, never over the data.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

# column / summary key → the label a reader sees (with its unit); `label` falls back to the key
LABELS = {
    "area_cim_array_um2": "CIM array area (µm²)",
    "area_adc_um2": "ADC area (µm²)",
    "area_accumulation_um2": "accumulation circuits area (µm²)",
    "area_ic_um2": "interconnect area (µm²)",
    "area_other_um2": "other peripheries area (µm²)",
    "adc_energy_pj": "ADC energy (pJ)",
    "accumulation_energy_pj": "accumulation energy (pJ)",
    "other_energy_pj": "other peripheries energy (pJ)",
    "leakage_energy_pj": "leakage energy (pJ)",
    "energy_pj": "energy per inference (pJ)",
    "neurosim_energy_pj": "NeuroSim energy per inference (pJ)",
    "image_energy_pj": "NeuroSim energy per image (pJ)",
    "val_mean": "val accuracy (mean)",
    "test_mean": "test accuracy (mean)",
    "test_accuracy": "test accuracy",
}
HIGHLIGHT = {"best": "red", "recommended": "orange", "best = recommended": "red"}  # the sweep's picks
PICK_KEYS = ("method", "weight_bits", "scheme", "adc_bits", "timesteps")


def picks(best: dict, recommended: dict) -> list[tuple[dict, str]]:
    """The sweep's best and recommended configurations with their legend names; one entry, "best =
    recommended", where they are the same configuration (else one would hide the other)."""
    if all(best.get(k) == recommended.get(k) for k in PICK_KEYS):
        return [(best, "best = recommended")]
    return [(best, "best"), (recommended, "recommended")]


def label(key: str) -> str:
    return LABELS.get(key, key.replace("_", " "))


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


def _legend_right(ax, **kwargs) -> None:
    """The legend beside the axes (right), so it never covers data; the tight bbox keeps it."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, **kwargs)


def _legend_below(ax, ncol: int = 2, offset: float = -0.2) -> None:
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, offset), ncol=ncol, frameon=False)


def training_curves(metrics: pd.DataFrame, title: str) -> bytes:
    """Loss and accuracy per epoch (train and val) of each training phase."""
    plt = _plt()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
    for phase, part in metrics.groupby("phase", sort=False):
        for split, style in (("train", "-"), ("val", "--")):
            ax_loss.plot(part["epoch"], part[f"{split}_loss"], style, label=f"{phase} {split}")
            ax_acc.plot(part["epoch"], part[f"{split}_acc"], style, label=f"{phase} {split}")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    fig.suptitle(title)  # once: a long artifact name in each panel's title would run into the other
    fig.tight_layout()
    _legend_right(ax_acc)
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
            value = grid.values[i, j]
            if np.isfinite(value):  # dark text on the bright (yellow) end of viridis
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7,
                        color="black" if image.norm(value) > 0.6 else "white")
    for row, role in picks(best, recommended):
        same_slice = row["scheme"] == recommended["scheme"] and row["timesteps"] == recommended["timesteps"]
        if same_slice and row["weight_bits"] in grid.index and row["adc_bits"] in grid.columns:
            i, j = list(grid.index).index(row["weight_bits"]), list(grid.columns).index(row["adc_bits"])
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.5, ec=HIGHLIGHT[role],
                                       label=role, clip_on=False))  # an edge cell's outline shows in full
    ax.set(xlabel="ADC bits", ylabel="weight bits",
           title=f"{title}: val accuracy (scheme {recommended['scheme']}, T={recommended['timesteps']})")
    fig.colorbar(image, ax=ax, label=label("val_mean"))
    if ax.patches:
        _legend_below(ax, offset=-0.16)
    return _png(fig)


def sweep_vs_t(table: pd.DataFrame, best: dict, recommended: dict, title: str) -> bytes:
    """Val accuracy vs timesteps for the best and recommended configurations (other knobs fixed)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    steps: set[int] = set()
    chosen = picks(best, recommended)
    for k, (row, role) in enumerate(chosen):
        dodge = 2 ** (0.04 * (k - (len(chosen) - 1) / 2))  # side by side: the error bars do not overlap
        part = table[(table["weight_bits"] == row["weight_bits"]) & (table["adc_bits"] == row["adc_bits"])
                     & (table["scheme"] == row["scheme"]) & (table["method"] == row["method"])]
        part = part.sort_values("timesteps")
        steps.update(int(t) for t in part["timesteps"])
        color = HIGHLIGHT[role]
        ax.errorbar(part["timesteps"] * dodge, part["val_mean"], yerr=part["val_std"], color=color,
                    marker="o", capsize=3,
                    label=f"{role}: w{row['weight_bits']} {row['scheme']} adc{row['adc_bits']}")
        ax.plot([row["timesteps"] * dodge], [row["val_mean"]], "*", color=color, ms=14)
    ax.set_xscale("log", base=2)
    shown = _spaced(sorted(steps))
    ax.set_xticks(shown, [str(t) for t in shown])  # 1 2 4 8, not 2^0 2^1 2^2
    ax.minorticks_off()
    ax.set(xlabel="timesteps T", ylabel="val accuracy (mean ± std)", title=f"{title}: accuracy vs T")
    _legend_below(ax)
    return _png(fig)


def pareto(points: pd.DataFrame, x: str, y: str, what: str, title: str,
           highlight: dict[str, tuple[float, float]] | None = None, annotate: str | None = None) -> bytes:
    """Scatter of (x = energy, y = accuracy) with the Pareto front (lower x, higher y) drawn (from two
    points on); ``annotate``: a column naming each point, each then its own colour and legend entry
    (few points only: a name written beside its point would run into its neighbours')."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    if annotate and len(points) <= 12:
        for k, (px, py, text) in enumerate(zip(points[x], points[y], points[annotate], strict=True)):
            ax.scatter([px], [py], s=24, color=f"C{k % 10}", marker="os^Dv"[k // 10 % 5], label=str(text))
    else:
        ax.scatter(points[x], points[y], s=10, alpha=0.5, color="tab:blue", label=what)
    front = pareto_front(points, x, y)
    if len(points) > 1:
        ax.step(front[x], front[y], where="post", color="black", lw=1.2, label="Pareto front")
    highlight = dict(highlight or {})
    if set(highlight) == {"best", "recommended"} and highlight["best"] == highlight["recommended"]:
        highlight = {"best = recommended": highlight.pop("best")}  # one star, not one hiding the other
    for name, (px, py) in highlight.items():
        ax.plot([px], [py], "*", ms=14, color=HIGHLIGHT.get(name), mec="black", mew=0.5, label=name)
    _energy_axis(ax, points[x].to_numpy(dtype=float))
    ax.set(xlabel=label(x), ylabel=label(y), title=title)
    _legend_right(ax)
    return _png(fig)


def _energy_axis(ax, values: np.ndarray) -> None:
    """A log x axis labelled where labels fit: decades over three decades or more, 1 and 3 × 10^k over
    one to three, a linear axis below one decade (matplotlib's own log labels of a narrow range run
    into each other)."""
    from matplotlib.ticker import LogFormatterSciNotation, LogLocator, MaxNLocator, NullFormatter

    finite = values[np.isfinite(values) & (values > 0)]
    decades = float(np.log10(finite.max() / finite.min())) if finite.size else 0.0
    if decades < 1:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        return
    ax.set_xscale("log")
    if decades < 3:
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 3.0)))
        ax.xaxis.set_major_formatter(LogFormatterSciNotation(labelOnlyBase=False))
    ax.xaxis.set_minor_formatter(NullFormatter())


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
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    layers = list(cells["layer"].astype(str).unique())
    fig, axes = plt.subplots(1, len(layers), figsize=(4.5 * len(layers), 3), squeeze=False)
    bins = np.arange(n_levels + 1) - 0.5
    for ax, layer in zip(axes[0], layers, strict=True):
        part = cells[cells["layer"].astype(str) == layer]
        ax.hist([part["level_pos"], part["level_neg"]], bins=bins, log=True,
                label=["positive column", "negative column"])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # levels are integers
        ax.set_xlim(-0.5, n_levels - 0.5)
        ax.set(xlabel="conductance level", ylabel="cells", title=f"layer {layer}")
    fig.suptitle(title)  # once: the artifact names in each panel's title would run into the next panel's
    fig.tight_layout()
    _legend_right(axes[0][-1])
    return _png(fig)


def breakdown_bars(runs: dict[str, dict[str, float]], keys: list[str], ylabel: str, title: str,
                   labels: dict[str, str] | None = None) -> bytes:
    """Stacked bars of one breakdown (area or energy) per NeuroSim run (``labels``: the keys' names,
    where they differ from :func:`label`'s)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(3.0, 1.0 * len(runs) + 2), 3.4))
    bottom = np.zeros(len(runs))
    names = list(runs)
    for key in keys:
        values = np.array([runs[n].get(key) or 0.0 for n in names])
        ax.bar(range(len(names)), values, bottom=bottom, width=0.6, label=(labels or {}).get(key, label(key)))
        bottom += values
    ax.set_xticks(range(len(names)), names, rotation=20 if len(names) > 1 else 0,
                  ha="right" if len(names) > 1 else "center", fontsize=7)
    ax.set(ylabel=ylabel, title=title)
    handles, labels = ax.get_legend_handles_labels()  # top of the stack first, as drawn
    ax.legend(handles[::-1], labels[::-1], fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1),
              borderaxespad=0)
    return _png(fig)


def per_epoch(rows: pd.DataFrame, keys: list[str], labels: dict[str, str], ylabel: str, title: str) -> bytes:
    """One line per column ``keys`` of ``rows`` against its ``epoch`` column (a log axis: the phases
    of a training epoch span decades)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for key in keys:
        ax.plot(rows["epoch"], rows[key], "o-", label=labels[key])
    ax.set(xlabel="epoch", ylabel=ylabel, title=title, yscale="log")
    ax.xaxis.get_major_locator().set_params(integer=True)
    _legend_right(ax)
    return _png(fig)


_SI = ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"), (1e-15, "f"))


def si_scale(values: np.ndarray | float) -> tuple[float, str]:
    """The SI prefix that shows ``values`` (in base units) as numbers of 1…1000."""
    values = np.asarray(values, dtype=float)
    finite = np.abs(values[np.isfinite(values)])
    peak = float(finite.max()) if finite.size else 0.0
    if peak == 0:
        return 1.0, ""
    for scale, prefix in _SI:
        if peak >= scale:
            return scale, prefix
    return _SI[-1]


def device_fit(points: pd.DataFrame, title: str, max_devices: int = 10) -> bytes:
    """Measured (dots) vs fitted (line) conductance per pulse, LTP then LTD on one pulse axis (a pulse
    train), one colour per device; below, the residuals (measured − fitted)."""
    plt = _plt()
    points = points.assign(direction=points["direction"].astype(str).str.lower(),
                           device=points["device"].astype(str))
    ltp, ltd = points["direction"] == "ltp", points["direction"] == "ltd"
    n_ltp = int(points.loc[ltp, "pulse"].max()) if ltp.any() else 0
    n_ltd = int(points.loc[ltd, "pulse"].max()) if ltd.any() else 0
    points["x"] = points["pulse"] + np.where(ltd, n_ltp, 0)  # LTD pulses continue after the LTP ones
    scale, prefix = si_scale(points[["measured", "fitted"]].to_numpy(dtype=float))
    fig, (ax_g, ax_r) = plt.subplots(2, 1, figsize=(7, 4.6), sharex=True, height_ratios=(2.2, 1))
    devices = list(dict.fromkeys(points["device"]))
    for k, device in enumerate(devices[:max_devices]):
        part = points[points["device"] == device]
        color, cycles = f"C{k % 10}", part["cycle"].nunique()
        over = " (mean over cycles)" if cycles > 1 else ""
        ax_g.scatter(part["x"], part["measured"] / scale, s=6, alpha=0.35, color=color, lw=0,
                     label=f"{device}: measured" + (f" ({cycles} cycles)" if cycles > 1 else ""))
        for i, (_, branch) in enumerate(part.groupby("direction", sort=False)):
            fit = branch.groupby("x")["fitted"].mean()  # one line per direction: none across the turn
            ax_g.plot(fit.index, fit.to_numpy() / scale, color=color, lw=1.6,
                      label=None if i else f"{device}: fitted{over}")
        ax_r.scatter(part["x"], part["residual"] / scale, s=6, alpha=0.35, color=color, lw=0)
    ax_r.axhline(0, color="black", lw=0.8)
    if n_ltp and n_ltd:
        for ax in (ax_g, ax_r):
            ax.axvline(n_ltp + 0.5, color="grey", ls=":", lw=1)
        for x, text in ((0.5 + n_ltp / 2, "LTP (potentiation)"),
                        (0.5 + n_ltp + n_ltd / 2, "LTD (depression)")):
            ax_g.text(x, 1.01, text, transform=ax_g.get_xaxis_transform(), ha="center", va="bottom",
                      fontsize=8, color="dimgrey")
    ax_g.set_ylabel(f"conductance ({prefix}S)")
    ax_g.set_title(title, pad=16 if n_ltp and n_ltd else None)
    ax_r.set(xlabel="pulse number (LTP, then LTD)", ylabel=f"residual ({prefix}S)")
    _legend_right(ax_g, markerscale=2.5)
    if len(devices) > max_devices:
        ax_g.text(1.02, 0, f"(first {max_devices} of {len(devices)} devices shown)", transform=ax_g.transAxes,
                  fontsize=7, va="bottom")
    return _png(fig)


def accuracy_vs_levels(table: pd.DataFrame, title: str) -> bytes:
    """Test accuracy vs quantization levels L of one model's spiking networks: the float ANN, the
    converted-only SNN and the SNN converted from the trained twin (``table``: levels, condition,
    accuracy)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    styles = {"float ANN": ("black", "--", None), "converted only": ("tab:blue", "-", "o"),
              "trained twin": ("tab:orange", "-", "s")}
    for condition, (color, line, marker) in styles.items():
        part = table[table["condition"] == condition].sort_values("levels")
        if len(part):
            ax.plot(part["levels"], part["accuracy"], ls=line, color=color, marker=marker, label=condition)
    levels = sorted(int(v) for v in table["levels"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(v) for v in levels])
    ax.minorticks_off()
    ax.set(xlabel="levels L of the quantized activation", ylabel="test accuracy", title=title)
    _legend_right(ax)
    return _png(fig)


def accuracy_vs_photons(table: pd.DataFrame, title: str) -> bytes:
    """Test accuracy (± std over photon-noise draws) vs photons per pixel at full white, one line per
    ``series`` (``table``: series, photons, accuracy, std)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for k, (series, part) in enumerate(table.groupby("series", sort=True)):
        part = part.sort_values("photons")
        ax.errorbar(part["photons"], part["accuracy"], yerr=part["std"], marker="o", ms=3, capsize=2,
                    color=f"C{k % 10}", label=series)
    ax.set_xscale("log")
    ax.set(xlabel="photons per pixel at full white", ylabel="test accuracy", title=title)
    _legend_below(ax, ncol=1)
    return _png(fig)


def accuracy_vs_t(curves: dict[str, tuple[pd.DataFrame, int | None]], title: str) -> bytes:
    """Val accuracy vs timesteps T, one line per SNN (``curves``: name → (its accuracy_vs_t table, the T
    it was calibrated at, starred))."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    steps: set[int] = set()
    for k, (name, (curve, chosen)) in enumerate(curves.items()):
        curve = curve.sort_values("timesteps")
        color = f"C{k % 10}"
        ax.plot(curve["timesteps"], curve["val_accuracy"], marker="o", ms=3, color=color, label=name)
        at = curve[curve["timesteps"] == chosen]
        if len(at):
            ax.plot(at["timesteps"], at["val_accuracy"], "*", ms=12, color=color, mec="black", mew=0.5)
        steps.update(int(t) for t in curve["timesteps"])
    ax.set_xscale("log", base=2)
    shown = _spaced(sorted(steps))
    ax.set_xticks(shown, [str(t) for t in shown])
    ax.minorticks_off()
    ax.set(xlabel="timesteps T", ylabel="val accuracy", title=title)
    _legend_right(ax)
    return _png(fig)


def _spaced(steps: list[int], min_ratio: float = 1.25, most: int = 16) -> list[int]:
    """The timesteps to label on a log axis, far enough apart that their labels fit: each at least
    ``min_ratio`` times the one before (3 and 4 fit side by side, 100 and 101 do not) and no more than
    about ``most`` over the axis."""
    if not steps:
        return []
    gap = max(np.log2(min_ratio), np.log2(steps[-1] / steps[0]) / most)
    kept = [steps[0]]
    for t in steps[1:]:
        if np.log2(t / kept[-1]) >= gap - 1e-9:
            kept.append(t)
    return kept
