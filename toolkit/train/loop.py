"""The training loop: accumulation, clipping, schedules, eval, early stopping, checkpoints, exact resume.

A lean loop on torch + accelerate rather than HF Trainer: batches come length-grouped or packed (no compute
on padding), the loss is the selective cross-entropy of medkit.train.loss (logits only at trained tokens), and
every step is normalised by the trained tokens of the whole accumulated step on all processes, so the
loss does not depend on how a step is cut into micro-batches. The data order is a function of
(seed, epoch) and the position in it is saved with the RNG states, so a resumed run repeats the
uninterrupted run's losses.
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medkit.data import batching
from medkit.errors import TrainError
from medkit.train import checkpoint, flops
from medkit.train.callbacks import ProgressDisplay, Report, TrainingCallback, Window, running
from medkit.train.manifest import MetricsLog

if TYPE_CHECKING:  # the schema, for annotations only (no import cycle at run time)
    from medkit.recipe import Recipe


@dataclass
class State:
    """Everything besides tensors that a resumed run needs."""

    step: int = 0
    epoch: int = 0
    micro: int = 0  # micro-batches of `epoch` this process has consumed
    tokens: int = 0  # trained tokens, all processes
    input_tokens: int = 0  # non-pad input tokens, all processes
    train_seconds: float = 0.0
    best_val: float | None = None
    best_step: int = -1
    initial_val: float | None = None
    last_val: float | None = None
    val_step: int = -1  # step of the last evaluation
    fit_seconds: float = 0.0  # wall time inside fit(), all invocations
    flops: float = 0.0  # training FLOPs of this process (medkit.train.flops), for MFU
    bad_evals: int = 0
    stopped_early: bool = False


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved at `step`."""

    def __init__(self, step: int, path: Path):
        super().__init__(f"interrupted at step {step}; checkpoint {path}")
        self.step, self.path = step, path


