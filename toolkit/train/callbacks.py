"""What the training loop reports, and who shows it (the shape of mlx-lm's TrainingCallback).

The loop (medkit.train.loop.Trainer.fit) only trains and keeps its records (metrics.jsonl, run.json):
it sums the steps since the last log line in a Window, hands a Report to its callback at each log step
and the step number at each step's end. ProgressDisplay, the default, shows a rich progress bar on a
terminal and one line per log step elsewhere; a test or an app embedding the trainer passes its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class Window:
    """The train steps since the last log line: what a line's loss, tokens/s and MFU average over."""

    loss_x_tokens: float = 0.0  # sum of each step's mean loss x its trained tokens
    tokens: int = 0  # trained (label) tokens
    input_tokens: int = 0
    seconds: float = 0.0  # in train steps only: an eval or a checkpoint between logs is not training time
    flops: float = 0.0

    def add(self, loss: float, tokens: int, input_tokens: int, seconds: float, flops: float) -> None:
        self.seconds += seconds
        self.flops += flops
        self.loss_x_tokens += loss * tokens
        self.tokens += tokens
        self.input_tokens += input_tokens

    @property
    def mean_loss(self) -> float:
        return self.loss_x_tokens / max(self.tokens, 1)

    @property
    def tokens_per_s(self) -> float:
        return self.input_tokens / max(self.seconds, 1e-9)


@dataclass(frozen=True)
class Report:
    """One log step, as metrics.jsonl records it."""

    step: int
    total_steps: int
    loss: float  # mean over the window's trained tokens
    lr: float
    tokens_per_s: float  # input tokens per second of train steps
    mfu: float | None  # model FLOPs utilisation (None: the model's shape or the peak is unknown)


class TrainingCallback:
    """The loop's listener; every method does nothing unless overridden."""

    def on_train_begin(self, step: int, total_steps: int) -> None:
        """Before the first step (``step`` > 0 on a resumed run)."""

    def on_train_loss_report(self, report: Report) -> None:
        """After each log step (every train.log_every steps, and the last)."""

    def on_step_end(self, step: int) -> None:
        """After every step."""

    def on_train_end(self) -> None:
        """After the last step, on an early stop and on an error."""


@contextmanager
def running(callback: TrainingCallback, step: int, total_steps: int) -> Iterator[TrainingCallback]:
    """on_train_begin, then on_train_end however the loop ends."""
    callback.on_train_begin(step, total_steps)
    try:
        yield callback
    finally:
        callback.on_train_end()


class ProgressDisplay(TrainingCallback):
    """A progress bar (loss, lr, tokens/s, MFU) on a terminal; one line per log step through ``log`` when
    there is none (a log file, CI)."""

    def __init__(self, console: Any, show: bool, log: Callable[[str], None]):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.log = log
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn(
                "loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[tps]} tok/s  MFU {task.fields[mfu]}"
            ),
            TimeRemainingColumn(), console=console, disable=not show, transient=False,
        )  # fmt: skip
        self.task: Any = None

    def on_train_begin(self, step: int, total_steps: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=total_steps, completed=step, loss="-", lr="-", tps="-", mfu="-"
        )

    def on_train_loss_report(self, report: Report) -> None:
        shown = f"{report.mfu:.1%}" if report.mfu is not None else "-"
        tps = f"{report.tokens_per_s:,.0f}"
        self.progress.update(self.task, loss=f"{report.loss:.4f}", lr=f"{report.lr:.2e}", tps=tps, mfu=shown)
        if not self.progress.live.is_started:  # no terminal: one line per log step instead
            self.log(f"step {report.step}/{report.total_steps}  loss {report.loss:.4f}  lr {report.lr:.2e}  "
                     f"{tps} tok/s  MFU {shown}")  # fmt: skip

    def on_step_end(self, step: int) -> None:
        self.progress.update(self.task, completed=step)

    def on_train_end(self) -> None:
        self.progress.stop()
