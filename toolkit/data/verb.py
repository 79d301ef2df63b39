"""`medkit data RECIPE`: the recipe's data rendered as training sees it (trained tokens bold green, masked
dim), its row and token statistics, and a token-length histogram (medkit.data.tokens prepares them)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from medkit.data.rows import SPLITS, load_rows
from medkit.data.tokens import IGNORE, DataStats, Example, prepare
from medkit.recipe import Recipe
from medkit.validate import set_option


@click.command()
@click.argument("recipe", type=click.Path())  # load_recipe reports a folder in one line
@set_option
@click.option(
    "--show", "show", type=click.IntRange(min=0), default=3, show_default=True, help="Examples to print."
)
@click.option("--split", type=click.Choice(SPLITS), default="train", show_default=True, help="Split to show.")
@click.option(
    "--plot", type=click.Path(dir_okay=False), default=None, help="Write a token-length histogram PNG."
)
@click.option("--json", "as_json", is_flag=True, help="Print the stats as JSON instead of tables.")
def command(
    recipe: str, overrides: tuple[str, ...], show: int, split: str, plot: str | None, as_json: bool
) -> None:
    """Render RECIPE's data: examples with the trained part highlighted and the masked part dimmed."""
    from rich.console import Console

    from medkit.recipe import load_recipe

    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # read when `datasets` is imported
    r = load_recipe(recipe, overrides)
    rows = load_rows(r)  # a data fault shows before the tokenizer (and transformers) is loaded
    from medkit.models import load_tokenizer

    tok = load_tokenizer(r.model.base)
    prepared = prepare(r, tok, rows)
    if as_json:
        click.echo(json.dumps({**prepared.stats.to_dict(), "fingerprint": prepared.fingerprint}, indent=2))
    else:
        console = Console(highlight=False)
        examples = prepared.split(split)
        for i, ex in enumerate(examples[:show]):
            console.rule(
                f"{split} example {i + 1}/{len(examples)} (source row {prepared.source_rows[split][i]})"
            )
            console.print(render_example(ex, tok, markers=not console.is_terminal or console.no_color))
        console.print(stats_table(prepared.stats, r))
        console.print(f"fingerprint {prepared.fingerprint[:16]}  (trained tokens bold green, masked dim)")
    if plot:
        write_histogram(prepared.stats, Path(plot), r.data.max_seq_len)
        click.echo(f"wrote {plot}", err=True)


def render_example(ex: Example, tok: Any, markers: bool = False):
    """Rich text of one example: trained tokens bold green, masked tokens dim, special tokens visible.
    ``markers`` also wraps trained spans in « » (for logs and terminals without colour)."""
    from rich.text import Text

    text = Text()
    start = 0
    for i in range(1, len(ex.input_ids) + 1):
        if i == len(ex.input_ids) or (ex.labels[i] == IGNORE) != (ex.labels[start] == IGNORE):
            piece = tok.decode(ex.input_ids[start:i], skip_special_tokens=False)
            trained = ex.labels[start] != IGNORE
            if trained and markers:
                piece = f"«{piece}»"
            text.append(piece, style="bold green" if trained else "dim")
            start = i
    return text


def stats_table(stats: DataStats, recipe: Recipe):
    """Rows kept/dropped by reason (two examples each), token lengths, truncation, trained share."""
    from rich.table import Table

    rep = stats.rows
    t = Table(title=f"data: {recipe.data.source}", show_header=True, header_style="bold", box=None)
    t.add_column("", style="cyan", no_wrap=True)
    t.add_column("value", justify="right")
    t.add_column("details / examples", overflow="fold")
    t.add_row("rows read", str(rep.source_rows), f"layout {rep.layout}; columns {', '.join(rep.columns)}")
    t.add_row("rows kept", str(sum(rep.kept.values())), ", ".join(f"{s} {n}" for s, n in rep.kept.items()))
    for reason, n in sorted(rep.dropped.items(), key=lambda kv: -kv[1]):
        t.add_row(f"dropped: {reason}", str(n), " | ".join(rep.examples.get(reason, [])))
    if any(rep.overlap.values()):
        drop = (
            "dropped from train"
            if recipe.data.clean.drop_overlap
            else "kept: data.clean.drop_overlap drops them"
        )
        seen = ", ".join(f"{s} {n}/{rep.kept.get(s, 0)}" for s, n in rep.overlap.items())
        t.add_row("prompt overlap", str(sum(rep.overlap.values())), f"{seen} also train prompts ({drop})")
    t.add_row(
        "examples",
        str(sum(stats.examples.values())),
        ", ".join(f"{s} {n}" for s, n in stats.examples.items()),
    )
    pct = stats.percentiles()
    t.add_row("tokens/example", str(pct.get("p50", 0)), "  ".join(f"{k} {v}" for k, v in pct.items()))
    t.add_row(
        "truncated answers",
        str(stats.truncated),
        f"max_seq_len {recipe.data.max_seq_len}, {recipe.data.truncation}",
    )
    t.add_row(
        "trained share",
        f"{stats.trained_share:.1%}",
        f"{stats.trained_tokens} of {stats.total_tokens} tokens",
    )
    t.add_row("template", stats.template, f"end of turn {stats.eot_token!r}")
    return t


def write_histogram(stats: DataStats, path: Path, max_seq_len: int) -> None:
    """Token-length histogram per split (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medkit.formats.files import atomic_path

    fig, ax = plt.subplots(figsize=(7, 3.5))
    top = max([max_seq_len] + [n for lens in stats.lengths.values() for n in lens])
    bins = [top * i / 50 for i in range(51)]  # shared edges, so the splits compare
    for s, lens in stats.lengths.items():
        if lens:
            ax.hist(lens, bins=bins, alpha=0.6, label=f"{s} ({len(lens)})")
    ax.axvline(max_seq_len, color="red", linestyle="--", label=f"max_seq_len {max_seq_len}")
    ax.set_xlabel("tokens per example")
    ax.set_ylabel("examples")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