class Trainer:
    _fit_mark: float  # perf_counter at the last clock tick; set when fit() starts

    def __init__(
        self,
        *,
        recipe: Recipe,
        model: Any,
        data: Any,
        accelerator: Any,
        plan: Any,
        run_dir: Path,
        pad_id: int,
        console: Any = None,
        interrupt_at: int | None = None,
        callback: TrainingCallback | None = None,
    ):
        import torch

        from medkit.train.optim import build_optimizer, build_scheduler

        self.recipe, self.t, self.data, self.acc, self.plan = recipe, recipe.train, data, accelerator, plan
        self.model, self.pad_id, self.console, self.interrupt_at = model, pad_id, console, interrupt_at
        self.callback = callback  # what shows the loop's reports (None: ProgressDisplay on the console)
        self.world, self.rank = accelerator.num_processes, accelerator.process_index
        self.main = accelerator.is_main_process
        self.ckpt_root = run_dir / "checkpoints"
        self.metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=self.main)
        self.lengths = self.example_lengths(data.train)
        self.state = State()
        self.stop_signal: str | None = None
        self.micro_per_epoch = len(self.epoch_batches(0))
        if self.micro_per_epoch == 0:
            raise TrainError(
                f"{len(data.train)} training examples make no batch for {self.world} process(es)"
            )
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / self.t.grad_accum)
        self.total_steps = self.t.max_steps or max(1, math.ceil(self.t.epochs * self.steps_per_epoch))
        # train mode from the first step (from_pretrained leaves eval mode): LoRA dropout and the layers'
        # activation checkpointing act only in it, whether or not an eval (which restores it) comes first
        model.train()
        from medkit.train import compile as compiling

        hidden = getattr(getattr(model, "config", None), "hidden_size", None)
        self.compiled, self.compile_reason = compiling.decide(
            self.t.compile, plan.device, self.total_steps, hidden if isinstance(hidden, int) else None
        )
        from medkit.train import fuse

        # before compiling: inductor traces the fused forward
        self.fused, self.fuse_reason = fuse.fuse(model, self.t.fuse, quantized=plan.quantize)
        if self.compiled:
            compiling.compile_layers(model)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer, self.optimizer_name = build_optimizer(params, recipe, plan.device)
        self.module = accelerator.prepare_model(self.loss_module(model), device_placement=not plan.quantize)
        self.optimizer = accelerator.prepare_optimizer(optimizer)
        self.scheduler = build_scheduler(optimizer, recipe, self.total_steps)
        self.device = accelerator.device
        self._torch = torch
        self.flop_model = _flop_model(model)  # None when the model's shape cannot be read: no MFU then
        self.peak: flops.Peak | None = None  # measured when fit() starts, again when it ends
        self.last_flops = 0  # FLOPs of the last train_step on this process (of last_batches)
        self.last_batches: list[batching.Batch] = []

    # ---- what a method changes (medkit.train.preference overrides these) -------------------------
    def example_lengths(self, examples: list[Any]) -> list[int]:
        """Tokens of each training example, which batching groups by."""
        return [len(e.input_ids) for e in examples]

    def loss_module(self, model: Any) -> Any:
        from medkit.train.loss import make_loss_module

        return make_loss_module(model)

    def log_extras(self) -> dict[str, float]:
        """Method-specific values for the next metrics line (averages since the last one)."""
        return {}

    # ---- data ------------------------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> list[batching.Batch]:
        """This process's micro-batches of `epoch` (the global order, dealt round-robin, equal counts)."""
        t, d = self.t, self.recipe.data
        if d.packing:
            allb = batching.packed(self.lengths, t.batch_size, d.max_seq_len, t.seed, epoch)
        else:
            allb = batching.length_grouped(self.lengths, t.batch_size, t.seed, epoch)
        per_rank = len(allb) // self.world
        return allb[self.rank :: self.world][:per_rank]

    def _epoch(self, epoch: int) -> list[batching.Batch]:
        if getattr(self, "_cached", (None,))[0] != epoch:
            self._cached = (epoch, self.epoch_batches(epoch))
        return self._cached[1]

    def next_step_batches(self) -> list[batching.Batch]:
        """The next `grad_accum` micro-batches (fewer at the end of an epoch); advances the data position."""
        s = self.state
        batches = self._epoch(s.epoch)
        if s.micro >= len(batches):  # packing can give each epoch a different count
            s.epoch, s.micro = s.epoch + 1, 0
            batches = self._epoch(s.epoch)
        out = batches[s.micro : s.micro + self.t.grad_accum]
        s.micro += len(out)
        return out

    def optimizer_step(self) -> None:
        """Clip the trained parameters' gradients (train.max_grad_norm), step, advance the schedule, clear."""
        if self.t.max_grad_norm > 0:
            self.acc.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], self.t.max_grad_norm
            )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _tensors(self, batch: batching.Batch, examples: list[Any]) -> dict[str, Any]:
        out = batching.collate(batch, examples, self.pad_id)
        return {k: (v.to(self.device) if v is not None else None) for k, v in out.items()}

    # ---- collectives -----------------------------------------------------------------------------
    def _sum(self, *values: float) -> list[float]:
        if self.world == 1:
            return list(values)
        t = self._torch.tensor(values, dtype=self._torch.float64, device=self.device)
        return self.acc.reduce(t, reduction="sum").tolist()

    # ---- one optimizer step ----------------------------------------------------------------------
    def train_step(self) -> tuple[float, int, int]:
        """Forward/backward over one accumulated step; returns (mean loss, trained tokens, input tokens)."""
        batches = self.next_step_batches()
        examples = self.data.train
        self.last_batches, self.last_flops = batches, self.count_flops(batches)
        local = sum(batching.batch_label_tokens(b, examples) for b in batches)
        n_in_local = sum(self.lengths[i] for b in batches for i in b.indices())
        global_tokens, global_in = self._sum(float(local), float(n_in_local))
        scale = self.world / max(global_tokens, 1.0)
        loss_sum = 0.0
        for i, b in enumerate(batches):
            last = i == len(batches) - 1
            with self.acc.no_sync(self.module) if not last else nullcontext():
                total, _ = self.module(**self._tensors(b, examples))
                self.acc.backward(total * scale)
            loss_sum += float(total.detach())
        self.optimizer_step()
        (loss_all,) = self._sum(loss_sum)
        return loss_all / max(global_tokens, 1.0), int(global_tokens), int(global_in)

    # ---- evaluation ------------------------------------------------------------------------------
    def evaluate(self, examples: list[Any]) -> float | None:
        """Token-weighted mean loss over `examples` (sharded over processes); None if there are none."""
        if not examples:
            return None
        torch = self._torch
        inner = self.acc.unwrap_model(self.module)
        inner.eval()
        loss = n = 0.0
        lengths = [len(e.input_ids) for e in examples]
        batches = batching.eval_batches(lengths, max(1, self.t.batch_size * 2))[self.rank :: self.world]
        from medkit.train.compile import eager_stance

        with torch.no_grad(), self.acc.autocast(), eager_stance(self.compiled):
            for b in batches:
                total, count = inner(**self._tensors(b, examples))
                loss += float(total)
                n += float(count)
        inner.train()
        loss, n = self._sum(loss, n)
        return loss / n if n else None

    def _after_eval(self, val: float | None) -> None:
        s = self.state
        if val is None:
            return
        s.last_val, s.val_step = val, s.step
        if s.initial_val is None:
            s.initial_val = val
        self.metrics.write(step=s.step, val_loss=round(val, 6))
        if s.best_val is None or val < s.best_val:
            s.best_val, s.best_step, s.bad_evals = val, s.step, 0
            if self.main:
                checkpoint.save_best(self.ckpt_root, self.model, {"step": s.step, "val_loss": val})
        else:
            s.bad_evals += 1
            patience = self.t.early_stopping_patience
            if patience and s.bad_evals >= patience:
                s.stopped_early = True
        self._log(f"step {s.step}: val loss {val:.4f} (best {s.best_val:.4f} at step {s.best_step})")

    # ---- checkpoints -----------------------------------------------------------------------------
    def _clock(self) -> None:
        now = time.perf_counter()
        self.state.fit_seconds += now - self._fit_mark
        self._fit_mark = now

    def save_checkpoint(self) -> Path:
        self._clock()
        return checkpoint.save(
            self.ckpt_root, self.state.step, model=self.model, optimizer=self.optimizer,
            scheduler=self.scheduler, scaler=self.acc.scaler, state=asdict(self.state),
            recipe_toml=self.recipe.to_toml(), keep_last=self.t.keep_last, rank=self.rank,
            is_main=self.main, barrier=self.acc.wait_for_everyone,
        )  # fmt: skip

    def resume(self, path: Path) -> None:
        saved = checkpoint.load(
            path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
            scaler=self.acc.scaler, rank=self.rank,
        )  # fmt: skip
        self.state = State(**saved)
        self.metrics.truncate_after(self.state.step)
        self._log(f"resumed from {path} at step {self.state.step}/{self.total_steps}")

    # ---- signals ---------------------------------------------------------------------------------
    def _install_signals(self) -> dict[int, Any]:
        def handler(signum: int, frame: Any) -> None:
            if self.stop_signal is not None:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.stop_signal = signal.Signals(signum).name
            self._log(f"{self.stop_signal}: saving a checkpoint at the end of this step (again to abort)")

        old: dict[int, Any] = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass
        return old

    def _should_stop(self) -> bool:
        wanted = self.stop_signal is not None or (
            self.interrupt_at is not None and self.state.step >= self.interrupt_at
        )
        (flag,) = self._sum(1.0 if wanted else 0.0)
        return flag > 0

    # ---- the loop --------------------------------------------------------------------------------
    def fit(self, resume_from: Path | None = None) -> State:
        """Train to the end (or early stop); raise Interrupted after saving on SIGINT/SIGTERM."""
        torch = self._torch
        self._fit_mark = time.perf_counter()
        if resume_from is not None:
            self.resume(resume_from)
        s, t = self.state, self.t
        if s.step == 0 and s.initial_val is None:
            self._after_eval(self.evaluate(self.data.val))
        old_handlers = self._install_signals()
        self.peak = self.peak or self.measure_peak()
        callback = self.callback or ProgressDisplay(self.console, self._shows_progress(), self._log)
        window = Window()
        try:
            with running(callback, s.step, self.total_steps):
                while s.step < self.total_steps and not s.stopped_early:
                    t0 = time.perf_counter()
                    loss, n_tok, n_in = self.train_step()
                    took = time.perf_counter() - t0
                    s.train_seconds += took
                    s.step += 1
                    s.tokens += n_tok
                    s.input_tokens += n_in
                    s.flops += self.last_flops
                    window.add(loss, n_tok, n_in, took, self.last_flops)
                    if s.step % t.log_every == 0 or s.step == self.total_steps:
                        callback.on_train_loss_report(self._report(window))
                        window = Window()
                    callback.on_step_end(s.step)
                    if t.eval_every and s.step % t.eval_every == 0 and s.step < self.total_steps:
                        self._after_eval(self.evaluate(self.data.val))
                    if self._should_stop():
                        path = self.save_checkpoint()
                        raise Interrupted(s.step, path)
                    if t.save_every and s.step % t.save_every == 0 and s.step < self.total_steps:
                        self.save_checkpoint()
        except torch.OutOfMemoryError:
            raise TrainError(
                f"out of memory at step {s.step + 1} (batch_size={t.batch_size}, "
                f"max_seq_len={self.recipe.data.max_seq_len}, grad_checkpointing={t.grad_checkpointing})",
                hint="lower train.batch_size (raise train.grad_accum to keep the effective batch), lower "
                "data.max_seq_len, or set train.grad_checkpointing = true",
            ) from None
        finally:
            for sig, h in old_handlers.items():
                signal.signal(sig, h)
        if s.stopped_early:
            self._log(f"early stop at step {s.step}: no val improvement in {t.early_stopping_patience} evals")
        elif self.data.val and s.val_step != s.step:
            self._after_eval(self.evaluate(self.data.val))
        self._clock()
        self.peak = flops.faster(self.peak, self.measure_peak())  # run.json's: the faster of the two
        return s

    def _report(self, window: Window) -> Report:
        """A log step: the window's mean loss, tokens/s and MFU, written to metrics.jsonl."""
        s = self.state
        dt = max(window.seconds, 1e-9)
        lr = self.scheduler.get_last_lr()[0]
        util = flops.mfu(window.flops, dt, self.peak)
        if util is not None and util > 1:  # the peak was taken while the cores were busy
            self.peak = flops.faster(self.peak, self.measure_peak())
            util = flops.mfu(window.flops, dt, self.peak)
        self.metrics.write(
            step=s.step, epoch=round(s.step / self.steps_per_epoch, 4), loss=round(window.mean_loss, 6),
            lr=lr, tokens=s.tokens, tokens_per_s=round(window.tokens_per_s, 1),
            **({"mfu": round(util, 4)} if util is not None else {}), **self.log_extras(),
        )  # fmt: skip
        return Report(s.step, self.total_steps, window.mean_loss, lr, window.tokens_per_s, util)

    def restore_best(self) -> dict[str, Any] | None:
        """Put the best-val adapter weights back into the model (every process reads the same file)."""
        self.acc.wait_for_everyone()
        if self.state.best_step < 0 or self.state.best_step == self.state.step:
            return None
        return checkpoint.load_best(self.ckpt_root, self.model)

    # ---- FLOPs and MFU ---------------------------------------------------------------------------
    def count_flops(self, batches: list[batching.Batch], of: flops.ModelFlops | None = None) -> int:
        """Training FLOPs of these micro-batches on this process (0 when the model's shape is unknown); `of`
        counts with other sizes (the profile bench: attention's width 0)."""
        from medkit.train.loss import head_recomputed

        mf = of or self.flop_model
        if mf is None:
            return 0
        total = 0
        for b in batches:
            head = batching.batch_label_tokens(b, self.data.train)  # selective CE: the head on trained tokens
            total += mf.step(
                [self.lengths[i] for i in b.indices()], head, grad_checkpointing=self.t.grad_checkpointing,
                head_recompute_tokens=head_recomputed(self.model, head, autocast=self.plan.mixed_precision != "no"),
            ).total  # fmt: skip
        return total

    def measure_peak(self) -> flops.Peak | None:
        """This process's dense matmul peak in the compute dtype, on the MLP's shape (< 1 s): when fit() starts and ends."""
        if self.flop_model is None:
            return None
        mean_len = sum(self.lengths) / max(len(self.lengths), 1)
        tokens = int(self.t.batch_size * mean_len)
        try:
            return flops.peak_for(self.flop_model, tokens, dtype=self.plan.compute_dtype, device=self.device)
        except RuntimeError:  # no MFU rather than no training
            return None

    def mfu_record(self) -> dict[str, Any]:
        """The run.json fields: MFU over the whole run, the FLOPs counted and the peak they are measured against."""
        s = self.state
        util = flops.mfu(s.flops, s.train_seconds, self.peak)
        return {
            "mfu": round(util, 4) if util is not None else None,
            "flops": int(s.flops),
            "flops_per_input_token": round(s.flops / s.input_tokens) if s.input_tokens else 0,
            "peak_flops": self.peak.as_dict() if self.peak else None,
            "compiled": {"layers": self.compiled, "why": self.compile_reason},
            "fused": {"groups": self.fused, "why": self.fuse_reason},
            "mfu_note": "per process: medkit.train.flops count / train_seconds / the peak (source: measured in this "
            "run on the MLP shape, or MEDKIT_PEAK_FLOPS)",
        }

    # ---- output ----------------------------------------------------------------------------------
    def _log(self, text: str) -> None:
        if self.main and self.console is not None:
            self.console.print(text, highlight=False)

    def _shows_progress(self) -> bool:
        return self.main and self.console is not None and self.console.is_terminal


def _flop_model(model: Any) -> flops.ModelFlops | None:
    try:
        return flops.ModelFlops.from_model(model)
    except (AttributeError, TypeError, ZeroDivisionError):  # an architecture whose shape is not readable
        return None
