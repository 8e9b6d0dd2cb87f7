"""`cimtool devices list|show|new`: the shipped device cards, or any card file, validated and shown;
a commented template to start a card from."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from rich.markup import escape

from cimtool.devices.card import (
    DeviceCard,
    card_entries,
    is_assumed,
    load_card,
    loads_card,
    preset_names,
    template_toml,
)
from cimtool.errors import CimtoolError
from cimtool.ui import Reporter


def card_json(card: DeviceCard) -> dict[str, Any]:
    """The card keyed as its TOML file is (``{"read": {"noise": 0.01}}``), the range also as r_on/r_off."""
    out: dict[str, Any] = {}
    for section, key, value, _ in card_entries(card):
        (out.setdefault(section, {}) if section else out)[key] = value
    return out


def list_cards(reporter: Reporter) -> None:
    cards = [load_card(name) for name in preset_names()]
    if reporter.json_mode:
        reporter.result({"devices": [card_json(c) for c in cards]})
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
        reporter.result({"device": card_json(card)})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=escape(f"{card.name}: {card.description}"))
    for column in ("key", "value", "unit", ""):
        table.add_column(column, style="bold" if column == "key" else None)
    for section, key, value, unit in card_entries(card):
        if key in ("name", "description", "assumed"):
            continue
        shown = escape(f"{value:.6g}" if isinstance(value, float) else str(value))
        mark = "[yellow]assumed[/yellow]" if is_assumed(card, section, key) else ""
        table.add_row(f"{section}.{key}" if section else key, shown, unit, mark)
    Console(highlight=False).print(table)
    if card.assumed:
        Console(highlight=False).print(f"[yellow]assumed (not measured):[/yellow] {', '.join(card.assumed)}")


def new_card(name: str, out: Path | None, force: bool, reporter: Reporter) -> None:
    """Write ``template_toml(name)`` to ``out`` (default ``NAME.toml``), never over a file without
    ``force``."""
    text = template_toml(name)
    path = out if out is not None else Path(f"{name}.toml")
    if path.is_dir():
        raise CimtoolError(f"{path}: is a directory; give --out the card's file (e.g. {path / name}.toml)")
    if path.exists() and not force:
        raise CimtoolError(f"{path}: exists (give --force to replace it)")
    loads_card(text, str(path))  # the template is a card: it must load as one
    partial = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)  # atomic: an interrupted write leaves no half card
    except OSError as exc:
        with contextlib.suppress(OSError):  # its folder may not exist, or be a file
            partial.unlink(missing_ok=True)
        raise CimtoolError(f"{path}: cannot write the card ({exc.strerror or exc})") from None
    reporter.result({"card": str(path), "name": name},
                    human=f"[green]device card template[/green] {escape(str(path))}: replace the "
                          r"\[conductance] and \[read] stand-ins with your device's, then check it with "
                          f"`cimtool devices show {escape(str(path))}`")
