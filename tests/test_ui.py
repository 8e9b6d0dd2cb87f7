"""Progress output: a rich bar on a terminal, plain rate-limited lines when stderr is a log."""

import io
import re

from rich.console import Console
from rich.progress import Progress

from cimtool import ui
from cimtool.ui import LogProgress, Reporter

LINE = re.compile(r"^(?P<desc>[\w ()]+): (?P<done>\d+)/(?P<total>\d+) steps  (?P<rate>[\d.]+)/s  "
                  r"(?P<eta>ETA \d+ (s|min)|done in \d+ (s|min))(  (?P<status>.+))?$")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TtyIO(io.StringIO):
    def isatty(self) -> bool:
        return True


def _reporter(quiet: bool = False,
              file: io.StringIO | None = None) -> tuple[Reporter, io.StringIO, FakeClock]:
    file = file if file is not None else io.StringIO()
    clock = FakeClock()
    console = Console(file=file, highlight=False, width=80)
    return Reporter(quiet=quiet, console=console, clock=clock), file, clock


def _train_like(reporter: Reporter, clock: FakeClock, steps: int = 100, seconds_per_step: float = 0.5,
                completed: int = 0) -> None:
    """Drive progress the way cimtool/train/loop.py does: advance per step, status now and then."""
    with reporter.progress() as progress:
        task = progress.add_task("train", total=steps, completed=completed, status="")
        for step in range(completed, steps):
            clock.now += seconds_per_step
            progress.advance(task)
            if step % 10 == 0:
                progress.update(task, status=f"ep {step // 10 + 1}/10 loss {1 / (step + 1):.3f}")
        progress.update(task, status="ep 10/10 val_acc 0.9000")


def test_log_lines_carry_rate_eta_and_status():
    reporter, file, clock = _reporter()
    _train_like(reporter, clock)  # 100 steps at 2 steps/s: 50 s in all
    lines = file.getvalue().splitlines()
    # one line per 10 s while running (after steps 20, 40, 60, 80), one at the end
    assert lines == [
        "train: 20/100 steps  2.0/s  ETA 40 s  ep 2/10 loss 0.091",
        "train: 40/100 steps  2.0/s  ETA 30 s  ep 4/10 loss 0.032",
        "train: 60/100 steps  2.0/s  ETA 20 s  ep 6/10 loss 0.020",
        "train: 80/100 steps  2.0/s  ETA 10 s  ep 8/10 loss 0.014",
        "train: 100/100 steps  2.0/s  done in 50 s  ep 10/10 val_acc 0.9000",
    ]
    assert all(LINE.match(line) for line in lines), lines


def test_log_lines_are_rate_limited_by_the_named_interval(monkeypatch):
    monkeypatch.setattr(ui, "LOG_INTERVAL_S", 3.0)
    reporter, file, clock = _reporter()
    _train_like(reporter, clock, steps=20, seconds_per_step=1.0)
    done = [int(LINE.match(line)["done"]) for line in file.getvalue().splitlines()]
    assert done == [3, 6, 9, 12, 15, 18, 20]  # every 3 s of the fake clock, then the last line
    monkeypatch.setattr(ui, "LOG_INTERVAL_S", 60.0)
    reporter, file, clock = _reporter()
    _train_like(reporter, clock, steps=20, seconds_per_step=1.0)
    assert file.getvalue().splitlines() == [
        "train: 20/20 steps  1.0/s  done in 20 s  ep 10/10 val_acc 0.9000"]


