"""Foundation: the install is honest (extras), the CLI is lazy, and mistakes give one line."""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers")


def _py(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd or ROOT, timeout=120
    )


def _requirements(dist: str, extras: tuple[str, ...] = ()) -> list[str]:
    """Names required by `dist[extras]`, following self-references like medkit[train]."""
    from packaging.requirements import Requirement

    names: list[str] = []
    seen_extras: set[str] = set()
    todo = list(extras)
    reqs = [Requirement(r) for r in (md.requires(dist) or [])]
    env = {
        "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
        "sys_platform": sys.platform,
    }

    def active(req, extra):
        if req.marker is None:
            return extra is None
        return req.marker.evaluate({**env, "extra": extra or ""})

    for r in reqs:
        if active(r, None):
            names.append(r.name)
    while todo:
        extra = todo.pop()
        if extra in seen_extras:
            continue
        seen_extras.add(extra)
        for r in reqs:
            if active(r, extra):
                if r.name == dist:
                    todo.extend(r.extras)
                else:
                    names.append(r.name)
    return names


def _closure(names: list[str]) -> set[str]:
    """Installed distributions pulled in transitively (by the metadata of what is installed here)."""
    from packaging.requirements import Requirement

    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
    out: set[str] = set()
    todo = [norm(n) for n in names]
    env = {
        "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
        "sys_platform": sys.platform,
    }
    while todo:
        name = todo.pop()
        if name in out:
            continue
        out.add(name)
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for text in reqs:
            r = Requirement(text)
            if r.marker is None or r.marker.evaluate({**env, "extra": ""}):
                todo.append(norm(r.name))
    return out


def test_chat_extra_pulls_no_torch_or_transformers():
    direct = _requirements("medkit", ("chat",))
    assert "llama-cpp-python" in direct and "textual" in direct
    closure = _closure(direct)
    assert not closure & {"torch", "transformers", "peft", "bitsandbytes", "accelerate"}, sorted(closure)


def test_extras_declare_the_field_libraries():
    train = set(_requirements("medkit", ("train",)))
    assert {"torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets"} <= train
    convert = set(_requirements("medkit", ("convert",)))
    assert {"gguf", "numpy", "safetensors", "llama-cpp-python"} <= convert
    allx = set(_requirements("medkit", ("all",)))
    assert train | convert <= allx


def test_one_namespace_and_no_generic_top_level_names():
    dist = md.distribution("medkit")
    code = (
        "import importlib.util, json, medkit, medkit.convert, medkit.tui;"
        "print(json.dumps({'convert': importlib.util.find_spec('convert') is not None,"
        " 'tui': importlib.util.find_spec('tui') is not None, 'toolkit': importlib.util.find_spec('toolkit') is not None,"
        " 'medkit': medkit.__file__, 'convert_pkg': medkit.convert.__file__, 'tui_pkg': medkit.tui.__file__}))"
    )
    res = _py(code, cwd=Path("/"))  # away from the checkout, as a user's site-packages sees it
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["convert"] is False and info["tui"] is False and info["toolkit"] is False
    assert info["medkit"].endswith("toolkit/__init__.py")
    assert info["convert_pkg"].endswith("convert/__init__.py")
    assert info["tui_pkg"].endswith("tui/__init__.py")
    assert any(ep.name == "medkit" for ep in dist.entry_points if ep.group == "console_scripts")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["chat", "--help"], ["serve", "--help"]])
def test_cli_help_imports_no_torch(args):
    code = (
        "import sys, json\n"
        "from medkit.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "print(json.dumps({'code': code, 'heavy': [m for m in " + repr(HEAVY) + " if m in sys.modules]}))\n"
    )
    res = _py(code)
    last = json.loads(res.stdout.strip().splitlines()[-1])
    assert last["code"] == 0, res.stderr
    assert last["heavy"] == []


def test_version_matches_package():
    import medkit

    res = subprocess.run([sys.executable, "-m", "medkit", "--version"], capture_output=True, text=True)
    assert res.returncode == 0
    assert medkit.__version__ in res.stdout


def test_unknown_command_is_clicks_message_exit_2():
    res = subprocess.run([sys.executable, "-m", "medkit", "trian"], capture_output=True, text=True)
    assert res.returncode == 2
    assert "No such command 'trian'" in res.stderr
    assert "Traceback" not in res.stderr


def test_unknown_option_exit_2():
    res = subprocess.run(
        [sys.executable, "-m", "medkit", "validate", "--bogus"], capture_output=True, text=True
    )
    assert res.returncode == 2 and "No such option" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "verb,module,extra",
    [("chat", "llama_cpp", "chat"), ("train", "torch", "train"), ("export", "gguf", "convert")],
)
def test_missing_extra_says_which_to_install(verb, module, extra, tmp_path):
    # sys.modules[name] = None makes the module look absent to the import system.
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from medkit.cli import main\n"
        f"main([{verb!r}, {str(tmp_path / 'x')!r}])\n"
    )
    res = _py(code)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert f"medkit[{extra}]" in lines[0] and module in lines[0]


def test_makefile_lists_the_dev_commands():
    text = (ROOT / "Makefile").read_text()
    for target in ("setup", "demo", "test", "test-fast", "bench", "lint", "clean"):
        assert re.search(rf"^{re.escape(target)}:", text, re.M), target
    assert "torch==2.13.0" in text


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme
    assert re.search(r"^make test$", ci, re.M)


# ---- the lock (issue 29) -----------------------------------------------------------------------------


def _lock() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of every entry of requirements.lock."""
    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
    text = (ROOT / "requirements.lock").read_text().replace("\\\n", " ")
    out: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9][\w.-]*)==(\S+)(.*)$", line)
        if m:
            out[norm(m.group(1))] = (m.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", m.group(3)))
    return out


def test_lock_pins_every_package_of_the_dev_install_with_hashes():
    lock = _lock()
    assert all(hashes for _, hashes in lock.values()), [n for n, (_, h) in lock.items() if not h]
    wanted = _closure(_requirements("medkit", ("dev",))) - {"medkit"}
    assert wanted <= set(lock), sorted(wanted - set(lock))
    assert lock["torch"][0] == "2.13.0+cpu"  # the CPU wheel, never a CUDA build by accident


def test_lock_is_what_this_venv_runs():
    """The suite runs on the lock: a drifted venv (or a lock edited without an install) shows here."""
    lock = _lock()
    drift = {n: (v, md.version(n)) for n, (v, _) in lock.items() if _installed(n) and md.version(n) != v}
    assert not drift, drift


def _installed(name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


@pytest.mark.parametrize("platform,locked", [("linux-x86_64-cp311", True), ("darwin-arm64-cp312", False)])
def test_setup_installs_the_lock_only_on_its_platform(platform, locked, tmp_path):
    proc = subprocess.run(
        ["make", "-n", "setup", f"PLATFORM={platform}", f"STAMP={tmp_path}/stamp", f"VENV={tmp_path}/v"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert ("--require-hashes" in proc.stdout and "-r requirements.lock" in proc.stdout) == locked
    fallback = [ln for ln in proc.stdout.splitlines() if "installing from pyproject's ranges" in ln]
    assert len(fallback) == (0 if locked else 1)
