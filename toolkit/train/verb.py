"""`medkit train RECIPE`: base model + dataset -> a PEFT adapter in runs/<name>/, visibly and reproducibly.

QLoRA (4-bit NF4 base) on CUDA, plain LoRA on CPU/MPS (said in one line), exact resume after Ctrl-C, and
the same command under `torchrun` / `accelerate launch` for several GPUs (the adapter is written once).
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from medkit.errors import DiskSpaceError, TrainError
from medkit.validate import set_option

if TYPE_CHECKING:  # the schema, for annotations only (no import cycle at run time)
    from medkit.recipe import Recipe

TRAIN_OUTPUTS = (
    "checkpoints",
    "adapter",
    "metrics.jsonl",
    "loss.png",
    "run.json",
    "reference",
    "rewards.png",
)


@dataclass
class TrainResult:
    run_dir: Path
    summary: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False


def check_run_dir(
    recipe: Recipe, run_dir: Path, *, resume: bool, force: bool, warn: Callable[[str], None] | None = None
) -> Path | None:
    """Refuse to clobber another recipe's run, an unfinished one or a finished one (without --force); find
    the checkpoint to resume: the newest complete one (`warn` says which damaged ones were skipped)."""
    from medkit.runs import RunDir
    from medkit.train import checkpoint

    run = RunDir(run_dir)
    status, steps = _status(run)
    if resume:
        if status == "finished" and not force:
            raise TrainError(
                f"{run_dir} holds a finished run ({steps} steps): there is nothing to resume",
                hint="--force without --resume to retrain it from the start",
            )
        ckpt, damaged = checkpoint.resumable(run.checkpoints)
        if ckpt is None:
            if damaged:
                raise TrainError(
                    f"--resume: no complete checkpoint in {run.checkpoints}: "
                    + "; ".join(f"{p.name} {why}" for p, why in damaged),
                    hint="--force without --resume to start over",
                )
            raise TrainError(f"--resume: no checkpoint in {run.checkpoints}", hint="start without --resume")
        if damaged and warn is not None:
            names = ", ".join(f"{p.name} ({why})" for p, why in damaged)
            warn(f"checkpoint {names} is corrupt; resuming from {ckpt.name}, the newest complete one")
        diff = checkpoint.recipe_diff((ckpt / "recipe.toml").read_text(), recipe.to_toml())
        if diff and not force:
            raise TrainError(
                f"the recipe changed since the checkpoint at {ckpt.name}: {'; '.join(diff)}",
                hint="undo the change, or --force to resume anyway",
            )
        return ckpt
    if (run.recipe.is_file() or run.manifest.is_file()) and not force:
        old_name = _owner_name(run)
        if old_name is not None and old_name != recipe.name:
            raise TrainError(
                f"{run_dir} holds the run of recipe '{old_name}', not '{recipe.name}'",
                hint="set train.output_dir elsewhere, or --force to replace it",
            )
        if status == "finished":
            raise TrainError(
                f"{run_dir} holds a finished run of this recipe ({steps} steps, adapter in {run.adapter})",
                hint="--force to retrain it (its adapter and export/ are replaced), "
                "or set train.output_dir elsewhere",
            )
        ckpt = checkpoint.latest(run.checkpoints)
        if ckpt is not None:
            raise TrainError(
                f"{run_dir} holds an unfinished run of this recipe (checkpoint {ckpt.name})",
                hint="--resume to continue it, or --force to start over",
            )
    return None


def _status(run: Any) -> tuple[str | None, int | None]:
    """(train.status, train.steps) from a run's run.json; (None, None) when it has none or is unreadable."""
    try:
        tr = json.loads(run.manifest.read_text()).get("train", {})
        return tr.get("status"), tr.get("steps")
    except (OSError, ValueError, AttributeError):
        return None, None


def resume_command(recipe: Recipe, overrides: tuple[str, ...] | list[str] = ()) -> str:
    """The shell command that resumes this run, --set overrides included (shell-quoted)."""
    parts = ["medkit", "train", recipe.source_path or "RECIPE"]
    for item in overrides:
        parts += ["--set", item]
    return shlex.join([*parts, "--resume"])


def _owner_name(run: Any) -> str | None:
    """The recipe a run directory belongs to: its recipe.toml's name ('?' if unreadable), else the name in
    its run.json (None when that names no recipe)."""
    from medkit.recipe import tomllib

    try:
        if run.recipe.is_file():
            return str(tomllib.loads(run.recipe.read_text()).get("name", "?"))
        name = json.loads(run.manifest.read_text()).get("name")
        return str(name) if name else None
    except (OSError, ValueError, AttributeError):
        return "?"


