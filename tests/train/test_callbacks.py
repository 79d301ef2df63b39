"""The loop hands its display to a callback (medkit.train.callbacks): what it reports is what metrics.jsonl
records, and the default display shows one line per log step where there is no terminal."""

from __future__ import annotations

import io
import json

import pytest

from medkit.train.callbacks import ProgressDisplay, Report, TrainingCallback, Window


class Recording(TrainingCallback):
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def on_train_begin(self, step: int, total_steps: int) -> None:
        self.events.append(("begin", (step, total_steps)))

    def on_train_loss_report(self, report: Report) -> None:
        self.events.append(("report", report))

    def on_step_end(self, step: int) -> None:
        self.events.append(("step", step))

    def on_train_end(self) -> None:
        self.events.append(("end", None))


def test_window_averages_over_trained_tokens_and_step_time():
    w = Window()
    w.add(loss=2.0, tokens=10, input_tokens=30, seconds=0.5, flops=100.0)
    w.add(loss=1.0, tokens=30, input_tokens=50, seconds=1.5, flops=300.0)
    assert w.mean_loss == pytest.approx((2.0 * 10 + 1.0 * 30) / 40)
    assert w.tokens_per_s == pytest.approx(80 / 2.0)
    assert (w.tokens, w.input_tokens, w.flops) == (40, 80, 400.0)
    assert Window().mean_loss == 0.0 and Window().tokens_per_s == 0.0


def test_progress_display_without_a_terminal_logs_one_line_per_report():
    from rich.console import Console

    lines: list[str] = []
    display = ProgressDisplay(Console(file=io.StringIO(), force_terminal=False), show=False, log=lines.append)
    display.on_train_begin(0, 4)
    display.on_train_loss_report(Report(2, 4, 1.23456, 3e-3, 1234.5, 0.125))
    display.on_train_loss_report(Report(4, 4, 1.0, 1e-3, 99.0, None))
    display.on_step_end(4)
    display.on_train_end()
    assert lines == [
        "step 2/4  loss 1.2346  lr 3.00e-03  1,234 tok/s  MFU 12.5%",
        "step 4/4  loss 1.0000  lr 1.00e-03  99 tok/s  MFU -",
    ]
    assert display.progress.tasks[0].completed == 4


def test_fit_reports_what_metrics_records(make_recipe, tmp_path):
    from medkit.train.verb import train

    rec = Recording()
    r = make_recipe(out=tmp_path / "cb", sets={"train.max_steps": 5, "train.log_every": 2, "train.eval_every": 0,
                                               "train.save_every": 0})  # fmt: skip
    res = train(r, callback=rec)
    kinds = [k for k, _ in rec.events]
    assert kinds[0] == "begin" and rec.events[0][1] == (0, 5) and kinds[-1] == "end"
    assert [v for k, v in rec.events if k == "step"] == [1, 2, 3, 4, 5]
    reports = [v for k, v in rec.events if k == "report"]
    assert isinstance(reports[0], Report)
    assert [x.step for x in reports] == [2, 4, 5]  # every log_every steps, and the last
    for i, (kind, value) in enumerate(rec.events):
        if kind == "report":  # a log step reports before its step ends
            assert rec.events[i + 1] == ("step", value.step)
    logged = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [x for x in logged if "loss" in x]
    assert [x["step"] for x in logged] == [2, 4, 5]
    for got, want in zip(reports, logged, strict=True):
        assert round(got.loss, 6) == want["loss"] and got.lr == want["lr"]
        assert round(got.tokens_per_s, 1) == want["tokens_per_s"] and got.total_steps == 5
