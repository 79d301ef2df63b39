"""Which inputs should each layer's calibration see: the full-precision model's, or the quantized one's?

    python -m benchmarks calib_inputs       (MEDKIT_BENCH_RUN=runs/<name>: the run; default runs/smollm2_icd10_demo,
                                             exported, so its merged model is there)

GPTQ rounds each weight against the Gram matrix of its inputs on the calibration rows. medkit's pass
carries the rows through the full-precision model (one pass serves every type an export writes, and its
importance sums are llama.cpp's imatrix of the float model). The alternative (GPTQ's paper, GPTQModel)
feeds each layer the outputs of the layers already quantized, so a layer's rounding can answer the error
upstream of it. This measures both on a run's own merged model, same rows, same imatrix, same scales:

  full:       Gram matrices from the float model (what `medkit export` does)
  quantized:  Gram matrices from the same model with every weight at the type's plain (imatrix, nearest)
              rounding, dequantized; a stand-in for sequential GPTQ whose earlier layers carry their
              nearest rounding error, not their (smaller) GPTQ one

Each type's file is then rounded by GPTQ with one or the other and scored against transformers on the run's
held-out texts (KL and top-1 agreement: medkit.convert.verify), beside the plain file.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

TYPES = ("q4_0", "q4_k_m", "q2_k")


def dequantized_dir(gguf: Path, hf_dir: Path, out: Path) -> Path:
    """An HF folder holding ``gguf``'s weights dequantized (transformers' GGUF loader), the tokenizer of ``hf_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    deq = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(
        str(hf_dir), dtype=torch.float32
    )  # a GGUF-loaded one won't save
    model.load_state_dict(deq.state_dict())
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(hf_dir)).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from medkit.convert.export import resolve_source
    from medkit.convert.gguf.writer import write_gguf
    from medkit.convert.quant import gptq
    from medkit.convert.quant.calib import run_sequences
    from medkit.convert.quant.imatrix import collect
    from medkit.convert.quant.quantize import quantize
    from medkit.convert.verify import held_out_texts, verify

    run = (argv or [os.environ.get("MEDKIT_BENCH_RUN", "runs/smollm2_icd10_demo")])[0]
    source = resolve_source(run, None, log=lambda m: None)
    hf = Path(source.hf_dir)
    if not (hf / "config.json").is_file():
        raise SystemExit(f"{source.run.path}: export it first (medkit export {source.run.path} --gguf q4_0)")
    seqs, what = run_sequences(source.run, hf)
    texts = held_out_texts(source.run.path)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="calib-inputs-") as tmp:
        t = Path(tmp)
        f16 = write_gguf(hf, t / "f16.gguf", "f16").path
        full = collect(hf, seqs, grams=True, dtype="float32")
        print(
            f"calibration: {what}, {full.tokens} tokens; full-precision pass {full.seconds:.1f}s", flush=True
        )
        for qtype in TYPES:
            plain = t / f"{qtype}-plain.gguf"
            quantize(f16, plain, qtype, imatrix=full)
            deq = dequantized_dir(plain, hf, t / f"{qtype}-deq")
            quant = collect(deq, seqs, grams=True, dtype="float32")
            shutil.rmtree(deq)
            files = {"plain": plain}
            for label, grams in (("full", full.grams), ("quantized", quant.grams)):
                files[label] = t / f"{qtype}-{label}.gguf"
                shutil.copy(plain, files[label])
                gptq.refine(files[label], f16, grams)
            parity = verify(list(files.values()), hf, texts=texts)
            row = {
                label: {"kl": p.kl_vs_hf, "top1": p.agreement} for label, p in zip(files, parity, strict=True)
            }
            results[qtype] = row
            print(
                f"{qtype:7s} KL vs HF: plain {row['plain']['kl']:.4f}  GPTQ full-precision inputs "
                f"{row['full']['kl']:.4f}  GPTQ quantized inputs {row['quantized']['kl']:.4f}   top-1: "
                + "  ".join(f"{k} {v['top1']:.1%}" for k, v in row.items()),
                flush=True,
            )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