def _clear_outputs(run_dir: Path) -> None:
    for name in TRAIN_OUTPUTS:
        p = run_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def train(
    recipe: Recipe | str | Path,
    *,
    overrides: tuple[str, ...] | list[str] = (),
    resume: bool = False,
    force: bool = False,
    dry_run: bool = False,
    console: Any = None,
    interrupt_at: int | None = None,
    callback: Any = None,
) -> TrainResult:
    """Train `recipe` (a path or a Recipe). `interrupt_at` behaves like Ctrl-C after that step (tests);
    `callback` (medkit.train.callbacks.TrainingCallback) shows the loop's reports instead of the progress bar."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from rich.console import Console

    from medkit import models
    from medkit.formats.files import atomic_write_text
    from medkit.recipe import load_recipe
    from medkit.runs import RunDir
    from medkit.train import checkpoint
    from medkit.train import plan as lora

    started = time.perf_counter()
    r = recipe if not isinstance(recipe, (str, Path)) else load_recipe(recipe, overrides)
    console = console or Console(stderr=True, highlight=False, soft_wrap=True)
    run = RunDir(r.run_dir())
    notes: list[str] = []
    ckpt = None if dry_run else check_run_dir(r, run.path, resume=resume, force=force, warn=notes.append)

    plan = lora.plan_precision(r)
    acc = Accelerator(mixed_precision=plan.mixed_precision, cpu=plan.device == "cpu")
    say = console.print if acc.is_main_process else (lambda *a, **k: None)
    for text in ([plan.note] if plan.note else []) + notes:
        say(f"[yellow]note:[/yellow] {text}")
    init = lora.init_run(r)  # an init_from of another base stops here, before anything is loaded
    if r.train.method == "grpo":  # an unknown or untrusted reward too
        from medkit.train.rewards import resolve

        rewards = resolve(dict(r.train.rewards), trust=r.train.trust_reward_code)
    tok = models.load_tokenizer(r.model.base)
    prepared = prepare_data(r, tok)
    if r.train.method == "grpo":  # each reward once on a reference answer, before anything is written
        from medkit.train.rewards import probe

        probe(rewards, prepared.rows["train"][0], r.train)
    set_seed(r.train.seed)
    if dry_run:
        return _dry_run(r, plan, prepared, run.path, say)

    model = lora.build_model(r, plan, local_device=acc.local_process_index, init=init)
    trainable, total = lora.param_counts(model)
    if acc.is_main_process:
        if ckpt is None:
            _clear_outputs(run.path)
        if run.export.exists():  # made from the adapter this run replaces: nothing stale may stay
            shutil.rmtree(run.export)
            say(f"removed {run.export}: it was exported from the previous adapter (export again when done)")
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.recipe, r.to_toml())
    acc.wait_for_everyone()
    say(
        f"training '{r.name}' ({r.train.method}{', from ' + str(init) if init else ''}) on {plan.device} x{acc.num_processes}"
        f"{' (4-bit ' + r.quant.mode.upper() + ')' if plan.quantize else ''}: {len(prepared.train)} examples, "
        f"{trainable:,} trainable of {total:,} params -> {run.path}"
    )
    trainer = _make_trainer(
        r, model, prepared, acc, plan, run.path, tok, console, interrupt_at, init, callback
    )
    if trainer.compiled:
        say(f"compiling the decoder layers ({trainer.compile_reason}): the first steps include it")
    base_info = {
        "trainable_params": trainable, "total_params": total, "device": plan.device,
        "world_size": acc.num_processes, "quantized": plan.quantize,
        "precision": str(plan.compute_dtype).replace("torch.", ""), "optimizer": trainer.optimizer_name,
        "total_steps": trainer.total_steps, "note": plan.note,
    }  # fmt: skip
    if plan.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    from medkit.train.loop import Interrupted

    try:
        state = trainer.fit(resume_from=ckpt)
    except Interrupted as stop:
        if acc.is_main_process:
            _write_records(r, run, prepared, trainer, base_info, started, status="interrupted")
        say(f"[yellow]interrupted[/yellow] at step {stop.step}; checkpoint saved in {stop.path}")
        say(f"resume with: {resume_command(r, overrides)}")
        raise
    except DiskSpaceError as err:
        if acc.is_main_process:
            _failed(r, run, prepared, trainer, base_info, started)
        last = checkpoint.latest(run.checkpoints)
        if last is not None:
            err.hint = f"free some space, then resume from {last.name}: {resume_command(r, overrides)}"
        raise
    best = trainer.restore_best()
    if best is not None:
        say(f"restored the best adapter: step {best['step']}, val loss {best['val_loss']:.4f}")
    if acc.is_main_process:
        try:
            _save_adapter(acc.unwrap_model(trainer.module).lm, tok, run.adapter)
        except DiskSpaceError:
            _failed(r, run, prepared, trainer, base_info, started)
            raise
        summary = _write_records(r, run, prepared, trainer, base_info, started, status="finished")
    else:
        summary = {}
    acc.wait_for_everyone()
    if acc.is_main_process:
        tr = summary["train"]
        vals = (
            f", val loss {tr['initial_val_loss']:.4f} -> {tr['best_val_loss']:.4f}"
            if tr["best_val_loss"]
            else ""  # no val split: nothing to say (it ended "..., ; adapter in")
        )
        say(
            f"[green]done[/green]: {state.step} steps, {tr['input_tokens']:,} tokens in {tr['wall_seconds']:.0f}s "
            f"({tr['tokens_per_s']:,.0f} tok/s){vals}; adapter in {run.adapter}"
        )
    return TrainResult(run.path, summary)


def prepare_data(r: Any, tok: Any) -> Any:
    """The training data of recipe ``r`` as its method takes it: SFT rows (sft, and grpo, which samples its
    answers to their prompts) or preference pairs (dpo, orpo)."""
    if r.train.method in ("sft", "grpo"):
        from medkit.data.tokens import prepare

        return prepare(r, tok)
    from medkit.data.pairs import prepare_pairs

    return prepare_pairs(r, tok)


def _make_trainer(
    r, model, prepared, acc, plan, run_dir, tok, console, interrupt_at, init=None, callback=None
):
    from medkit.train.loop import Trainer

    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    common = dict(
        recipe=r, model=model, data=prepared, accelerator=acc, plan=plan, run_dir=run_dir,
        pad_id=pad, console=console, interrupt_at=interrupt_at, callback=callback,
    )  # fmt: skip
    if r.train.method == "grpo":
        from medkit.train.grpo import GRPOTrainer

        return GRPOTrainer(tokenizer=tok, eot_id=prepared.eot_token_id, init=init, **common)
    if r.train.method != "sft":
        from medkit.train.preference import PreferenceTrainer

        return PreferenceTrainer(**common)
    return Trainer(**common)


def _save_adapter(model: Any, tok: Any, out: Path) -> None:
    """PEFT adapter + tokenizer (with its chat template) into `out`, swapped in atomically, with the file
    modes a plain open() gives; a full disk is one DiskSpaceError and leaves no partial folder."""
    from medkit.train.checkpoint import disk_full_guard, normal_modes

    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    adapter = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    written = {"tokenizer": 16 << 20}  # until the tokenizer is written and measured

    def needed() -> int:
        return adapter + written["tokenizer"] + 4096

    with disk_full_guard(out, tmp, needed):
        tok.save_pretrained(str(tmp))
        written["tokenizer"] = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        model.save_pretrained(str(tmp), safe_serialization=True)
        normal_modes(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)


def _failed(r, run, prepared, trainer, base_info, started) -> None:
    """run.json with status 'failed' where the disk still takes it (the error itself says what happened)."""
    try:
        _write_records(r, run, prepared, trainer, base_info, started, status="failed")
    except Exception:  # the disk that just filled up may not take run.json either
        pass


def _write_records(r, run, prepared, trainer, base_info, started, *, status: str) -> dict[str, Any]:
    from medkit.train.manifest import (
        git_sha,
        hardware,
        peak_memory,
        plot_loss,
        plot_rewards,
        versions,
        write_json,
    )

    s = trainer.state
    wall = time.perf_counter() - started
    train_info = {
        "status": status, "steps": s.step, "epochs": round(s.step / trainer.steps_per_epoch, 3),
        "tokens_trained": s.tokens, "input_tokens": s.input_tokens,
        "tokens_per_s": round(s.input_tokens / s.train_seconds, 1) if s.train_seconds else 0.0,
        "trained_tokens_per_s": round(s.tokens / s.train_seconds, 1) if s.train_seconds else 0.0,
        "train_seconds": round(s.train_seconds, 2), "fit_seconds": round(s.fit_seconds, 2),
        "wall_seconds": round(wall, 2), "peak_memory": peak_memory(trainer.plan.device),
        "initial_val_loss": s.initial_val, "final_val_loss": s.last_val, "best_step": s.best_step,
        "best_val_loss": s.best_val, "stopped_early": s.stopped_early, **base_info, **trainer.mfu_record(),
    }  # fmt: skip
    summary = {
        "name": r.name, "base_model": r.model.base, "recipe_fingerprint": r.fingerprint(),
        "versions": versions(), "git_sha": git_sha(), "hardware": hardware(trainer.plan.device),
        "data": {"fingerprint": prepared.fingerprint, "examples": dict(prepared.stats.examples),
                 "template": prepared.stats.template, "eot_token": prepared.eot_token,
                 "prompt_overlap": dict(prepared.stats.rows.overlap), "dropped": dict(prepared.stats.rows.dropped)},
        "train": train_info,
    }  # fmt: skip
    write_json(run.manifest, summary)
    records = trainer.metrics.read()
    if records:
        plot_loss(records, run.loss_plot, title=r.name)
        plot_rewards(records, run.path / "rewards.png", title=f"{r.name} ({r.train.method})")
    return summary


def _dry_run(r: Any, plan: Any, prepared: Any, run_dir: Path, say: Any) -> TrainResult:
    """Build the adapter on a weightless (meta) copy of the model: counts and a memory estimate."""
    import math

    import torch
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from medkit.data import batching
    from medkit.models import loadable
    from medkit.train import plan as lora

    config = AutoConfig.from_pretrained(loadable(r.model.base), trust_remote_code=r.model.trust_remote_code)
    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(config, trust_remote_code=r.model.trust_remote_code)
    for p in base.parameters():
        p.requires_grad_(False)
    model = get_peft_model(base, lora.lora_config(r, base))
    trainable, total = lora.param_counts(model)
    mem = lora.estimate_memory(r, plan, model)
    lengths = [e.length if hasattr(e, "length") else len(e.input_ids) for e in prepared.train]  # pairs: both
    t = r.train
    if r.data.packing:
        batches = batching.packed(lengths, t.batch_size, r.data.max_seq_len, t.seed, 0)
    else:
        batches = batching.length_grouped(lengths, t.batch_size, t.seed, 0)
    steps = t.max_steps or max(1, math.ceil(t.epochs * math.ceil(len(batches) / t.grad_accum)))
    summary = {
        "trainable_params": trainable, "total_params": total, "memory_gib": mem, "steps": steps,
        "micro_batches_per_epoch": len(batches), "padding_share": batching.padding_share(batches, lengths),
        "examples": dict(prepared.stats.examples), "device": plan.device, "quantized": plan.quantize,
    }  # fmt: skip
    say(f"dry run of '{r.name}' -> {run_dir} (nothing trained)")
    say(f"  params     {trainable:,} trainable of {total:,} ({100 * trainable / max(total, 1):.2f}%)")
    say(f"  data       {summary['examples']}; {len(batches)} micro-batches/epoch, "
        f"{summary['padding_share']:.1%} padding; {steps} optimizer steps")  # fmt: skip
    say("  memory     ~{total:.2f} GiB (weights {weights:.2f}, adapter+optimizer {adapter+optimizer:.2f}, "
        "activations {activations:.2f}, logits {logits:.2f})".format(**mem))  # fmt: skip
    return TrainResult(run_dir, summary, dry_run=True)


@click.command()
@click.argument("recipe", type=click.Path())  # load_recipe reports a folder in one line
@set_option
@click.option("--resume", is_flag=True, help="Continue the run from its latest checkpoint (exactly).")
@click.option(
    "--force",
    is_flag=True,
    help="Retrain a finished run (its export/ is removed), replace another recipe's run, or resume a changed recipe.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Resolve everything, load the data, print params and memory; train nothing.",
)
def command(recipe: str, overrides: tuple[str, ...], resume: bool, force: bool, dry_run: bool) -> None:
    """Fine-tune RECIPE's base model with (Q)LoRA; the adapter lands in runs/<name>/adapter/.

    \b
      medkit train recipes/smollm2_demo.toml
      medkit train recipes/smollm2_demo.toml --set train.max_steps=20
      medkit train recipes/smollm2_demo.toml --resume      # after Ctrl-C
      torchrun --nproc_per_node 2 -m medkit train recipes/x.toml
    """
    import warnings

    from medkit.train.loop import Interrupted

    # peft calls a transformers API that transformers 5 deprecates; the user cannot act on it
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        train(recipe, overrides=overrides, resume=resume, force=force, dry_run=dry_run)
    except Interrupted:
        sys.exit(130)
