"""The one place stages talk to the user: logs and progress on stderr, results on stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@dataclass
class Reporter:
    """Carries the output settings of one command (no global state)."""

    quiet: bool = False
    json_mode: bool = False
    console: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)

    @contextmanager
    def progress(self) -> Iterator[Progress]:
        """A rich progress display on stderr; disabled (but still usable) when quiet."""
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=self.quiet,
            transient=False,
        )
        with progress:
            yield progress

    def result(self, payload: dict[str, Any], human: str | None = None) -> None:
        """The command's result: one JSON object on stdout with --json, else a human line."""
        if self.json_mode:
            sys.stdout.write(json.dumps(payload, sort_keys=True, default=str) + "\n")
            sys.stdout.flush()
        elif human is not None:
            Console(highlight=False, soft_wrap=True).print(human)
