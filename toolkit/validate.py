"""`medkit validate RECIPE`: every recipe problem at once, without training anything."""

from __future__ import annotations

import click

from medkit.errors import RecipeError

set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe key, e.g. --set train.lr=1e-4 (repeatable).",
)


@click.command()
@click.argument("recipe", type=click.Path(), required=False)
@set_option
@click.option("--keys", is_flag=True, help="List every recipe key with its default and help, then exit.")
def command(recipe: str | None, overrides: tuple[str, ...], keys: bool) -> None:
    """Check RECIPE and report every problem at once (exit 1), or summarise it (exit 0)."""
    from rich.console import Console
    from rich.table import Table

    from medkit.recipe import describe_keys, load_recipe

    console = Console(soft_wrap=True)
    if keys:
        table = Table("key", "default", "help", box=None)
        for row in describe_keys():
            table.add_row(*row)
        console.print(table)
        return
    if recipe is None:
        raise click.UsageError("missing argument RECIPE (or use --keys)")
    try:
        r = load_recipe(recipe, overrides)
    except RecipeError as exc:
        click.echo(f"error: {exc.message}", err=True)
        raise SystemExit(1) from None
    steps = f"{r.train.max_steps} steps" if r.train.max_steps else f"{r.train.epochs:g} epoch(s)"
    console.print(f"[green]ok[/green] {recipe}: recipe '{r.name}' -> {r.run_dir()}")
    console.print(f"  model   {r.model.base}  (dtype {r.model.dtype}, template {r.model.chat_template})")
    console.print(f"  data    {r.data.source}  (format {r.data.format}, max_seq_len {r.data.max_seq_len})")
    console.print(
        f"  lora    r={r.lora.r} alpha={r.lora.alpha:g} targets={','.join(r.lora.targets)}; quant {r.quant.mode}"
    )
    console.print(
        f"  train   {steps}, batch {r.train.batch_size} x {r.train.grad_accum}, lr {r.train.lr:g} "
        f"{r.train.scheduler}, optimizer {r.train.optimizer}"
    )
    console.print(f"  eval    task {r.eval.task} on {r.eval.split}; export {','.join(r.export.gguf)}")
    if r.eval.task == "icd10":  # what `medkit data` and train check every label against
        from medkit import icd10

        console.print(
            f"  labels  billable ICD-10-CM codes of {icd10.release()} (checked by medkit data/train)"
        )
