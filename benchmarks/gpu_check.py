"""The GPU check, made to fit one 10-minute call on a bare CUDA machine, writing one JSON report.

    make gpu-check WHEELS=.gpu-wheels [GPU_REPORT=path.json]     (on the GPU machine)
    python -m benchmarks.gpu_check --dry-run                      (rehearsal on CPU: plan, files, imports)

Steps, each under what is left of a hard budget (--budget, 540 s by default) and each recorded in the report
as soon as it ends, so a call cut short still leaves a valid report:
  1. install  unpack the wheels of WHEELS/wheels (made by `make gpu-wheels`) into WHEELS/site, rebuild
              medkit's wheel from this tree into it, and check that bitsandbytes, datasets and medkit import
              (bitsandbytes quantizing a tensor on the GPU);
  2. pytest   `pytest -m gpu` over the test files that hold gpu tests;
  3. bench    the TinyLlama-1.1B-shape training bench: seed recipe, medkit defaults, medkit at the seed's
              settings, tokens/s, peak memory and MFU for each (benchmarks/train_bench.py);
  4. calib    the calibrated q4_k_m export of the TinyLlama-1.1B shape (benchmarks/scale_bench.py: the layer
              loop on the GPU, GPTQ on the CPU), its wall time, peak RSS, memory trace and the pass's MFU,
              when the time left is enough (the shape's tokenizer from WHEELS/tokenizer, `make gpu-wheels`);
  5. bench    the Mistral-7B shape, when the time left is enough.
Every child runs with WHEELS/site first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GPU_TESTS = ("tests/train/test_train.py", "tests/train/test_lora.py", "tests/fixtures_tests/test_models.py")
# (name, MEDKIT_BENCH_SHAPE, timed steps, seconds it must have left to start, cap on its own seconds)
BENCHES = [("bench_tinyllama", "tinyllama", 6, 120, 300), ("bench_mistral7b", "mistral7b", 3, 240, 330)]
# (name, seconds it must have left to start, cap on its own seconds): the calibrated export on the GPU
CALIB = ("calib_tinyllama", 150, 240)
CALIB_ROWS = "pass,calibrated"  # scale_bench rows: the layer loop alone, then the whole calibrated export
TARGETS = {"speed_vs_seed": 2.0, "memory_vs_seed": 2.0, "tokens_per_s_h100_class": 40_000}
IMPORT_CHECK = """
import json, torch, bitsandbytes as bnb, datasets, medkit, medkit.train.flops, medkit.train.verb, medkit.train.loop
out = {"torch": torch.__version__, "cuda": torch.version.cuda, "bitsandbytes": bnb.__version__,
       "datasets": datasets.__version__, "medkit": medkit.__file__}
if torch.cuda.is_available():
    q, state = bnb.functional.quantize_4bit(torch.randn(64, 64, device="cuda"), quant_type="nf4")
    out["gpu"] = torch.cuda.get_device_name()
    out["nf4_roundtrip_ok"] = bool(bnb.functional.dequantize_4bit(q, state).isfinite().all())