def test_resumed_task_rate_counts_only_new_steps_and_update_keywords_work(monkeypatch):
    monkeypatch.setattr(ui, "LOG_INTERVAL_S", 0.0)
    reporter, file, clock = _reporter()
    with reporter.progress() as progress:
        task = progress.add_task("NeuroSim", total=10, status="floorplan")
        clock.now += 4
        progress.update(task, completed=2, status="layer 3")  # 0.5/s, 8 left
        clock.now += 8
        progress.update(task, total=20, description="NeuroSim (2 runs)", advance=2)
    assert file.getvalue().splitlines() == [
        "NeuroSim: 2/10 steps  0.5/s  ETA 16 s  layer 3",
        "NeuroSim (2 runs): 4/20 steps  0.33/s  ETA 48 s  layer 3",
        "NeuroSim (2 runs): 4/20 steps  0.33/s  stopped after 12 s  layer 3",  # never reached 20
    ]

    reporter, file, clock = _reporter()
    _train_like(reporter, clock, steps=100, seconds_per_step=0.25, completed=60)  # --resume: 60 done
    lines = [LINE.match(line) for line in file.getvalue().splitlines()]
    assert (lines[0]["done"], lines[0]["rate"], lines[0]["eta"]) == ("61", "4.0", "ETA 10 s")
    assert (lines[-1]["done"], lines[-1]["rate"], lines[-1]["eta"]) == ("100", "4.0", "done in 10 s")


def test_quiet_prints_nothing_and_a_terminal_keeps_the_rich_bar(monkeypatch):
    monkeypatch.setattr(ui, "LOG_INTERVAL_S", 0.0)
    reporter, file, clock = _reporter(quiet=True)
    _train_like(reporter, clock)
    reporter.log("hidden")
    assert file.getvalue() == ""

    reporter, file, clock = _reporter(file=TtyIO())
    with reporter.progress() as progress:
        assert isinstance(progress, Progress)
    reporter, file, clock = _reporter()
    with reporter.progress() as progress:
        assert isinstance(progress, LogProgress)


def test_cli_run_with_stderr_captured_prints_progress_lines(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(ui, "LOG_INTERVAL_S", 0.0)  # every update prints: a short run shows lines
    result = cli("train-ann", "--epochs", "2", "--dataset", "digits", "--frontend-epochs", "1",
                 "--artifacts-root", tmp_path, "--json")
    assert result.code == 0, result.err
    lines = [m for m in map(LINE.match, result.err.splitlines()) if m]
    head = [m for m in lines if m["desc"] == "head"]
    assert head and {m["total"] for m in head} == {"20"}  # 2 epochs × 10 batches of 128 from 1,258
    assert [m["eta"].startswith("done in") for m in head] == [False] * (len(head) - 1) + [True]
    assert head[-1]["done"] == "20" and float(head[-1]["rate"]) > 0
    assert head[-1]["status"].startswith("ep 2/2 val_acc ")
    assert "━" not in result.err  # no rich bar in a log
    assert result.out.startswith('{"artifact"')


def test_plural():
    assert [ui.plural(n, "chip") for n in (0, 1, 2)] == ["0 chips", "1 chip", "2 chips"]
    assert [ui.plural(n, "matrix", "matrices") for n in (1, 3)] == ["1 matrix", "3 matrices"]


COUNTED = ("chip", "trial", "configuration", "layer", "unit", "epoch")


def test_counts_are_printed_with_their_number():
    """No "1 chips" or "1 layer(s)": a count of one of the COUNTED nouns is printed through
    ui.plural, never as ``f"{n} chips"`` (every f-string under cimtool/ is parsed)."""
    import ast
    from pathlib import Path

    import cimtool

    noun = re.compile(rf"^ ({'|'.join(COUNTED)})(s|\(s\))(?![\w(/])")  # "epochs/s" is a unit, not a count
    found, package = [], Path(cimtool.__file__).parent
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr):
                for value, text in zip(node.values, node.values[1:], strict=False):
                    match = noun.match(str(text.value)) if isinstance(text, ast.Constant) else None
                    if isinstance(value, ast.FormattedValue) and match:
                        where = f"{path.relative_to(package.parent)}:{text.lineno}"
                        found.append(f"{where}: {{{ast.unparse(value.value)}}}{match.group(0)}")
    assert found == [], "\n".join(found)
