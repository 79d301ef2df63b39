"""The parity check's table (rich) and progress bar: what `medkit verify` and `medkit export` show of
medkit.convert.verify's results."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medkit.convert.verify import Parity, Step


def table(results: list[Parity]) -> Any:
    from rich.table import Table

    f16 = next((r for r in results if r.type == "f16"), None)
    t = Table(title="GGUF parity vs transformers (same token ids)")
    for col in (
        "type",
        "imatrix",
        "positions",
        "top-1 agree",
        "max |Δlogit|",
        "ppl",
        "ppl vs f16",
        "KL vs HF",
        "plain KL",
        "tokens",
        "result",
    ):
        t.add_column(col, justify="right" if col not in ("type", "imatrix", "tokens", "result") else "left")
    for r in results:
        base = f16.ppl if f16 else r.ppl_hf
        verdict = ("PASS" if r.passed else "FAIL") if r.required else ("ok" if r.passed else "FAIL")
        t.add_row(
            r.type,
            imatrix_cell(r.calibration),
            str(r.positions),
            f"{100 * r.agreement:.1f}%",
            f"{r.max_logit_diff:.4f}",
            f"{r.ppl:.3f}",
            f"{100 * (r.ppl / base - 1):+.2f}%",
            f"{r.kl_vs_hf:.5f}",
            "—" if r.plain_kl is None else f"{r.plain_kl:.5f}",
            "same" if r.tokenization_ok else "DIFFER",
            verdict,
        )
    return t


def imatrix_cell(calibration: str | None) -> str:
    """The parity table's "imatrix" column: yes / yes+gptq / no (quantized with one, with GPTQ codes too,
    without), — for a float file."""
    if calibration is None:
        return "—"
    mix = " (mix)" if calibration.endswith(" mix") else ""
    from medkit.formats.gguf_header import level

    return ("no", "yes", "yes+gptq")[level(calibration)] + mix  # one cell per gguf_header.LEVELS


@contextmanager
def progress_bar(console: Any = None) -> Iterator[Callable[[int], Step]]:
    """A rich progress bar on stderr, shown only on a terminal and removed when done (transient)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = console or Console(stderr=True)
    columns = (
        TextColumn("verify: {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:

        def start(total: int) -> Step:
            task = bar.add_task("loading", total=total)
            return lambda label: bar.update(task, advance=1, description=label, refresh=True)

        yield start
