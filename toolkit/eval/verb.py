"""`medkit eval`: base vs fine-tuned vs each GGUF on held-out data, one table.

    medkit eval                                  # latest run: base, tuned, every GGUF in export/
    medkit eval runs/smollm2_demo --n 50 --gguf runs/smollm2_demo/export/model-q4_0.gguf
    medkit eval --against none --set eval.max_new_tokens=64
    medkit eval runs/smollm2_icd10_grpo_demo --against runs/smollm2_icd10_demo   # vs the run it started from

Writes eval.md, eval.json and eval.png into the run directory (atomically, and only when everything
ran). Torch, transformers, peft and llama.cpp are imported inside the functions that need them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from medkit.errors import EvalError
from medkit.eval.constrained import constrained_spec, score_constrained
from medkit.eval.metrics import check_references, guess_task, metrics_for_task
from medkit.eval.report import build_report, print_table, write_outputs
from medkit.eval.score import EvalSet, score_gguf, score_hf_models
from medkit.runs import RunDir, find_run, latest_run
from medkit.validate import set_option

if TYPE_CHECKING:  # the schema, for annotations only (no import cycle at run time)
    from medkit.recipe import Recipe

# ---- the public entry point --------------------------------------------------------------------------


def evaluate_run(
    run_dir: str | Path | RunDir | None = None,
    *,
    split: str | None = "test",
    n: int | None = None,
    ggufs: Sequence[str | Path] | None = None,
    against: str = "base",
    tuned: bool = True,
    metrics: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    write: bool = True,
    out: str | Path | None = None,
    progress: Any = None,
    warn: Any = None,
) -> dict[str, Any]:
    """Score base (``against='base'``), the tuned adapter and each GGUF; return the table as a dict.
    ``against`` may instead name another run on the same base (its directory or name, e.g. the run this
    one started from, `train.init_from`): its adapter is scored as a column named after it, and the report
    gets the paired bootstrap interval of each metric's difference, tuned minus it.

    ``ggufs=None`` means every model GGUF in the run's export/; ``split=None`` the recipe's eval split.
    With ``write`` the table goes to eval.md / eval.json / eval.png in the run directory (in folder ``out``
    instead when given, e.g. a second table sampled at another temperature, and the run's manifest keeps
    its own eval). ``warn`` gets one
    line for each GGUF made from another adapter than the run's adapter/ (it is still scored).
    """
    from medkit.formats.gguf_header import calibration
    from medkit.provenance import stale_reason
    from medkit.recipe import load_recipe

    say = progress or (lambda msg: None)
    warn = warn or say
    run = run_dir if isinstance(run_dir, RunDir) else (find_run(run_dir) if run_dir else latest_run())
    recipe = load_recipe(run.recipe, list(overrides))
    others = _against_run(run, recipe, against, tuned)
    gguf_paths = _gguf_list(run, ggufs)
    if tuned and not (run.adapter / "adapter_config.json").is_file():
        raise EvalError(f"no PEFT adapter in {run.adapter}", hint="train first, or pass --no-tuned")
    tokenizer = _tokenizer(run, recipe)
    evset = _eval_set(
        recipe, tokenizer, split or recipe.eval.split, recipe.eval.n if n is None else n, metrics
    )
    _check_ggufs(recipe.model.base, tokenizer, gguf_paths)
    spec = constrained_spec(
        recipe.eval.constrain, evset.task, tokenizer
    )  # icd10 tasks: every model constrained too
    stale = {path: reason for path in gguf_paths if (reason := stale_reason(path))}
    for reason in stale.values():
        warn(reason)
    if not (against == "base" or tuned or gguf_paths):
        raise EvalError("nothing to evaluate: no base, no tuned model and no GGUF")

    calibrations = [calibration(path) for path in gguf_paths]
    results: dict[str, dict[str, Any]] = {}
    if against == "base" or tuned:
        results.update(score_hf_models(run, recipe, tokenizer, evset, against == "base", tuned, say, others))
    for path, cal, name in zip(
        gguf_paths, calibrations, _gguf_names(run, gguf_paths, calibrations), strict=True
    ):
        say(f"scoring {name} ({path.name}) on {len(evset.examples)} examples")
        results[name] = {"kind": "gguf", "source": str(path), "calibration": cal, **score_gguf(path, evset)}
        if path in stale:
            results[name]["stale"] = stale[path]

    if spec:
        names = list(zip(_gguf_names(run, gguf_paths, calibrations), gguf_paths, strict=True))
        results.update(score_constrained(score_hf_models, score_gguf, run=run, recipe=recipe, tokenizer=tokenizer,
                                         evset=evset, spec=spec, want_base=against == "base", want_tuned=tuned,
                                         ggufs=names, say=say, free=dict(results), others=others))  # fmt: skip
    report = build_report(
        run, recipe, split or recipe.eval.split, evset, results, against=[n for n, _ in others]
    )
    if write:
        write_outputs(run, report, Path(out) if out is not None else None)
    return report


# ---- inputs -------------------------------------------------------------------------------------------


def _against_run(run: RunDir, recipe: Recipe, against: str, tuned: bool) -> list[tuple[str, Path]]:
    """[(column name, adapter folder)] of the run named by ``against`` (none for 'base' / 'none'); EvalError
    when it is this run, has no adapter, was trained on another base, or the tuned model is not scored."""
    from medkit.errors import RunNotFoundError

    if against in ("base", "none"):
        return []
    try:
        other = find_run(against)
    except RunNotFoundError as exc:
        raise EvalError(f"--against: {exc.message}", hint="'base', 'none' or a run directory") from None
    if other.path.resolve() == run.path.resolve():
        raise EvalError(f"--against {against}: that is the run being evaluated")
    if not tuned:
        raise EvalError("--against RUN compares the tuned adapter with that run's: drop --no-tuned")
    if not (other.adapter / "adapter_config.json").is_file():
        raise EvalError(f"--against: no PEFT adapter in {other.adapter}", hint="train that run first")
    from medkit.models import same_base
    from medkit.recipe import load_recipe

    base = load_recipe(other.recipe).model.base if other.recipe.is_file() else None
    if not same_base(base, recipe.model.base):
        raise EvalError(
            f"--against: {other.path} was trained on base {base!r}, this run on {recipe.model.base!r}"
        )
    name = other.name if other.name not in RESERVED_NAMES else f"{other.name}-run"
    return [(name, other.adapter)]


def _gguf_list(run: RunDir, ggufs: Sequence[str | Path] | None) -> list[Path]:
    if ggufs is None:
        return run.model_ggufs()
    paths = [Path(g).expanduser() for g in ggufs]
    for p in paths:
        if not p.is_file():
            raise EvalError(f"GGUF file not found: {p}")
    return paths


def _tokenizer(run: RunDir, recipe: Recipe) -> Any:
    """The run's tokenizer (medkit.data.tokens.run_tokenizer), padding with EOS when it has no pad token."""
    from medkit.data.tokens import run_tokenizer

    tok = run_tokenizer(recipe, run.adapter)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def _eval_set(recipe: Recipe, tokenizer: Any, split: str, n: int, metrics: Sequence[str] | None) -> EvalSet:
    from medkit.data.tokens import prepare

    prepared = prepare(recipe, tokenizer)
    rows = getattr(prepared, "rows", {}) or {}
    if split not in rows:
        known = ", ".join(rows) or "none"
        raise EvalError(f"split '{split}' does not exist in {recipe.data.source} (splits: {known})")
    examples, convs = list(getattr(prepared, split, []) or []), list(rows[split])
    if n and n > 0:
        examples, convs = examples[:n], convs[:n]
    if not examples or not convs:
        raise EvalError(f"split '{split}' of {recipe.data.source} has zero examples to evaluate")
    ev = recipe.eval
    task = ev.task if ev.task != "auto" else guess_task([c.answer for c in convs])
    check_references(task, [c.answer for c in convs], where=f"{recipe.data.source} ({split})")
    return EvalSet(
        task=task,
        metrics=metrics_for_task(task, metrics),
        examples=examples,
        conversations=convs,
        prompts={"in_domain": list(ev.prompts.in_domain), "out_of_domain": list(ev.prompts.out_of_domain)},
        system_prompt=recipe.data.system_prompt,
        max_new_tokens=ev.max_new_tokens,
        batch_size=ev.batch_size,
        temperature=ev.temperature,
        seed=ev.seed,
        enable_thinking=recipe.model.enable_thinking,
    )


