"""Bad input: one clear ConvertError line, and nothing (not even a partial file) under the final name."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medkit.convert.gguf.writer import write_gguf
from medkit.errors import ConvertError, DiskSpaceError
from medkit.formats.gguf_types import parse_types


@pytest.fixture
def model(tiny_model_dir, tmp_path) -> Path:
    """A writable copy of the tiny llama folder."""
    return Path(shutil.copytree(tiny_model_dir("llama"), tmp_path / "model"))


def _nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f"*{out.name}*")), "a temp/partial file was left behind"


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_unsupported_architecture_is_named_with_the_supported_ones(model, tmp_path):
    _edit_config(model, architectures=["FalconForCausalLM"], model_type="falcon")
    out = tmp_path / "o" / "m.gguf"
    with pytest.raises(ConvertError) as err:
        write_gguf(model, out, "f16")
    msg = err.value.one_line()
    listed = msg.split("(supported: ", 1)[1].split(")", 1)[0].split(", ")
    assert "FalconForCausalLM" in msg and {"gpt2", "llama", "mistral", "qwen2", "phi3"} <= set(listed)
    assert listed == sorted(listed)  # every exported family, each named once, in order
    assert "\n" not in msg
    _nothing_written(out)


def test_missing_tokenizer_files(model, tmp_path):
    for name in ("tokenizer.json", "tokenizer.model"):
        (model / name).unlink()
    out = tmp_path / "o" / "m.gguf"
    with pytest.raises(ConvertError, match="no tokenizer files"):
        write_gguf(model, out, "f16")
    _nothing_written(out)


def test_truncated_safetensors(model, tmp_path):
    st = model / "model.safetensors"
    data = st.read_bytes()
    st.write_bytes(data[: len(data) // 2])
    out = tmp_path / "o" / "m.gguf"
    with pytest.raises(ConvertError, match="truncated or corrupt safetensors"):
        write_gguf(model, out, "f16")
    _nothing_written(out)


def test_corrupt_safetensors_header(model, tmp_path):
    (model / "model.safetensors").write_bytes(b"\xff" * 64)
    out = tmp_path / "o" / "m.gguf"
    with pytest.raises(ConvertError, match="corrupt safetensors header"):
        write_gguf(model, out, "f16")
    _nothing_written(out)


def test_failure_mid_write_leaves_no_partial_file(model, tmp_path, monkeypatch):
    from medkit.convert.gguf import writer as gguf_writer

    real_get = gguf_writer.WeightReader.get
    calls = []

    def failing_get(self, name):
        calls.append(name)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return real_get(self, name)

    monkeypatch.setattr(gguf_writer.WeightReader, "get", failing_get)
    out = tmp_path / "o" / "m.gguf"
    with pytest.raises(OSError):
        write_gguf(model, out, "f16")
    _nothing_written(out)


def test_not_enough_disk(model, tmp_path, monkeypatch):
    import medkit.formats.files

    monkeypatch.setattr(
        medkit.formats.files.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 1000)
    )
    out = tmp_path / "o" / "m.gguf"
    with pytest.raises(DiskSpaceError, match="not enough disk"):
        write_gguf(model, out, "f16")
    _nothing_written(out)


def test_unknown_quant_type_lists_valid_ones():
    with pytest.raises(ConvertError) as err:
        parse_types("q4_0,q3_xs")
    assert "'q3_xs'" in str(err.value)
    assert "f32, f16, bf16, q8_0, q6_k, q5_k_m, q4_k_m, q4_0" in str(err.value)
    assert parse_types("Q4_0, f16,q4_0") == ["q4_0", "f16"]


def test_pickle_weights_refused_unless_allowed(model, tmp_path):
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    out = tmp_path / "o" / "m.gguf"
    with pytest.raises(ConvertError, match="--allow-pickle"):
        write_gguf(model, out, "f16")
    _nothing_written(out)
    assert write_gguf(model, out, "f16", allow_pickle=True).path.is_file()


def test_remote_code_refused_unless_trusted(model, tmp_path):
    _edit_config(model, auto_map={"AutoModelForCausalLM": "modeling_x.XForCausalLM"})
    out = tmp_path / "o" / "m.gguf"
    with pytest.raises(ConvertError, match="--trust-remote-code"):
        write_gguf(model, out, "f16")
    _nothing_written(out)


def test_cli_bad_input_is_one_line_and_nonzero(model, tmp_path):
    """`medkit export` prints one `error:` line, exits 1, and refuses to overwrite without --force."""

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "medkit", "export", str(model), "--out", str(tmp_path / "o"), *args],
            capture_output=True,
            text=True,
            timeout=300,
        )

    bad = run("--gguf", "q3_xs", "--no-verify")
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0 and bad.stderr.startswith("error: unknown GGUF type 'q3_xs'")
    ok = run("--gguf", "f16", "--no-verify")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "o" / "model-f16.gguf").is_file()
    again = run("--gguf", "f16", "--no-verify")
    assert again.returncode == 1 and "already exists (use --force to overwrite)" in again.stderr
    assert run("--gguf", "f16", "--no-verify", "--force").returncode == 0
