"""Run every benchmark part in turn: `python -m benchmarks [train] [export] [runtime]`; `profile`,
`constrain`, `scale` and `pref` on request."""

from __future__ import annotations

import importlib
import sys
import time

PARTS = ("train", "export", "runtime")  # the default run
EXTRA = (
    "profile",
    "constrain",
    "scale",
    "pref",
    "calib_inputs",
)  # a training step's time (profile_bench.py); ICD-10 decoding (constrain_bench.py); exports at real sizes
# (scale_bench.py); DPO's tokens/s over SFT's (pref_bench.py); GPTQ on full-precision or quantized layer
# inputs (calib_inputs_bench.py)


def main(argv: list[str]) -> int:
    parts = argv or list(PARTS)
    failed = []
    for part in parts:
        if part not in PARTS + EXTRA:
            print(f"unknown benchmark part '{part}'; choose from {', '.join(PARTS + EXTRA)}", file=sys.stderr)
            return 2
        print(f"\n=== bench: {part} ===", flush=True)
        t0 = time.perf_counter()
        try:
            importlib.import_module(f"benchmarks.{part}_bench").main()
        except Exception as exc:  # keep going: one part failing should not hide the others
            failed.append(part)
            print(f"bench {part} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"=== {part} done in {time.perf_counter() - t0:.1f}s ===", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