def _check_ggufs(base: str, tokenizer: Any, paths: Sequence[Path]) -> None:
    """Each GGUF must have the base's architecture, width, depth and vocabulary (metadata vs HF config)."""
    if not paths:
        return
    from transformers import AutoConfig

    from medkit.convert.arch import gguf_arch_of
    from medkit.models import loadable

    cfg = AutoConfig.from_pretrained(loadable(base))
    arch = gguf_arch_of(cfg.model_type)  # e.g. a Mistral base is written as GGUF `llama`
    want = {
        "arch": arch,
        "n_embd": getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None),
        "n_layer": getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None),
    }
    vocab_ok = {cfg.vocab_size, len(tokenizer)}
    for path in paths:
        got = gguf_shape(path)
        for key, value in want.items():
            if got[key] != value:
                raise EvalError(
                    f"GGUF does not match the run's base: {key} {got[key]} != {value} ({base})",
                    where=str(path),
                )
        if got["vocab"] not in vocab_ok:
            raise EvalError(
                f"GGUF does not match the run's base: vocab {got['vocab']} != {cfg.vocab_size} ({base})",
                where=str(path),
            )


def gguf_shape(path: Path) -> dict[str, Any]:
    """arch, n_embd, n_layer and vocab size of a model GGUF, from its header (medkit.formats.gguf_header)."""
    from medkit.errors import RuntimeLoadError
    from medkit.formats.gguf_header import read_gguf_info

    try:
        info = read_gguf_info(path, what="GGUF")
    except RuntimeLoadError as exc:
        raise EvalError(f"not a readable GGUF file ({exc.message})", where=str(path)) from None
    if info.kind == "adapter":
        raise EvalError("this GGUF is a LoRA adapter, not a model", where=str(path))
    if info.kind == "imatrix":
        raise EvalError("this GGUF is an importance matrix (imatrix), not a model", where=str(path))
    vocab = info.get("{arch}.vocab_size") or info.n_vocab
    return {"arch": info.arch or None, "n_embd": info.n_embd, "n_layer": info.n_layer, "vocab": vocab}


