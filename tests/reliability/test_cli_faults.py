"""Faults at the CLI's edges: bad recipe bytes, bad GGUF files for verify, folders that are not runs, a
read-only or full disk. Each fault is a row: how to build it under tmp_path, the argv, and what the one
error line must name. Add a fault: add a row.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability.conftest import REPO, Outcome, assert_one_line_error, run_medkit


@dataclass(frozen=True)
class Fault:
    id: str
    make: Callable[[Path], Path]  # builds the faulty input under tmp_path, returns its path
    argv: Callable[[Path], list[str]]  # the medkit arguments, given that path
    needles: tuple[str, ...]  # besides the path itself, what the error line must say


# ---- recipes: every recipe verb reads the file the same way ------------------------------------------
def _file(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    return make


def _dir(tmp: Path) -> Path:
    (tmp / "recipes").mkdir()
    return tmp / "recipes"


LATIN1 = b'name = "x"\n# caf\xe9 au lait\n[model]\nbase = "y"\n'  # offset 16: the 0xe9 of a Latin-1 file
RECIPE_FAULTS = [
    Fault("not-utf8", _file("latin1.toml", LATIN1), None, ("not UTF-8", "0xe9", "offset 16", "line 2")),
    Fault("utf16", _file("u16.toml", 'name = "x"\n'.encode("utf-16")), None, ("UTF-16", "UTF-8")),
    Fault("bad-toml", _file("bad.toml", b'name = "x\n[model\n'), None, ("not valid TOML", "line 1")),
    Fault("empty", _file("empty.toml", b""), None, ("is empty",)),
    Fault("comments-only", _file("c.toml", b"# nothing yet\n"), None, ("is empty",)),
    Fault("directory", _dir, None, ("is a directory",)),
    Fault("missing", lambda tmp: tmp / "nope.toml", None, ("not found",)),
]


@pytest.mark.parametrize("fault", RECIPE_FAULTS, ids=lambda f: f.id)
def test_recipe_fault_is_one_line(fault, tmp_path):
    path = fault.make(tmp_path)
    assert_one_line_error(run_medkit("validate", str(path), cwd=tmp_path), str(path), *fault.needles)


@pytest.mark.parametrize("verb", ["data", "train"])
def test_non_utf8_recipe_is_one_line_for_every_recipe_verb(verb, tmp_path):
    path = _file("latin1.toml", LATIN1)(tmp_path)
    assert_one_line_error(run_medkit(verb, str(path), cwd=tmp_path), str(path), "not UTF-8", "offset 16")
    assert_one_line_error(run_medkit(verb, str(tmp_path), cwd=tmp_path), str(tmp_path), "is a directory")


def test_a_utf8_bom_is_accepted(tmp_path):
    from medkit.recipe import read_recipe_text

    (tmp_path / "bom.toml").write_bytes(b'\xef\xbb\xbfname = "x"\n')
    assert read_recipe_text(tmp_path / "bom.toml") == 'name = "x"\n'


# ---- verify: the GGUF header is checked (medkit.formats.gguf_header) before any model loads -------------------
def _tiny_gguf(path: Path, file_type: int = 1) -> Path:
    """A small, valid GGUF (one f32 tensor) whose general.file_type says ``file_type``."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_file_type(file_type)
    w.add_tensor("token_embd.weight", np.arange(256, dtype=np.float32).reshape(16, 16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _truncated(tmp: Path) -> Path:
    full = _tiny_gguf(tmp / "full.gguf").read_bytes()
    (tmp / "cut.gguf").write_bytes(full[: len(full) - 300])
    return tmp / "cut.gguf"


def _cut_header(tmp: Path) -> Path:
    (tmp / "head.gguf").write_bytes(_tiny_gguf(tmp / "full.gguf").read_bytes()[:40])
    return tmp / "head.gguf"


def _adapter(tmp: Path) -> Path:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(tmp / "adapter.gguf"), "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((2, 16), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tmp / "adapter.gguf"


def _verify(path: Path) -> list[str]:
    hf = path.parent / "hf"
    hf.mkdir(exist_ok=True)
    (hf / "config.json").write_text("{}")
    return ["verify", str(path), "--against", str(hf)]


VERIFY_FAULTS = [
    Fault("truncated", _truncated, _verify, ("truncated",)),
    Fault("header-cut", _cut_header, _verify, ("truncated or corrupt",)),
    Fault("random-bytes", _file("r.gguf", random.Random(0).randbytes(4096)), _verify, ("not a GGUF file",)),
    Fault("text", _file("notes.gguf", b"hello, this is text\n"), _verify, ("not a GGUF file", "b'hell'")),
    Fault("empty", _file("empty.gguf", b""), _verify, ("not a GGUF file",)),
    Fault("gguf-magic-only", _file("m.gguf", b"GGUF"), _verify, ("truncated",)),
    Fault("lora-adapter", _adapter, _verify, ("LoRA adapter", "model GGUFs")),
    Fault("missing", lambda tmp: tmp / "nope.gguf", _verify, ("no such GGUF file",)),
    Fault("directory", _dir, _verify, ("is a directory",)),
]


@pytest.mark.parametrize("fault", VERIFY_FAULTS, ids=lambda f: f.id)
def test_verify_fault_is_one_line(fault, tmp_path):
    path = fault.make(tmp_path)
    assert_one_line_error(run_medkit(*fault.argv(path), cwd=tmp_path), str(path), *fault.needles)


def test_verify_texts_file_not_utf8_is_one_line(tmp_path, monkeypatch, capsys):
    from medkit.convert import verify

    monkeypatch.setattr(verify, "verify", lambda *a, **k: pytest.fail("verify ran on a bad texts file"))
    texts = _file("texts.txt", b"ok line\nfi\xe8vre\n")(tmp_path)
    out = _in_process([*_verify(_tiny_gguf(tmp_path / "m.gguf")), "--texts", str(texts)], capsys)
    assert_one_line_error(out, str(texts), "not UTF-8", "offset 10")


@pytest.mark.parametrize(
    "ftype,name",
    [(12, "q3_k_m"), (10, "q2_k"), (30, "iq4_xs"), (15, "q4_k_m"), (32, "bf16"), (99, "ftype99")],
)
def test_verify_names_every_llama_cpp_type(ftype, name, tmp_path):
    from medkit.convert.verify import gguf_type

    assert gguf_type(_tiny_gguf(tmp_path / f"{ftype}.gguf", ftype)) == name


def test_quant_type_table_matches_llama_cpp_and_gguf():
    """One table (medkit.formats.gguf_types.QUANT_TYPES); its numbers are llama.cpp's and the gguf package's."""
    import gguf
    import llama_cpp

    from medkit.formats.gguf_types import BY_FTYPE, QUANT_TYPES

    assert len(BY_FTYPE) == len(QUANT_TYPES)
    for t in QUANT_TYPES:
        const = "LLAMA_FTYPE_ALL_F32" if t.name == "f32" else f"LLAMA_FTYPE_MOSTLY_{t.name.upper()}"
        if hasattr(llama_cpp, const):
            assert getattr(llama_cpp, const) == t.ftype, t.name
        member = "ALL_F32" if t.name == "f32" else f"MOSTLY_{t.name.upper()}"
        if member in gguf.LlamaFileType.__members__:
            assert int(gguf.LlamaFileType[member]) == t.ftype, t.name
    named = {
        v for k, v in vars(llama_cpp).items() if k.startswith("LLAMA_FTYPE_") and k != "LLAMA_FTYPE_GUESSED"
    }
    missing = sorted(n for n in named if n not in BY_FTYPE)
    assert not missing, f"llama.cpp file types with no name in QUANT_TYPES: {missing}"


@pytest.mark.parametrize("terminal", [True, False])
def test_verify_shows_progress_on_a_terminal_only(terminal):
    import io

    from rich.console import Console

    from medkit.convert.verify import progress_bar

    buf = io.StringIO()
    with progress_bar(Console(file=buf, force_terminal=terminal, width=100)) as start:
        step = start(3)
        for label in ("transformers", "transformers", "llama.cpp q4_k_m"):
            step(label)
    shown = buf.getvalue()
    if terminal:
        assert "verify: transformers" in shown and "verify: llama.cpp q4_k_m" in shown and "3/3" in shown
    else:
        assert shown == ""  # a log file or a pipe gets no bar


# ---- folders that are not runs -------------------------------------------------------------------------
def _folder(files: tuple[str, ...]) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / "model").mkdir()
        for name in files:
            (tmp / "model" / name).write_text("{}")
        return tmp / "model"

    return make


NEITHER = ("neither a run directory", "recipe.toml/run.json", "config.json")
RUN_FAULTS = [
    Fault("export-empty-folder", _folder(()), lambda p: ["export", str(p), "--gguf", "f16"], NEITHER),
    Fault("export-weights-only", _folder(("model.safetensors",)), lambda p: ["export", str(p)], NEITHER),
    Fault("merge-empty-folder", _folder(()), lambda p: ["merge", str(p)], NEITHER),
    Fault("eval-empty-folder", _folder(()), lambda p: ["eval", str(p)], NEITHER),
    Fault("merge-hf-folder", _folder(("config.json",)), lambda p: ["merge", str(p)], ("Hugging Face model",)),
    Fault("merge-a-file", _file("run.txt", b"x"), lambda p: ["merge", str(p)], ("is a file",)),
]


@pytest.mark.parametrize("fault", RUN_FAULTS, ids=lambda f: f.id)
def test_not_a_run_is_one_line(fault, tmp_path):
    path = fault.make(tmp_path)
    out = run_medkit(*fault.argv(path), cwd=tmp_path, env={"MEDKIT_RUNS": str(tmp_path / "runs")})
    assert_one_line_error(out, str(path), *fault.needles)


# ---- a read-only, forbidden or full disk ------------------------------------------------------------
def _in_process(argv: list[str], capsys) -> Outcome:
    """`medkit ARGV` through medkit.cli.main in this process (for faults set up with monkeypatch)."""
    from medkit.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    cap = capsys.readouterr()
    return Outcome(int(exc.value.code or 0), cap.out, cap.err)


_MOUNT_OK: dict[str, bool] = {}


def _on_tmpfs(mountpoint: Path, opts: str) -> list[str]:
    """A command prefix that runs the rest with a fresh tmpfs (``opts``) on ``mountpoint``, in a private
    mount namespace (root: unshare -m; others: unshare -rm). Skips the test where that is not allowed."""
    unshare = shutil.which("unshare")
    flags = ["-m"] if os.geteuid() == 0 else ["-r", "-m"]
    prefix = [unshare or "unshare", *flags, "sh", "-c", f'mount -t tmpfs -o {opts} tmpfs "$0" && exec "$@"']
    if "ok" not in _MOUNT_OK:
        probe = mountpoint.parent / ".probe"
        probe.mkdir(exist_ok=True)
        ok = (
            unshare is not None
            and subprocess.run([*prefix, str(probe), "true"], capture_output=True).returncode == 0
        )
        _MOUNT_OK["ok"] = ok
    if not _MOUNT_OK["ok"]:
        pytest.skip("cannot mount a tmpfs in a private mount namespace here (unshare -m)")
    mountpoint.mkdir(parents=True, exist_ok=True)
    return [*prefix, str(mountpoint)]


def _run_in(prefix: list[str], argv: list[str], cwd: Path) -> Outcome:
    env = {k: v for k, v in os.environ.items() if k != "MEDKIT_DEBUG"}
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    proc = subprocess.run([*prefix, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize("sub", ["", "new/folder"], ids=["existing-folder", "folder-to-create"])
def test_read_only_output_says_read_only(sub, tiny_model_dir, tmp_path):
    ro = tmp_path / "ro"
    prefix = _on_tmpfs(ro, "ro,size=1m")
    out_dir = ro / sub if sub else ro
    argv = [sys.executable, "-m", "medkit", "export", str(tiny_model_dir("llama")), "--gguf", "f16"]
    out = _run_in(prefix, [*argv, "--no-verify", "--out", str(out_dir)], tmp_path)
    line = assert_one_line_error(out, "read-only file system", str(out_dir if sub == "" else ro / "new"))
    assert "not enough disk" not in line


@pytest.mark.parametrize(
    "call",
    [
        "check_free_space(RO, 1)",
        "check_free_space(RO / 'sub', 1)",
        "atomic_write_text(RO / 'run.json', '{}')",
    ],
)
def test_read_only_is_not_reported_as_not_enough_disk(call, tmp_path):
    """A read-only mount often reports 0 bytes free: medkit.runs says read-only first."""
    ro = tmp_path / "ro"
    prefix = _on_tmpfs(ro, "ro,size=1m")
    script = (
        "from pathlib import Path\n"
        "from medkit.errors import WriteError\n"
        "from medkit.formats.files import atomic_write_text, check_free_space\n"
        f"RO = Path({str(ro)!r})\n"
        "try:\n"
        f"    {call}\n"
        "except WriteError as exc:\n"
        "    print('WriteError:', exc.one_line())\n"
    )
    out = _run_in(prefix, [sys.executable, "-c", script], tmp_path)
    assert "WriteError:" in out.stdout and "read-only file system" in out.stdout, out.stdout + out.stderr
    assert str(ro) in out.stdout and "not enough disk" not in out.stdout


def test_permission_denied_says_permission_denied(tiny_model_dir, tmp_path, monkeypatch, capsys):
    # root ignores directory modes, so the refusal is made by the OS call medkit asks (os.access)
    real_access = os.access
    locked = tmp_path / "locked"
    locked.mkdir()

    def access(path, mode, **kw):  # readable, not writable: a folder of another user
        return not (Path(path) == locked and mode & os.W_OK) and real_access(path, mode, **kw)

    monkeypatch.setattr(os, "access", access)
    argv = ["export", str(tiny_model_dir("llama")), "--gguf", "f16", "--no-verify", "--out", str(locked)]
    line = assert_one_line_error(_in_process(argv, capsys), "permission denied", str(locked))
    assert "not enough disk" not in line and not list(locked.iterdir())


@pytest.mark.parametrize(
    "code,needle",
    [
        ("ENOSPC", "no space left on device"),
        ("EROFS", "read-only file system"),
        ("EACCES", "permission denied"),
    ],
)
def test_os_errors_reaching_the_cli_name_the_users_path(code, needle, tmp_path):
    """The safety net in main(): an OSError from any verb names the file a user knows, not its .partial."""
    import errno

    from medkit.cli import environment_failure

    partial = tmp_path / ".model.gguf.k2j3h4g5.partial"  # what atomic_path writes before the rename
    line = environment_failure(OSError(getattr(errno, code), "x", str(partial)))
    assert needle in line and str(tmp_path / "model.gguf") in line and ".partial" not in line
    assert environment_failure(OSError(errno.EINVAL, "x")) is None  # anything else stays a traceback (a bug)


def test_full_disk_during_quantize_is_a_disk_space_error(tiny_model_dir, tmp_path):
    """llama.cpp says only 'iostream error'; medkit sees the disk filled and says where and how much."""
    from medkit.convert.gguf.writer import write_gguf

    src = write_gguf(tiny_model_dir("llama"), tmp_path / "tiny-f16.gguf", "f16").path
    full = tmp_path / "full"
    size_k = max(16, src.stat().st_size // 2 // 4096 * 4)  # half of the f16 source: q8_0 cannot fit
    prefix = _on_tmpfs(full, f"size={size_k}k")
    script = (
        "import sys\n"
        "from medkit.convert.quant.quantize import quantize\n"
        "from medkit.errors import DiskSpaceError\n"
        "try:\n"
        f"    quantize({str(src)!r}, {str(full / 'tiny-q8_0.gguf')!r}, 'q8_0', threads=1)\n"
        "except DiskSpaceError as exc:\n"
        "    print('DiskSpaceError:', exc.one_line())\n"
        "import os\n"
        f"print('LEFT:', sorted(os.listdir({str(full)!r})))\n"
    )
    out = _run_in(prefix, [sys.executable, "-c", script], tmp_path)
    assert "Traceback" not in out.stderr, out.stderr
    assert "DiskSpaceError:" in out.stdout and "iostream" not in out.stdout, out.stdout + out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("DiskSpaceError:"))
    assert str(full / "tiny-q8_0.gguf") in line and re.search(r"need about [\d.]+ [KMG]iB", line), line
    assert "LEFT: []" in out.stdout  # no partial file left behind


def test_safetensors_full_disk_reaching_the_cli_is_one_line(tmp_path):
    """SafetensorError is not an OSError; main() still turns 'No space left on device' into one line."""
    full = tmp_path / "full"
    prefix = _on_tmpfs(full, "size=64k")
    target = full / "model.safetensors"
    script = (
        "import sys, types, click, numpy as np\n"
        "from safetensors.numpy import save_file\n"
        "mod = types.ModuleType('fill_disk')\n"
        "@click.command()\n"
        "@click.argument('out')\n"
        "def command(out):\n"
        "    save_file({'w': np.zeros(1 << 18, dtype=np.float32)}, out)\n"
        "mod.command = command\n"
        "sys.modules['fill_disk'] = mod\n"
        "from medkit import cli\n"
        "cli.VERBS['fill'] = cli.Verb('fill_disk:command', 'fill the disk')\n"
        f"cli.main(['fill', {str(target)!r}])\n"
    )
    out = _run_in(prefix, [sys.executable, "-c", script], tmp_path)
    assert_one_line_error(out, "no space left on device", str(target))