print(json.dumps(out))
"""


class Check:
    """The plan, the clock and the report, rewritten atomically after every step."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.start = args, time.monotonic()
        self.site = args.wheels / "site"
        self.report: dict[str, Any] = {
            "dry_run": args.dry_run, "budget_s": args.budget, "wheels": str(args.wheels),
            "plan": plan(args), "steps": {}, "targets": {},
        }  # fmt: skip

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.start)

    def record(self, name: str, **fields: Any) -> None:
        self.report["steps"][name] = {**self.report["steps"].get(name, {}), **fields}
        self.report["elapsed_s"] = round(time.monotonic() - self.start, 1)
        out = self.args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.partial")
        tmp.write_text(json.dumps(self.report, indent=2, default=str) + "\n")
        os.replace(tmp, out)

    def env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.site), env.get("PYTHONPATH", "")) if p)
        return env

    def run(self, name: str, cmd: list[str], cap: float, env: dict[str, str] | None = None) -> dict[str, Any]:
        """Run a child under min(cap, time left); record rc, seconds and the output's tail."""
        limit = max(1.0, min(cap, self.left() - 5))
        t0 = time.monotonic()
        try:
            res = subprocess.run(cmd, cwd=ROOT, env=env or self.env(), capture_output=True, text=True,
                                 timeout=limit)  # fmt: skip
            rc, out = res.returncode, res.stdout + res.stderr
        except subprocess.TimeoutExpired as exc:
            rc, out = "timeout", _text(exc.stdout) + _text(exc.stderr)
        fields = {"cmd": " ".join(cmd), "rc": rc, "seconds": round(time.monotonic() - t0, 1),
                  "limit_s": round(limit), "tail": out[-3000:]}  # fmt: skip
        self.record(name, **fields)
        print(f"[{name}] rc={rc} in {fields['seconds']}s", flush=True)
        return {**fields, "out": out}


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [
        {
            "step": "install",
            "what": f"unpack {args.wheels}/wheels/*.whl -> {args.wheels}/site; rebuild medkit",
        },
        {"step": "imports", "what": "bitsandbytes (NF4 on the GPU), datasets, medkit.train.verb"},
        {"step": "pytest", "what": "pytest -m gpu " + " ".join(gpu_test_files())},
    ]
    for name, shape, n, need, cap in BENCHES:
        steps.append({"step": name, "what": f"MEDKIT_BENCH_SHAPE={shape} MEDKIT_BENCH_STEPS={n} MEDKIT_BENCH_EXTRA=0 "
                      "python -m benchmarks train", "needs_left_s": need, "cap_s": cap})  # fmt: skip
        if shape == "tinyllama":
            steps.append({"step": CALIB[0], "what": " ".join(f"{k}={v}" for k, v in calib_env(args).items())
                          + " python -m benchmarks scale", "needs_left_s": CALIB[1], "cap_s": CALIB[2]})  # fmt: skip
    return steps


def calib_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment of the calibrated-export step: the TinyLlama shape, its rows, the tokenizer folder."""
    from benchmarks import scale_bench

    env = {"MEDKIT_BENCH_SCALE": "tinyllama", scale_bench.ROWS_ENV: CALIB_ROWS}
    tok = args.wheels / "tokenizer"
    return {**env, scale_bench.TOKENIZER_ENV: str(tok)} if (tok / "tokenizer.json").is_file() else env


def gpu_test_files() -> list[str]:
    """The test files with gpu tests (collecting every test file would import what the machine lacks)."""
    return [f for f in GPU_TESTS if (ROOT / f).is_file() and "mark.gpu" in (ROOT / f).read_text()]


def install(check: Check) -> bool:
    """Unpack the wheels (where site/ is missing or stale) and rebuild medkit's wheel from this tree."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.gpu_wheels import NEEDED, build_medkit, missing, unpack

    wheels = sorted((check.args.wheels / "wheels").glob("*.whl"))
    names = {re.split(r"-\d", w.name, maxsplit=1)[0].lower().replace("_", "-") for w in wheels}
    lacking = [n for n in NEEDED if n not in names]
    fields: dict[str, Any] = {"wheels": [w.name for w in wheels], "lacking_wheels": lacking}
    if lacking or not wheels:
        check.record("install", ok=False, **fields, error="run `make gpu-wheels` where PyPI is reachable")
        return False
    stamp = check.site / ".wheels"
    if not stamp.is_file() or stamp.read_text() != "\n".join(w.name for w in wheels):
        unpack(wheels, check.site)  # the big ones once; the dry run does this too (an ignored folder)
        stamp.write_text("\n".join(w.name for w in wheels))
    try:  # the tree as it is now, rather than the wheel built when the folder was made
        built = build_medkit(check.args.wheels / "wheels")
        unpack([built], check.site / "medkit.partial")
        shutil.rmtree(check.site / "medkit", ignore_errors=True)
        os.replace(check.site / "medkit.partial" / "medkit", check.site / "medkit")
        shutil.rmtree(check.site / "medkit.partial")
        fields["medkit_wheel"] = f"rebuilt from this tree: {built.name}"
    except (subprocess.CalledProcessError, ValueError, OSError) as exc:
        fields["medkit_wheel"] = f"rebuild failed ({exc}); using the one unpacked from the folder"
    fields["site_missing"] = missing(check.site)
    ok = not fields["site_missing"]
    check.record("install", ok=ok, **fields)
    return ok


