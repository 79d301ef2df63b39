"""`make bench` (training part) runs on CPU with its tiny shape and reports both sides and the ratios."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_train_bench_runs_on_cpu(monkeypatch, capsys):
    from benchmarks import train_bench

    monkeypatch.setenv("MEDKIT_BENCH_STEPS", "1")
    monkeypatch.setenv("MEDKIT_BENCH_EXTRA", "0")  # rows (d), (e): compiling alone takes a minute
    monkeypatch.delenv("MEDKIT_BENCH_SHAPE", raising=False)
    result = train_bench.main()
    out = capsys.readouterr().out
    assert result["device"] == "cpu" and result["shape"] == "tiny"
    for side in ("seed_recipe", "medkit"):
        assert result[side]["tokens_per_s"] > 0 and result[side]["peak_gib"] >= 0
    assert result["ratio"]["speed"] == pytest.approx(
        result["medkit"]["tokens_per_s"] / result["seed_recipe"]["tokens_per_s"]
    )
    assert "medkit / seed:" in out and json.loads(out.strip().splitlines()[-1])["shape"] == "tiny"
    for side in ("seed_recipe", "medkit", "medkit_seed_settings"):  # MFU on every row, against the peak
        assert result[side]["mfu"] == pytest.approx(
            result[side]["tflops"] * 1e12 / result["peak"]["flops_per_s"]
        )
        assert result[side]["mfu"] > 0 and result[side]["flops_per_token"] > 0
    assert "(c) medkit at the seed's settings" in out and "same work (c) / seed:" in out


def test_train_bench_rejects_an_unknown_shape(monkeypatch):
    from benchmarks import train_bench

    monkeypatch.setenv("MEDKIT_BENCH_SHAPE", "gpt5")
    with pytest.raises(SystemExit, match="not one of tinyllama, tinyllama-2l, tiny"):
        train_bench.main()
