"""Parity: does llama.cpp running a GGUF agree with transformers running the HF model?

On held-out texts, both run the same token ids; we report greedy next-token agreement, the largest
logit difference, perplexity, KL divergence from the HF distribution, and whether llama.cpp's
tokenizer produced exactly the HF token ids. f32/f16/bf16 must agree on >= 99% of positions.

A calibrated quantized file (imatrix, GPTQ) is held to the plain quantization of its own type, measured in
the same check on the same texts (``plain``: the twin export writes from the same f16): its KL from
transformers at most KL_FACTOR x the plain file's + KL_SLACK, its top-1 agreement at least the plain file's
minus AGREE_SLACK. A sound calibrated file beats its plain twin (SmolLM2 q4_0: KL 0.074 vs 0.2); a foreign or
destroyed importance matrix does not (KL 0.21, 23.1). A file without a twin (a plain one, an i-quant
llama.cpp will not quantize plainly, an auto:SIZE mix) must give finite perplexity.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medkit.convert.parity_table import imatrix_cell, progress_bar, table  # noqa: F401 (shown here)
from medkit.errors import ConvertError

MEDICAL_TEXTS = [
    "Hypertension is persistently elevated blood pressure; lifestyle changes and medication lower the risk.",
    "Type 2 diabetes is managed with diet, exercise, metformin, and regular HbA1c checks every 3 months.",
    "Symptoms of dehydration include thirst, dark urine, dizziness, and fatigue.",
    "Amoxicillin 500 mg three times daily is a common first-line treatment for acute otitis media.",
    "A patient with chest pain radiating to the left arm should be evaluated for myocardial infarction.",
    "Asthma is a chronic inflammatory disease of the airways causing wheezing and shortness of breath.",
]
# accents, digits, code, emoji, CJK, odd whitespace: where tokenizers disagree first
MIXED_TEXT = (
    "Café naïve résumé — fièvre à 38,5°C; dose=2×500mg q8h (≈1.5 g/day).\n"
    "def bmi(w, h):\n    return round(w / h**2, 1)  # kg/m²\n"
    "Ärztin, ñandú, Ωmega 東京 🩺💊🙂  \t 12345678 it's we'll I'VE"
)
FLOAT_REQUIRED = ("f32", "f16", "bf16")
KL_FACTOR, KL_SLACK, AGREE_SLACK = 1.5, 0.05, 0.05  # a calibrated file's limits against its plain twin
Step = Callable[[str], None]  # progress: called once per text run, with what is running


@dataclass
class Parity:
    """One GGUF against transformers; a bf16 GGUF is held to the model with bf16-rounded weights."""

    gguf: str
    type: str
    positions: int
    agreement: float
    max_logit_diff: float
    ppl: float
    ppl_hf: float
    kl_vs_hf: float
    tokenization_ok: bool
    required: bool
    passed: bool
    threshold: float
    calibration: str | None = None  # gguf_header.calibration(): "imatrix", "plain", ...; None: a float
    plain_agreement: float | None = None  # the plain quantization of the same type, when measured
    plain_kl: float | None = None

    def hold_to(self, plain: Parity) -> None:
        """Judge this calibrated file against ``plain``, the plain quantization of its type."""
        self.plain_agreement, self.plain_kl = plain.agreement, plain.kl_vs_hf
        self.passed = (
            self.passed and self.kl_vs_hf <= self.kl_limit() and self.agreement >= self.agree_limit()
        )

    def kl_limit(self) -> float:
        return KL_FACTOR * (self.plain_kl or 0.0) + KL_SLACK

    def agree_limit(self) -> float:
        return (self.plain_agreement or 0.0) - AGREE_SLACK

    def why_failed(self) -> str:
        if self.required:
            why = (
                "tokenization differs"
                if not self.tokenization_ok
                else f"top-1 agreement {100 * self.agreement:.1f}%"
            )
            return f"{why} (need {100 * self.threshold:.0f}%)"
        if not (math.isfinite(self.ppl) and math.isfinite(self.kl_vs_hf)):
            return "perplexity is not finite"
        return (
            f"KL vs HF {self.kl_vs_hf:.4f} (limit {self.kl_limit():.4f}), top-1 agreement "
            f"{100 * self.agreement:.1f}% (limit {100 * self.agree_limit():.1f}%) against the plain "
            f"{self.type} quantization's KL {self.plain_kl:.4f} and {100 * (self.plain_agreement or 0):.1f}%"
        )


def gguf_type(path: Path) -> str:
    """The file type recorded in a GGUF ('f16', 'q4_0', 'iq4_xs', ...), from general.file_type.

    The header is checked first (medkit.formats.gguf_header): a truncated, random or text file is one
    RuntimeLoadError line naming it."""
    from medkit.formats.gguf_header import read_gguf_info
    from medkit.formats.gguf_types import type_name

    info = read_gguf_info(path, what="GGUF")
    if info.kind == "adapter":
        raise ConvertError("this is a LoRA adapter GGUF; verify checks model GGUFs", where=str(path))
    return type_name(info.file_type)


def held_out_texts(run_path: Path | None = None, limit: int = 6) -> list[str]:
    """Built-in medical sentences and a mixed text, plus up to ``limit`` rows of a run's val split."""
    texts = list(MEDICAL_TEXTS) + [MIXED_TEXT]
    if run_path is None or not (run_path / "recipe.toml").is_file():
        return texts
    try:  # the val split is re-derived from the run's resolved recipe (seeded, deterministic)
        from medkit.data.rows import load_rows
        from medkit.recipe import load_recipe

        splits, _ = load_rows(load_recipe(run_path / "recipe.toml"))
    except Exception as exc:  # the data may have moved since training; the built-in texts still run
        print(f"note: val split of {run_path} not used ({exc})")
        return texts
    for row in splits.get("val", [])[:limit]:
        turns = [str(m.get("content", "")) for m in row.get("messages", []) if m.get("role") != "system"]
        texts.append("\n".join([*turns, str(row.get("answer", ""))]).strip())
    return texts


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass
class Reference:
    ids: list[list[int]]
    logits: list[np.ndarray]
    truncated: list[bool]
    # logits of the same model with its weights rounded to bf16: what a correct bf16 GGUF computes
    logits_bf16: list[np.ndarray] | None = None