def bench_summary(out: str) -> dict[str, Any] | None:
    """The JSON line train_bench prints last, with the targets checked."""
    for line in reversed(out.splitlines()):
        if line.startswith("{") and '"seed_recipe"' in line:
            return json.loads(line)
    return None


def check_targets(summary: dict[str, Any]) -> dict[str, Any]:
    """Issue 4's bar on the TinyLlama shape (>= 2x the seed's tokens/s at <= 2x its memory), then 40k tok/s."""
    r, tps = summary["ratio"], summary["medkit"]["tokens_per_s"]
    return {
        "speed_vs_seed": {"want": TARGETS["speed_vs_seed"], "got": r["speed"]},
        "memory_vs_seed": {"want_at_most": TARGETS["memory_vs_seed"], "got": r["memory"]},
        "tokens_per_s_h100_class": {"want": TARGETS["tokens_per_s_h100_class"], "got": tps},
        "same_work_speed_vs_seed": {"got": r.get("same_work_speed")},
        "mfu": {k: summary[k].get("mfu") for k in ("seed_recipe", "medkit", "medkit_seed_settings") if k in summary},
        "met": r["speed"] >= TARGETS["speed_vs_seed"] and r["memory"] <= TARGETS["memory_vs_seed"]
        and tps >= TARGETS["tokens_per_s_h100_class"],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheels", type=Path, default=ROOT / ".gpu-wheels")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check.json")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for everything (hard)")
    ap.add_argument("--dry-run", action="store_true", help="plan, files and imports on CPU; runs nothing")
    args = ap.parse_args(argv)
    args.wheels = args.wheels if args.wheels.is_absolute() else ROOT / args.wheels
    check = Check(args)
    py = sys.executable
    check.record("environment", python=sys.version.split()[0], executable=py)
    installed = install(check)
    if args.dry_run:
        return dry_run(check, py)
    if not installed:
        check.record("done", ok=False)
        print(f"error: the wheel folder {args.wheels} is incomplete (see {args.out}); run `make gpu-wheels`")
        return 1
    check.run("imports", [py, "-c", IMPORT_CHECK], cap=120)
    check.run("pytest", [py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *gpu_test_files()],
              cap=240)  # fmt: skip
    for name, shape, n, need, cap in BENCHES:
        if check.left() < need:
            check.record(name, skipped=f"{check.left():.0f}s left, needs {need}s")
            continue
        # rows (d) compile and (e) dropout would not fit the one call beside (a)-(c): the targets come first
        env = dict(check.env(), MEDKIT_BENCH_SHAPE=shape, MEDKIT_BENCH_STEPS=str(n), MEDKIT_BENCH_EXTRA="0")
        res = check.run(name, [py, "-m", "benchmarks", "train"], cap=cap, env=env)
        summary = bench_summary(res["out"])
        check.record(name, result=summary)
        if summary and shape == "tinyllama":
            check.report["targets"] = check_targets(summary)
        if shape == "tinyllama":
            calibrated(check, py)
    check.record("done", ok=True)
    print(f"report: {args.out}")
    return 0


