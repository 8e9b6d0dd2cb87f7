"""`cimtool devices list|show`: the shipped device cards, or any card file, validated and shown."""

from __future__ import annotations

from cimtool.devices.card import load_card, preset_names
from cimtool.ui import Reporter


def list_cards(reporter: Reporter) -> None:
    cards = [load_card(name) for name in preset_names()]
    if reporter.json_mode:
        reporter.result({"devices": [c.to_dict() for c in cards]})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="device cards (--device NAME, or a path to your own .toml)")
    for column in ("name", "g_min (S)", "g_max (S)", "on/off", "levels", "description"):
        table.add_column(column)
    for c in cards:
        table.add_row(c.name, f"{c.g_min:.4g}", f"{c.g_max:.4g}", f"{c.g_max / c.g_min:.4g}",
                      f"{c.levels} {c.spacing}", c.description)
    Console(highlight=False).print(table)


def show_card(name_or_path: str, reporter: Reporter) -> None:
    card = load_card(name_or_path)
    if reporter.json_mode:
        reporter.result({"device": card.to_dict()})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{card.name}: {card.description}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in card.to_dict().items():
        if key in ("name", "description"):
            continue
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        table.add_row(key, shown)
    table.add_row("r_on / r_off (ohm)", f"{card.r_on:.6g} / {card.r_off:.6g}")
    Console(highlight=False).print(table)
    if card.assumed:
        Console(highlight=False).print(f"[yellow]assumed (not measured):[/yellow] {', '.join(card.assumed)}")
