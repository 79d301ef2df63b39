"""`make demo`: the whole path on the offline default, the way a user would type it.

validate -> train (SmolLM2-135M on recipes/data, 2 CPU cores) -> export q8_0, q4_k_m, q4_0 GGUFs -> answer
a medical question through `medkit.Runtime` (q4_0) -> eval table (base, tuned, each GGUF) -> where every
file is.

    python -m medkit.demo [RECIPE]      (make demo; make demo-icd10 for recipes/smollm2_icd10_demo.toml)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

RECIPE = Path("recipes/smollm2_demo.toml")
EXPORTS = ("q8_0", "q4_k_m", "q4_0")
QUESTION = "What are the common symptoms of iron deficiency anemia?"

console = Console()


def step(title: str, *args: str) -> None:
    cmd = ["medkit", *args]
    console.rule(f"[bold]{title}")
    console.print(f"$ {' '.join(cmd)}", style="cyan")
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "medkit", *args])
    if res.returncode != 0:
        console.print(f"[red]step failed ({res.returncode}): {' '.join(cmd)}")
        sys.exit(res.returncode)
    console.print(f"[dim]{title}: {time.perf_counter() - t0:.1f}s")


def main() -> None:
    t_start = time.perf_counter()
    from medkit.recipe import load_recipe

    recipe_path = Path(sys.argv[1]) if len(sys.argv) > 1 else RECIPE
    recipe = load_recipe(recipe_path)
    run = recipe.run_dir()
    question = (recipe.eval.prompts.in_domain or [QUESTION])[0]
    step("1/5 validate the recipe", "validate", str(recipe_path))
    if (run / "adapter" / "adapter_config.json").is_file() and os.environ.get("MEDKIT_DEMO_RETRAIN") != "1":
        console.rule("[bold]2/5 train")
        console.print(f"{run} already holds a trained adapter; set MEDKIT_DEMO_RETRAIN=1 to train again")
    else:
        step("2/5 train (LoRA on CPU; QLoRA on CUDA)", "train", str(recipe_path), "--force")
    step(
        f"3/5 export {', '.join(EXPORTS)} GGUFs (+ Modelfile, parity check)",
        "export", str(run), "--gguf", ",".join(EXPORTS), "--force",
    )  # fmt: skip

    console.rule("[bold]4/5 answer a question through medkit.Runtime")
    from medkit import Runtime

    gguf = sorted((run / "export").glob("*q4_0*.gguf"))[-1]
    console.print(f">>> from medkit import Runtime\n>>> Runtime({str(gguf)!r}).chat(...)", style="cyan")
    rt = Runtime(str(gguf), ctx=2048)
    messages = [{"role": "user", "content": question}]
    if recipe.data.system_prompt:
        messages.insert(0, {"role": "system", "content": recipe.data.system_prompt})
    console.print(f"[bold]Q:[/bold] {question}\n[bold]A:[/bold] ", end="")
    for piece in rt.stream(messages, temperature=0.0, max_tokens=120):
        console.print(piece, end="", markup=False, highlight=False)
    console.print()
    st = rt.last_stats
    console.print(
        f"[dim]{st.completion_tokens} tokens, {st.tokens_per_s:.1f} tokens/s, first token after "
        f"{st.ttft_s * 1000:.0f} ms, stopped by {st.stop_reason}"
    )
    rt.close()

    step(f"5/5 evaluate base vs tuned vs {' vs '.join(EXPORTS)} on held-out examples", "eval", str(run))

    console.rule("[bold]where everything is")
    for label, path in [
        ("resolved recipe", run / "recipe.toml"),
        ("manifest", run / "run.json"),
        ("metrics", run / "metrics.jsonl"),
        ("loss plot", run / "loss.png"),
        ("adapter (PEFT)", run / "adapter"),
        ("merged HF model", run / "export" / "merged"),
        ("GGUF", gguf),
        ("Ollama Modelfile", run / "export" / "Modelfile"),
        ("eval report", run / "eval.md"),
    ]:
        mark = "[green]ok[/green]" if path.exists() else "[red]missing[/red]"
        console.print(f"  {mark}  {label:18s} {path}")
    console.print(f"\nchat with it:  medkit chat {gguf}")
    console.print(f"[dim]demo finished in {time.perf_counter() - t_start:.0f}s")


if __name__ == "__main__":
    main()
