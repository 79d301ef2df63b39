"""The calibrated export's memory plan (medkit.convert.quant.memplan): the cgroup's room read like the kernel
keeps it (v1 and v2), a plan that fits picks how many blocks GPTQ rounds at once, one that does not stops
in one line with what it needs and what is free."""

from __future__ import annotations

from pathlib import Path

import pytest

from medkit.convert.quant import memplan
from medkit.errors import ConvertError

GiB = 2**30
TINYLLAMA = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4)  # fmt: skip
MISTRAL7B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=8)  # fmt: skip


def _v1(tmp_path: Path, limit: int, usage: int, inactive: int, parent_limit: int | None = None) -> Path:
    proc = tmp_path / "cgroup"
    proc.write_text("5:devices:/\n4:memory:/jobs/one\n0::/\n")
    for folder, lim in (
        (tmp_path / "memory" / "jobs" / "one", limit),
        (tmp_path / "memory" / "jobs", parent_limit),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "memory.limit_in_bytes").write_text(f"{lim if lim is not None else 9223372036854771712}\n")
        (folder / "memory.usage_in_bytes").write_text(f"{usage}\n")
        (folder / "memory.stat").write_text(f"inactive_file 1\ntotal_inactive_file {inactive}\n")
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    return proc


def test_v1_room_is_limit_less_usage_plus_reclaimable_cache_the_least_of_its_ancestors(tmp_path):
    proc = _v1(tmp_path, limit=16 * GiB, usage=5 * GiB, inactive=1 * GiB)
    assert memplan.cgroup_room(proc, tmp_path) == 12 * GiB
    proc = _v1(tmp_path, limit=16 * GiB, usage=5 * GiB, inactive=0, parent_limit=8 * GiB)
    assert memplan.cgroup_room(proc, tmp_path) == 3 * GiB


def test_v2_room_and_no_limit(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("0::/ci/job\n")
    job = tmp_path / "ci" / "job"
    job.mkdir(parents=True)
    (job / "memory.max").write_text(f"{4 * GiB}\n")
    (job / "memory.current").write_text(f"{1 * GiB}\n")
    (job / "memory.stat").write_text(f"anon 5\ninactive_file {GiB // 2}\n")
    assert memplan.cgroup_room(proc, tmp_path) == 3 * GiB + GiB // 2
    (job / "memory.max").write_text("max\n")
    assert memplan.cgroup_room(proc, tmp_path) is None
    assert memplan.cgroup_room(tmp_path / "missing", tmp_path) is None


def test_available_takes_the_cgroup_room_when_it_is_less(monkeypatch):
    monkeypatch.setattr(memplan, "cgroup_room", lambda: 1 * GiB)
    free, why = memplan.available()
    assert free == 1 * GiB and "cgroup" in why


def test_plan_grows_with_one_layer_not_the_model():
    small = memplan.plan_calibration(TINYLLAMA, 8192)
    deep = memplan.plan_calibration({**TINYLLAMA, "num_hidden_layers": 88}, 8192)
    assert small.layer_loop == deep.layer_loop and small.gptq_block == deep.gptq_block
    assert small.need(1) < 3 * GiB  # the target for the TinyLlama shape
    big = memplan.plan_calibration(MISTRAL7B, 8192)
    assert 3 * GiB < big.need(1) < 8 * GiB
    assert small.need(2) > small.need(1)


def test_an_untied_output_layer_is_planned_one_slice_at_a_time():
    """GPTQ rounds the output layer in slices of rows (gptq.row_slices): a vocabulary of 256k costs one
    slice plus the head's Gram matrices, not the vocab x hidden weight and its grids."""
    from medkit.convert.quant.gptq import SLICE_BYTES

    tied = memplan.plan_calibration({**TINYLLAMA, "tie_word_embeddings": True}, 8192)
    wide = memplan.plan_calibration({**TINYLLAMA, "vocab_size": 256000, "tie_word_embeddings": False}, 8192)
    h = TINYLLAMA["hidden_size"]
    assert wide.gptq_block >= 3 * 4 * h * h + 12 * SLICE_BYTES
    assert wide.gptq_block < 12 * 4 * 256000 * h  # the whole weight with its grids and copies: ~23 GiB
    assert wide.gptq_block >= tied.gptq_block


def test_a_plan_that_fits_picks_blocks_one_that_does_not_says_need_and_free():
    plan = memplan.plan_calibration(TINYLLAMA, 8192)
    assert plan.fit(64 * GiB) == memplan.MAX_GPTQ_BLOCKS
    assert plan.fit(int(plan.need(1) / memplan.MARGIN) + 1) == 1
    with pytest.raises(ConvertError) as err:
        plan.fit(1 * GiB, "the cgroup's memory limit")
    msg = err.value.message
    assert "needs ~" in msg and "1.0 GiB is free (the cgroup's memory limit)" in msg and "\n" not in msg


def test_export_without_the_memory_stops_in_one_line_and_writes_nothing(
    tiny_model_dir, tmp_path, monkeypatch
):
    """`medkit export --calib` of a layer-by-layer family plans first: with too little free (a cgroup's
    limit, say) it exits nonzero with one line naming need and free, and leaves no file in the folder."""
    pytest.importorskip("torch")
    from click.testing import CliRunner

    from medkit.cli import cli

    model = tiny_model_dir("llama", hidden_size=256, intermediate_size=512)
    calib = tmp_path / "calib.jsonl"
    calib.write_text('{"text": "Fever and cough for three days."}\n{"text": "A rash after a new drug."}\n')
    monkeypatch.setattr(memplan, "available", lambda: (64 * 2**20, "the cgroup's memory limit"))
    monkeypatch.setattr(memplan, "_rss", lambda: GiB)
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["export", str(model), "--gguf", "q4_k_m", "--calib", str(calib),
                                   "--out", str(out), "--no-verify", "--no-modelfile"])  # fmt: skip
    assert res.exit_code != 0 and isinstance(res.exception, ConvertError), res.output
    line = res.exception.one_line()
    assert "needs ~" in line and "0.1 GiB is free (the cgroup's memory limit)" in line and "\n" not in line
    assert (sorted(p.name for p in out.iterdir()) if out.exists() else []) == []  # no partial, no Gram store