def hf_reference(
    hf_dir: Path,
    texts: list[str],
    *,
    max_tokens: int = 128,
    trust_remote_code: bool = False,
    bf16: bool = False,
    step: Step | None = None,
) -> Reference:
    """Token ids and float32 logits of the HF model for each text (and with bf16-rounded weights)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    step = step or (lambda label: None)
    try:
        tok = AutoTokenizer.from_pretrained(hf_dir, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            hf_dir, dtype=torch.float32, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError) as exc:
        msg = " ".join(str(exc).split())[:200]
        raise ConvertError(f"transformers cannot load the HF model: {msg}", where=str(hf_dir)) from exc
    model.eval()
    ref = Reference([], [], [])
    with torch.no_grad():
        for text in texts:
            full = list(tok(text)["input_ids"])
            ids = full[:max_tokens]
            ref.ids.append(ids)
            ref.logits.append(model(torch.tensor([ids])).logits[0].float().numpy())
            ref.truncated.append(len(full) > max_tokens)
            step("transformers")
        if bf16:
            for p in model.parameters():
                p.data = p.data.to(torch.bfloat16).to(torch.float32)
            ref.logits_bf16 = []
            for ids in ref.ids:
                ref.logits_bf16.append(model(torch.tensor([ids])).logits[0].float().numpy())
                step("transformers (bf16 weights)")
    return ref


def load_llama(path: Path, n_ctx: int = 512, threads: int = 2) -> Any:
    from llama_cpp import Llama

    try:
        return Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_threads=threads,
            logits_all=True,
            verbose=False,
        )
    except (ValueError, RuntimeError) as exc:
        raise ConvertError(f"llama.cpp cannot load the GGUF: {exc}", where=str(path)) from exc


def gguf_logits(llm: Any, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def check(
    path: Path,
    ref: Reference,
    texts: list[str],
    *,
    threshold: float = 0.99,
    threads: int = 2,
    step: Step | None = None,
) -> Parity:
    """Compare one GGUF against the HF reference."""
    from medkit.formats.gguf_header import calibration

    step = step or (lambda label: None)
    qtype = gguf_type(path)
    n_ctx = max(64, max(len(i) for i in ref.ids) + 8)
    llm = load_llama(path, n_ctx=n_ctx, threads=threads)
    try:
        tok_ok = all(
            llm.tokenize(t.encode("utf-8"), add_bos=True, special=True) == ids
            for t, ids, cut in zip(texts, ref.ids, ref.truncated, strict=True)
            if not cut
        )
        agree = total = 0
        max_diff = nll = nll_hf = kl = 0.0
        same = ref.logits_bf16 if qtype == "bf16" and ref.logits_bf16 else ref.logits
        for ids, hf, hf_same in zip(ref.ids, ref.logits, same, strict=True):
            lg = gguf_logits(llm, ids)
            v = min(lg.shape[1], hf.shape[1])
            lg, hf_v, hf_same = lg[:, :v], hf[:, :v], hf_same[:, :v]
            agree += int((lg.argmax(-1) == hf_same.argmax(-1)).sum())
            total += len(ids)
            max_diff = max(max_diff, float(np.abs(lg - hf_same).max()))
            lp, lp_hf = _log_softmax(lg), _log_softmax(hf_v)
            nxt = np.asarray(ids[1:])
            nll -= float(lp[np.arange(len(nxt)), nxt].sum())
            nll_hf -= float(lp_hf[np.arange(len(nxt)), nxt].sum())
            kl += float((np.exp(lp_hf) * (lp_hf - lp)).sum())
            step(f"llama.cpp {qtype}")
    finally:
        llm.close()
    n_pred = max(1, sum(len(i) - 1 for i in ref.ids))
    agreement = agree / max(1, total)
    required = qtype in FLOAT_REQUIRED
    return Parity(
        gguf=str(path),
        type=qtype,
        positions=total,
        agreement=agreement,
        max_logit_diff=max_diff,
        ppl=math.exp(nll / n_pred),
        ppl_hf=math.exp(nll_hf / n_pred),
        kl_vs_hf=kl / max(1, total),
        tokenization_ok=tok_ok,
        required=required,
        passed=(tok_ok and agreement >= threshold) if required else math.isfinite(nll) and math.isfinite(kl),
        threshold=threshold,
        calibration=calibration(path),
    )


def verify(
    ggufs: list[Path],
    hf_dir: Path,
    *,
    texts: list[str] | None = None,
    threshold: float = 0.99,
    trust_remote_code: bool = False,
    threads: int = 2,
    progress: Callable[[int], Step] | None = None,
    plain: dict[Path, Path] | None = None,
) -> list[Parity]:
    """Parity of each GGUF. ``progress(total)`` returns a step callback (called ``total`` times).
    ``plain`` maps a calibrated GGUF to the plain quantization of its type: it is measured too and the
    calibrated file held to it (Parity.hold_to)."""
    texts = texts or held_out_texts()
    plain = {Path(k): Path(v) for k, v in (plain or {}).items()}
    types = {Path(g): gguf_type(Path(g)) for g in ggufs}
    bf16 = "bf16" in types.values()
    step = progress(len(texts) * (1 + bf16 + len(ggufs) + len(plain))) if progress else None
    ref = hf_reference(Path(hf_dir), texts, trust_remote_code=trust_remote_code, bf16=bf16, step=step)
    results = []
    for g in map(Path, ggufs):
        r = check(g, ref, texts, threshold=threshold, threads=threads, step=step)
        if g in plain:
            r.hold_to(check(plain[g], ref, texts, threshold=threshold, threads=threads, step=step))
        results.append(r)
    return results


def report(results: list[Parity]) -> list[dict[str, Any]]:
    """Print the table; raise ConvertError when a file fails its limits. Returns JSON-ready dicts."""
    from rich.console import Console

    Console(width=max(Console().width, 132)).print(table(results))
    failed = [r for r in results if not r.passed]
    if failed:
        r = failed[0]
        raise ConvertError(f"parity failed for {r.type}: {r.why_failed()}", where=r.gguf)
    return [asdict(r) for r in results]


def read_texts(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 texts file; a missing or non-UTF-8 file is one ConvertError line."""
    if not path.is_file():
        raise ConvertError("no such texts file", where=str(path))
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConvertError(
            f"texts file is not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start}", where=str(path)
        ) from None
    return [ln for ln in text.splitlines() if ln.strip()]
