"""The one place stages talk to the user: logs and progress on stderr, results on stdout.

Progress is a rich bar when stderr is a terminal; when it is a log file (a cluster job, CI) it
is a plain line per task at most every ``LOG_INTERVAL_S`` seconds, and one when the task ends.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
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

LOG_INTERVAL_S = 10.0  # seconds between plain progress lines in a log: readable, yet shows a stall


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """A count with its noun in the right number: ``1 chip``, ``3 chips`` (``nouns``: an irregular
    plural, ``plural(2, "matrix", "matrices")``)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


@dataclass
class Reporter:
    """Carries the output settings of one command (no global state)."""

    quiet: bool = False
    json_mode: bool = False
    console: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))
    clock: Callable[[], float] = time.monotonic  # times the plain progress lines

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)

    @contextmanager
    def progress(self) -> Iterator[Progress | LogProgress]:
        """Progress on stderr: a rich bar on a terminal, plain lines in a log; silent when quiet.

        Both offer the same task API: ``add_task``, ``update`` and ``advance``."""
        if not self.quiet and not _is_terminal(self.console):
            with LogProgress(self.console, LOG_INTERVAL_S, self.clock) as lines:
                yield lines
            return
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


def _is_terminal(console: Console) -> bool:
    """Whether the console's file is a terminal (rich's own test also obeys FORCE_COLOR, which
    asks for colours in a log, not for a redrawn bar)."""
    isatty = getattr(console.file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed file
        return False


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float
    fields: dict[str, Any]
    started: float  # clock at add_task
    first_completed: float  # steps already done at add_task (a resumed run): not in the rate
    last_line: float  # clock at the last printed line (at add_task before the first)
    finished: float | None = None  # clock when completed reached total


class LogProgress:
    """The task API of ``rich.progress.Progress`` (``add_task``, ``update``, ``advance``) for a
    stderr that is not a terminal: per task, a plain line at most every ``interval`` seconds while
    it runs and a last one when the display closes, e.g.
    ``train: 1200/4220 steps  38.1/s  ETA 79 s  ep 3/10 loss 0.512``."""

    def __init__(self, console: Console, interval: float, clock: Callable[[], float]) -> None:
        self.console = console
        self.interval = interval
        self.clock = clock
        self.tasks: dict[int, _Task] = {}

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:  # on an error, its one-line message is the last word
            now = self.clock()
            for task in self.tasks.values():
                self._print(task, now, last=True)

    def add_task(self, description: str, total: float | None = 100.0, completed: float = 0,
                 **fields: Any) -> int:
        now = self.clock()
        task_id = len(self.tasks)
        self.tasks[task_id] = _Task(description, total, completed, {"status": "", **fields}, now,
                                    completed, now)
        return task_id

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, **fields: Any) -> None:
        task = self.tasks[task_id]
        if total is not None:
            task.total = total
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        if description is not None:
            task.description = description
        task.fields.update(fields)
        self._tick(task)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def _tick(self, task: _Task) -> None:
        now = self.clock()
        done = task.total is not None and task.completed >= task.total
        if done:
            task.finished = task.finished if task.finished is not None else now
            return  # its last line comes when the display closes, with the final status
        task.finished = None
        if now - task.last_line >= self.interval:
            self._print(task, now)

    def _print(self, task: _Task, now: float, last: bool = False) -> None:
        task.last_line = now
        self.console.print(_line(task, now, last), markup=False, highlight=False,
                           emoji=False, soft_wrap=True)


def _line(task: _Task, now: float, last: bool = False) -> str:
    """``description: done/total steps  rate/s  ETA …  status``; the last line says how long it took."""
    count = _number(task.completed) + (f"/{_number(task.total)}" if task.total is not None else "")
    parts = [f"{task.description}: {count} steps"]
    end = task.finished if task.finished is not None else now
    elapsed = end - task.started
    rate = (task.completed - task.first_completed) / elapsed if elapsed > 0 else None
    parts.append(f"{_rate(rate)}/s" if rate is not None else "-/s")
    if last:
        parts.append(f"{'done in' if task.finished is not None else 'stopped after'} {_duration(elapsed)}")
    elif task.total is not None and rate:
        parts.append(f"ETA {_duration(max(task.total - task.completed, 0) / rate)}")
    else:
        parts.append("ETA ?")
    status = str(task.fields.get("status", "")).strip()
    return "  ".join(parts + ([status] if status else []))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _rate(per_s: float) -> str:
    if per_s >= 100:
        return f"{per_s:.0f}"
    return f"{per_s:.1f}" if per_s >= 1 else f"{per_s:.2g}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