def calibrated(check: Check, py: str) -> None:
    """Step 4: the TinyLlama shape's calibrated export, the layer loop on the GPU (scale_bench's rows)."""
    name, need, cap = CALIB
    if check.left() < need:
        check.record(name, skipped=f"{check.left():.0f}s left, needs {need}s")
        return
    res = check.run(
        name, [py, "-m", "benchmarks", "scale"], cap=cap, env={**check.env(), **calib_env(check.args)}
    )
    lines = [x.strip() for x in res["out"].splitlines()]
    check.record(name, mfu=next((x for x in lines if x.startswith("calibration pass on")), None),
                 rows=[x for x in lines if x.startswith("medkit ")])  # fmt: skip


def dry_run(check: Check, py: str) -> int:
    """Everything the real run needs exists and imports here; nothing is trained or installed."""
    from benchmarks import train_bench
    from benchmarks.gpu_wheels import NEEDED

    files = ["benchmarks/__main__.py", "benchmarks/train_bench.py", "benchmarks/gpu_wheels.py",
             "benchmarks/scale_bench.py", *GPU_TESTS]  # fmt: skip
    absent = [f for f in files if not (ROOT / f).is_file()]
    shapes = [shape for _, shape, *_ in BENCHES]
    problems = [f"missing file {f}" for f in absent]
    install_step = check.report["steps"]["install"]
    if not install_step.get("ok"):
        lacking = install_step.get("lacking_wheels") or install_step.get("site_missing") or []
        problems.append(
            f"wheel folder {check.args.wheels}: lacks {', '.join(lacking) or 'wheels'} (make gpu-wheels)"
        )
    problems += [f"unknown bench shape {s}" for s in shapes if s not in train_bench.SHAPES]
    problems += [f"{f} holds no gpu test" for f in GPU_TESTS if f not in gpu_test_files()]
    modules = [
        "benchmarks.train_bench",
        "medkit.train.flops",
        "medkit.train.verb",
        "medkit.train.loop",
        *NEEDED.values(),
    ]
    imports = check.run("imports", [py, "-c", f"import {', '.join(m.replace('-', '_') for m in modules)}"],
                        cap=120)  # fmt: skip
    problems += [] if imports["rc"] == 0 else [f"imports failed: {imports['tail'][-300:]}"]
    collect = check.run("pytest", [py, "-m", "pytest", "--collect-only", "-q", "-m", "gpu", "-p",
                                   "no:cacheprovider", *gpu_test_files()], cap=180)  # fmt: skip
    n_gpu = len([x for x in collect["out"].splitlines() if "::" in x])
    problems += [] if collect["rc"] == 0 and n_gpu else ["pytest -m gpu collected no test"]
    check.record("pytest", gpu_tests=n_gpu)
    for name, shape, n, *_ in BENCHES:
        check.record(
            name,
            planned=f"MEDKIT_BENCH_SHAPE={shape} MEDKIT_BENCH_STEPS={n} MEDKIT_BENCH_EXTRA=0",
            result=None,
        )
    env = calib_env(check.args)
    check.record(CALIB[0], planned=" ".join(f"{k}={v}" for k, v in env.items()), result=None,
                 device=_calib_device(py, env))  # fmt: skip
    check.report["targets"] = {k: {"want": v, "got": None} for k, v in TARGETS.items()}
    check.record("done", ok=not problems, problems=problems)
    print(json.dumps(check.report, indent=2, default=str))
    print(f"dry run {'ok' if not problems else 'FAILED: ' + '; '.join(problems)}; report: {check.args.out}")
    return 0 if not problems else 1


def _calib_device(py: str, env: dict[str, str]) -> str:
    """Where the calibrated export's layer loop would run here (cpu on a machine without CUDA)."""
    code = "from medkit.convert.quant.layerwise import calib_device; print(calib_device())"
    res = subprocess.run(
        [py, "-c", code], cwd=ROOT, capture_output=True, text=True, env={**os.environ, **env}
    )
    return res.stdout.strip() or res.stderr.strip()[-200:]


def _text(data: Any) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


if __name__ == "__main__":
    sys.exit(main())