RESERVED_NAMES = ("base", "tuned")


def _gguf_names(run: RunDir, paths: Sequence[Path], calibrations: Sequence[str | None]) -> list[str]:
    """Column names: each file's stem without the run's name ('q4_0'). Where GGUFs quantized differently
    share a name, the most calibrated keeps it and the others are '<name>-plain' / '<name>-imatrix'
    (gguf_header.LEVELS); a number is added only to what still collides."""
    from medkit.formats.gguf_header import level

    stems = [_stem_name(run, path) for path in paths]
    best: dict[str, int] = {}
    for s, cal in zip(stems, calibrations, strict=True):
        best[s] = max(best.get(s, -1), level(cal))
    names = [
        f"{s}-{cal.removesuffix(' mix')}" if cal is not None and level(cal) < best[s] else s
        for s, cal in zip(stems, calibrations, strict=True)
    ]
    out: list[str] = []
    for name in names:
        unique, i = name, 2
        while unique in out or unique in RESERVED_NAMES:
            unique, i = f"{name}-{i}", i + 1
        out.append(unique)
    return out


def _stem_name(run: RunDir, path: Path) -> str:
    """'tiny-q4_0.gguf' of run 'tiny' -> 'q4_0'."""
    name = path.stem
    for sep in ("-", "_", "."):
        if name.startswith(run.name + sep) and len(name) > len(run.name) + 1:
            name = name[len(run.name) + 1 :]
    return name


# ---- CLI --------------------------------------------------------------------------------------------


@click.command(name="eval")
@click.argument("target", required=False)
@click.option("--split", default=None, help="Split to evaluate (default: the recipe's eval.split).")
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=0),
    default=None,
    help="Examples to evaluate (default: the recipe's eval.n; 0: all).",
)
@click.option(
    "--gguf",
    "ggufs",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="GGUF file to compare (repeatable; default: every GGUF in the run's export/).",
)
@click.option("--no-gguf", is_flag=True, help="Compare base and tuned only.")
@click.option(
    "--against",
    default="base",
    show_default=True,
    help="Also score the base model ('base'), nothing else ('none'), or another run's adapter on the same "
    "base (its directory or name), with the paired bootstrap interval of the difference.",
)
@click.option("--no-tuned", is_flag=True, help="Skip the fine-tuned (adapter) model.")
@click.option("--metric", "metrics", multiple=True, help="Only these metrics (must fit the task).")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Write eval.md/json/png into this folder instead of the run's (e.g. a second table at "
    "--set eval.temperature=1.0); the run's manifest keeps its eval.",
)
@set_option
def command(target, split, n, ggufs, no_gguf, against, no_tuned, metrics, out, overrides) -> None:
    """Score base vs fine-tuned vs GGUF exports on held-out data.

    TARGET is a run directory or name (default: the latest run), or a .gguf file inside a run's
    export/ folder (compared instead of every GGUF in export/).
    """
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=False)
    run_spec: str | None = target
    gguf_list: list[str] | None = list(ggufs) or None
    if target and target.lower().endswith(".gguf"):
        path = Path(target)
        if not path.is_file():
            raise EvalError(f"GGUF file not found: {path}")
        run_spec, gguf_list = str(path.absolute().parent.parent), [str(path), *(gguf_list or [])]
        if not RunDir(Path(run_spec)).is_run():
            raise EvalError(
                f"{path} is not inside a run's export/ folder", hint="pass the run directory and --gguf FILE"
            )
    if no_gguf:
        gguf_list = []
    report = evaluate_run(
        run_spec,
        split=split,
        n=n,
        ggufs=gguf_list,
        against=against,
        tuned=not no_tuned,
        metrics=metrics or None,
        overrides=overrides,
        out=out,
        progress=lambda msg: console.print(f"[dim]{escape(msg)}[/]"),
        warn=lambda msg: console.print(f"[yellow]note: {escape(msg)}[/]", soft_wrap=True),
    )
    print_table(report, console)
    console.print(f"wrote {Path(out or report['run']) / 'eval.md'}, eval.json, eval.png")
