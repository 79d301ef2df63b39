"""`medkit merge`: a run's LoRA adapter merged into its base, saved as an HF folder (safetensors).

    medkit merge                         # latest run -> runs/<name>/export/merged/
    medkit merge runs/x --report         # + val perplexity of each merge choice, stored in run.json
    medkit merge runs/x --from-4bit      # merge into the NF4-dequantized base the adapter was trained on

The merge itself: medkit.convert.adapter.merge; the --report measurements: merge_report.
"""

from __future__ import annotations

from pathlib import Path

import click

from medkit.convert.adapter.merge import merge_run


@click.command(name="merge")
@click.argument("run", required=False)
@click.option(
    "--from-4bit",
    "from_4bit",
    is_flag=True,
    help="Merge into the NF4-dequantized base (what QLoRA trained on).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (default: RUN/export/merged/).",
)
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option(
    "--report", is_flag=True, help="Also measure val perplexity of each merge choice (stored in run.json)."
)
@click.option(
    "--max-examples",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Val examples for --report.",
)
def command(
    run: str | None, from_4bit: bool, out: Path | None, force: bool, report: bool, max_examples: int
) -> None:
    """Merge a run's LoRA adapter into its base (default: the latest run) and save an HF folder."""
    from medkit.runs import find_run

    rd = find_run(run)
    path = merge_run(rd, from_4bit=from_4bit, out=out, force=force, log=click.echo)
    click.echo(f"wrote {path}")
    if report:
        from medkit.convert.adapter.merge_report import print_report, report_run

        print_report(report_run(rd, merged_dir=path, from_4bit=from_4bit, max_examples=max_examples))
