"""`make gpu-check` rehearsed on CPU: the plan, the wheel folder, the report, and the dry run end to end."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from benchmarks import gpu_check, gpu_wheels

ROOT = Path(__file__).resolve().parents[2]


def fake_wheels(folder: Path, skip: tuple[str, ...] = ()) -> Path:
    """A wheel folder like `make gpu-wheels` makes, offline: each needed distribution zipped again from
    what is installed here (its RECORD), without bitsandbytes' GPU libraries."""
    import importlib.metadata as md

    wheels = folder / "wheels"
    wheels.mkdir(parents=True)
    for dist in gpu_wheels.NEEDED:
        if dist in skip:
            continue
        d = md.distribution(dist)
        with zipfile.ZipFile(wheels / f"{dist.replace('-', '_')}-{d.version}-py3-none-any.whl", "w") as zf:
            for f in d.files or []:
                name = str(f)
                if (
                    ".." in name
                    or "__pycache__" in name
                    or any(g in name for g in ("_cuda", "_rocm", "_xpu"))
                ):
                    continue
                zf.write(f.locate(), name)
    return folder


def _args(tmp_path: Path, wheels: Path, dry_run: bool = True):
    return argparse.Namespace(wheels=wheels, out=tmp_path / "report.json", budget=60.0, dry_run=dry_run)


def test_plan_names_every_step_in_order_with_its_budget():
    steps = gpu_check.plan(_args(Path("/nonexistent"), Path(".gpu-wheels")))
    assert [s["step"] for s in steps] == [
        "install",
        "imports",
        "pytest",
        "bench_tinyllama",
        "calib_tinyllama",
        "bench_mistral7b",
    ]
    assert "MEDKIT_BENCH_SCALE=tinyllama" in steps[4]["what"] and "calibrated" in steps[4]["what"]
    assert "MEDKIT_BENCH_SHAPE=tinyllama" in steps[3]["what"] and steps[3]["cap_s"] <= 300
    assert sorted(gpu_check.gpu_test_files()) == sorted(gpu_check.GPU_TESTS)  # each file holds gpu tests


def test_a_wheel_folder_that_lacks_a_wheel_is_reported_not_installed(tmp_path):
    folder = fake_wheels(tmp_path / "w", skip=("bitsandbytes",))
    check = gpu_check.Check(_args(tmp_path, folder))
    assert gpu_check.install(check) is False
    step = json.loads((tmp_path / "report.json").read_text())["steps"]["install"]
    assert (
        step["ok"] is False
        and step["lacking_wheels"] == ["bitsandbytes"]
        and "make gpu-wheels" in step["error"]
    )
    assert not (folder / "site").exists()


def test_download_command_targets_the_devices_python_and_platform():
    cmd = gpu_wheels.download_command(Path("/tmp/x"))
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "--only-binary=:all:" in cmd
    assert cmd[cmd.index("--python-version") + 1] == "3.12" and "manylinux_2_24_x86_64" in cmd
    names = [p.split("==")[0] for p in cmd[-len(gpu_wheels.NEEDED) :]]  # pinned to the versions here
    assert names == list(gpu_wheels.NEEDED) and {"bitsandbytes", "datasets", "tomli-w"} <= set(names)


def test_targets_read_off_a_bench_summary():
    line = {"seed_recipe": {"tokens_per_s": 10_000, "mfu": 0.1}, "medkit": {"tokens_per_s": 41_000, "mfu": 0.4},
            "medkit_seed_settings": {"tokens_per_s": 20_000, "mfu": 0.2},
            "ratio": {"speed": 4.1, "memory": 0.5, "same_work_speed": 2.0}}  # fmt: skip
    out = "noise\n" + json.dumps(line) + "\n"
    got = gpu_check.check_targets(gpu_check.bench_summary(out))
    assert got["met"] is True and got["mfu"] == {
        "seed_recipe": 0.1,
        "medkit": 0.4,
        "medkit_seed_settings": 0.2,
    }
    slow = {**line, "medkit": {"tokens_per_s": 39_000}}
    assert gpu_check.check_targets(slow)["met"] is False
    assert gpu_check.bench_summary("no json here") is None


@pytest.mark.slow
def test_dry_run_rehearses_install_imports_and_collection(tmp_path):
    """The whole dry run as `make gpu-check` would run it: the wheels unpacked, medkit rebuilt from this tree
    into the folder, every import from there, `pytest -m gpu` collected, and the report skeleton written."""
    folder = fake_wheels(tmp_path / "w")
    out = tmp_path / "report.json"
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--wheels", str(folder), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "dry run ok" in res.stdout
    report = json.loads(out.read_text())
    steps = report["steps"]
    assert (
        report["dry_run"] is True and steps["install"]["ok"] and steps["done"] == {"ok": True, "problems": []}
    )
    assert "rebuilt from this tree" in steps["install"]["medkit_wheel"]
    assert (folder / "site" / "medkit" / "train" / "flops.py").read_text() == (
        ROOT / "toolkit" / "train" / "flops.py"
    ).read_text()
    assert steps["imports"]["rc"] == 0 and steps["pytest"]["rc"] == 0 and steps["pytest"]["gpu_tests"] >= 3
    assert steps["bench_tinyllama"]["planned"].startswith("MEDKIT_BENCH_SHAPE=tinyllama")
    assert "MEDKIT_BENCH_SCALE=tinyllama" in steps["calib_tinyllama"]["planned"]
    assert steps["calib_tinyllama"]["device"] == "cpu"  # no CUDA here: the layer loop would run on the CPU
    assert set(report["targets"]) == set(gpu_check.TARGETS) and not list(out.parent.glob(".*.partial"))
