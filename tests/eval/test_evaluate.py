"""End-to-end `medkit eval` on a tiny real run directory, and the bad-input cases."""

from __future__ import annotations

import json

import pytest

from medkit.errors import EvalError
from medkit.eval.verb import evaluate_run
from tests.eval.conftest import train_adapter, write_recipe

OUTPUTS = ("eval.md", "eval.json", "eval.png")


def test_eval_run_writes_table(tiny_run):
    report = evaluate_run(tiny_run)
    table = report["table"]
    assert list(table) == ["base", "tuned", "f32"]
    assert report["task"] == "icd10" and report["n"] == 6 and report["split"] == "test"
    base, tuned, gguf = table["base"], table["tuned"], table["f32"]
    # the trained adapter learned the codes: lower loss on held-out questions
    assert tuned["loss"] < base["loss"] - 0.5
    # llama.cpp on the f32 GGUF of the base scores the same token ids as transformers
    assert gguf["loss"] == pytest.approx(base["loss"], rel=1e-3)
    assert gguf["ppl"] == pytest.approx(base["ppl"], rel=1e-2)
    for row in table.values():
        assert set(row) == set(report["metrics"])
        assert 0.0 <= row["stop_rate"] <= 1.0 and 0.0 <= row["exact"] <= 1.0
    assert tuned["category_match"] >= base["category_match"]
    # files: json equals what was returned; markdown has the table and the qualitative prompts; png is a png
    assert json.loads((tiny_run / "eval.json").read_text())["table"] == json.loads(json.dumps(table))
    md = (tiny_run / "eval.md").read_text()
    assert "| metric | base | tuned | f32 |" in md and "Write one sentence about the sea." in md
    assert (tiny_run / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tiny_run / "run.json").read_text())["eval"]["task"] == "icd10"
    assert report["models"]["tuned"]["samples"][0]["reference"]
    assert len(report["models"]["f32"]["qualitative"]) == 2
    # the f32 export here is of the base, so it keeps none of the fine-tuning gain
    assert report["gain_kept"]["f32"]["loss"] == pytest.approx(0.0, abs=0.01)
    assert "f32 keeps 0% of the fine-tuning gain" in md
    # with its paired bootstrap interval (the export is the base: its loss share stays near 0 in every draw)
    lo, hi = report["gain_interval"]["models"]["f32"]["loss"]
    assert -0.05 < lo <= report["gain_kept"]["f32"]["loss"] <= hi < 0.05
    assert "95% interval" in md and "paired bootstrap over the 6 examples" in md
    # every answer and each example's likelihood are in eval.json, and add up to the table
    rows = json.loads((tiny_run / "eval.json").read_text())["models"]["tuned"]["rows"]
    assert len(rows["answers"]) == len(rows["nll"]) == 6
    assert sum(rows["nll"]) / sum(rows["tokens"]) == pytest.approx(tuned["loss"], rel=1e-9)
    # a float GGUF was not quantized: no calibration to show, so no calibration row
    assert report["models"]["f32"]["calibration"] is None and "| calibration |" not in md


def test_gain_kept_per_metric():
    from medkit.eval.report import gain_kept

    table = {
        "base": {"loss": 2.0, "ppl": 7.4, "bleu": 5.0, "stop_rate": 0.5, "exact": 0.1},
        "tuned": {"loss": 1.5, "ppl": 4.5, "bleu": 13.0, "stop_rate": 0.5, "exact": 0.3},
        "q4_0": {"loss": 1.6, "ppl": 5.0, "bleu": 3.0, "stop_rate": 0.9, "exact": 0.4},
    }
    # loss: 0.4 of 0.5 kept; bleu fell below the base; stop_rate and ppl are not gains to keep
    assert gain_kept(table) == {"q4_0": {"loss": 0.8, "bleu": -0.25, "exact": 1.5}}
    assert gain_kept({"base": table["base"], "q4_0": table["q4_0"]}) == {}


def test_eval_qa_metrics_without_base(tiny_run):
    report = evaluate_run(tiny_run, ggufs=[], against="none", n=3, overrides=["eval.task=qa"], write=False)
    assert list(report["table"]) == ["tuned"]
    row = report["table"]["tuned"]
    assert {"rouge1", "rouge2", "rougeL", "bleu", "loss", "ppl"} <= set(row)
    assert 0.0 <= row["rouge1"] <= 1.0 and 0.0 <= row["bleu"] <= 100.0
    assert not any((tiny_run / f).exists() for f in OUTPUTS)


def _nothing_written(run) -> bool:
    return not any((run / f).exists() for f in OUTPUTS) and not any(run.glob(".*partial"))


def test_missing_split(tiny_run):
    with pytest.raises(EvalError, match="split 'dev' does not exist"):
        evaluate_run(tiny_run, split="dev")
    assert _nothing_written(tiny_run)


def test_zero_examples(tiny_run):
    with pytest.raises(EvalError, match="zero examples"):
        evaluate_run(tiny_run, overrides=["data.split_ratios=[0.8, 0.2, 0.0]"])
    assert _nothing_written(tiny_run)


def test_gguf_of_another_base(tiny_run, eval_assets):
    with pytest.raises(EvalError, match="does not match the run's base: n_embd 32 != 64"):
        evaluate_run(tiny_run, ggufs=[eval_assets["other_gguf"]])
    assert _nothing_written(tiny_run)


def test_metric_that_does_not_fit(tiny_run):
    with pytest.raises(EvalError, match="'rouge1' does not fit task 'icd10'"):
        evaluate_run(tiny_run, metrics=["rouge1"])
    assert _nothing_written(tiny_run)


def test_task_that_does_not_fit_the_data(tiny_run):
    with pytest.raises(EvalError, match="task 'numeric' does not fit this data"):
        evaluate_run(tiny_run, overrides=["eval.task=numeric"])
    assert _nothing_written(tiny_run)


def test_cli_one_line_error_and_success(tiny_run, capsys, monkeypatch):
    from medkit.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["eval", str(tiny_run), "--split", "dev"])
    assert exc.value.code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: split 'dev' does not exist") and "\n" not in err
    assert _nothing_written(tiny_run)

    monkeypatch.setenv("MEDKIT_RUNS", str(tiny_run.parent))  # no RUN argument: the latest run
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--n", "2", "--no-gguf", "--set", "eval.max_new_tokens=3"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "tuned" in out and "loss" in out
    assert json.loads((tiny_run / "eval.json").read_text())["n"] == 2


def test_cli_gguf_target(tiny_run, eval_assets, capsys):
    from medkit.cli import main

    gguf = tiny_run / "export" / "tiny-f32.gguf"
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(gguf), "--n", "2", "--against", "none", "--no-tuned"])
    assert exc.value.code == 0
    assert list(json.loads((tiny_run / "eval.json").read_text())["table"]) == ["f32"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(eval_assets["other_gguf"])])
    assert exc.value.code != 0
    assert "is not inside a run's export/ folder" in capsys.readouterr().err


def test_run_ggufs_highest_precision_first(tmp_path):
    """Eval columns (and the chat picker) list a run's exports from f32 down to q4_0."""
    from medkit.runs import RunDir

    export = tmp_path / "run" / "export"
    export.mkdir(parents=True)
    for name in ("m-q4_0", "m-adapter-patient", "m-q8_0", "m-f16", "m-q4_k_m"):
        (export / f"{name}.gguf").write_bytes(b"GGUF")
    assert [p.stem for p in RunDir(tmp_path / "run").ggufs()] == [
        "m-f16", "m-q8_0", "m-q4_k_m", "m-q4_0", "m-adapter-patient"
    ]  # fmt: skip


def test_stale_gguf_is_a_yellow_note_not_an_error(tiny_run, eval_assets, capsys):
    """A GGUF that records another adapter than the run's adapter/ is still scored, with one note line."""
    from medkit.cli import main
    from medkit.convert.gguf.writer import write_gguf
    from medkit.provenance import ADAPTER_KEY, adapter_hash

    gguf = tiny_run / "export" / "tiny-f16.gguf"
    write_gguf(eval_assets["base"], gguf, "f16", metadata={ADAPTER_KEY: adapter_hash(tiny_run / "adapter")})
    args = ["eval", str(gguf), "--n", "2", "--against", "none", "--no-tuned"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 0 and "note:" not in capsys.readouterr().out  # made from this adapter

    config = tiny_run / "adapter" / "adapter_config.json"
    config.write_text(config.read_text() + "\n")  # the adapter changed after the export (retrained)
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert exc.value.code == 0 and len(notes) == 1, out
    assert "tiny-f16.gguf" in notes[0] and "old weights" in notes[0]
    report = json.loads((tiny_run / "eval.json").read_text())
    assert "old weights" in report["models"]["f16"]["stale"]
    assert "(stale)" in (tiny_run / "eval.md").read_text()


# -- calibration: which GGUF was quantized with an importance matrix ------------------------------------
def _names(calibrations: dict[str, str | None], run: str = "x") -> list[str]:
    from pathlib import Path

    from medkit.eval.verb import _gguf_names
    from medkit.runs import RunDir

    paths = [Path(p) for p in calibrations]
    return _gguf_names(RunDir(Path("runs") / run), paths, list(calibrations.values()))


def test_gguf_names_tell_plain_from_calibrated():
    pair = {"export/x-q4_0.gguf": "imatrix", "export-plain/x-q4_0.gguf": "plain"}
    assert _names(pair) == ["q4_0", "q4_0-plain"]
    assert _names(dict(reversed(pair.items()))) == ["q4_0-plain", "q4_0"]  # whichever comes first
    mixes = {"a/x-auto.gguf": "plain mix", "b/x-auto.gguf": "imatrix mix"}
    assert _names(mixes) == ["auto-plain", "auto"]
    # alone, a plain GGUF keeps its name (the calibration row says "plain")
    assert _names({"export/x-q4_0.gguf": "plain", "export/x-f16.gguf": None}) == ["q4_0", "f16"]
    # numbers only for what still collides: the same calibration twice, a float pair, a reserved name
    assert _names({"a/x-q4_0.gguf": "plain", "b/x-q4_0.gguf": "plain"}) == ["q4_0", "q4_0-2"]
    assert _names({"a/x-f16.gguf": None, "b/x-f16.gguf": None}) == ["f16", "f16-2"]
    three = {"a/x-q4_0.gguf": "plain", "b/x-q4_0.gguf": "imatrix", "c/x-q4_0.gguf": "plain"}
    assert _names(three) == ["q4_0-plain", "q4_0", "q4_0-plain-2"]
    assert _names({"a/base.gguf": "plain", "b/x-tuned.gguf": None}) == ["base-2", "tuned-2"]
    # GPTQ codes rank above the imatrix alone: the imatrix-only twin is named for it
    gptq = {"a/x-q4_0.gguf": "plain", "b/x-q4_0.gguf": "imatrix", "c/x-q4_0.gguf": "imatrix+gptq"}
    assert _names(gptq) == ["q4_0-plain", "q4_0-imatrix", "q4_0"]
    assert _names({"a/x-auto.gguf": "imatrix+gptq mix", "b/x-auto.gguf": "imatrix mix"}) == [
        "auto",
        "auto-imatrix",
    ]


def _report(calibrations: dict[str, str | None]) -> dict:
    """A report as build_report makes it: base, tuned and GGUF columns, loss and exact match."""
    from medkit.eval.report import gain_kept

    table = {"base": {"loss": 2.0, "exact": 0.1}, "tuned": {"loss": 1.0, "exact": 0.5}}
    values = iter([(1.2, 0.4), (1.5, 0.2), (1.9, 0.1)])
    models = {k: {"kind": "hf", "samples": [], "qualitative": []} for k in table}
    for name, cal in calibrations.items():
        loss, exact = next(values)
        table[name] = {"loss": loss, "exact": exact}
        models[name] = {"kind": "gguf", "calibration": cal, "samples": [], "qualitative": []}
    return {
        "recipe": "x", "split": "test", "n": 4, "task": "icd10", "base": "b", "metrics": ["loss", "exact"],
        "generation": {"greedy": True, "temperature": 0, "max_new_tokens": 4, "seed": 0},
        "table": table, "gain_kept": gain_kept(table), "models": models,
    }  # fmt: skip


def test_report_has_a_calibration_row_and_names_it_in_the_gain_lines():
    from medkit.eval.report import render_markdown

    md = render_markdown(_report({"q4_0": "imatrix", "q4_0-plain": "plain", "f16": None})).splitlines()
    header = md.index("| metric | base | tuned | q4_0 | q4_0-plain | f16 |")
    assert md[header + 2] == "| calibration | — | — | imatrix | plain | — |"  # under the header
    assert md[header + 3].startswith("| loss")  # then the metrics
    assert "- q4_0 (imatrix) keeps 78% of the fine-tuning gain (median; loss 80%, exact 75%)" in md
    assert "- q4_0-plain (plain) keeps 38% of the fine-tuning gain (median; loss 50%, exact 25%)" in md
    assert "- f16 keeps 5% of the fine-tuning gain (median; loss 10%, exact 0%)" in md  # float: no label


def test_report_without_a_quantized_gguf_has_no_calibration_row():
    from medkit.eval.report import render_markdown

    md = render_markdown(_report({"f16": None}))
    assert "| calibration |" not in md and "- f16 keeps" in md


def test_rich_table_has_the_calibration_row():
    from rich.console import Console

    from medkit.eval.report import print_table

    console = Console(width=160, record=True)
    print_table(_report({"auto": "imatrix mix", "q4_0": "plain"}), console)
    out = console.export_text()
    row = next(line for line in out.splitlines() if "calibration" in line)
    assert [cell.strip() for cell in row.split("│")[2:-1]] == ["—", "—", "imatrix mix", "plain"]
    assert out.index("calibration") < out.index("loss")
    assert "auto (imatrix mix) keeps 78%" in out and "q4_0 (plain) keeps 38%" in out


def test_eval_plain_and_calibrated_gguf_of_one_type(tiny_run):
    """`medkit eval RUN --gguf export/x-q8_0.gguf --gguf export-plain/x-q8_0.gguf`: two columns, told apart."""
    from medkit.convert.quant.quantize import quantize

    f32 = tiny_run / "export" / "tiny-f32.gguf"
    calibrated, plain = tiny_run / "export" / "tiny-q8_0.gguf", tiny_run / "export-plain" / "tiny-q8_0.gguf"
    plain.parent.mkdir()
    # the header is what eval reads: medkit export writes this key (with an importance matrix: True)
    quantize(f32, calibrated, "q8_0", threads=1, metadata={"medkit.imatrix": True})
    quantize(f32, plain, "q8_0", threads=1, metadata={"medkit.imatrix": False})
    report = evaluate_run(tiny_run, n=2, ggufs=[plain, calibrated], overrides=["eval.max_new_tokens=3"])
    assert list(report["table"]) == ["base", "tuned", "q8_0-plain", "q8_0"]
    assert report["models"]["q8_0"]["calibration"] == "imatrix"
    assert report["models"]["q8_0-plain"]["calibration"] == "plain"
    saved = json.loads((tiny_run / "eval.json").read_text())["models"]
    assert saved["q8_0-plain"]["calibration"] == "plain"
    md = (tiny_run / "eval.md").read_text()
    assert "| calibration | — | — | plain | imatrix |" in md
    assert "q8_0 (imatrix) keeps" in md and "q8_0-plain (plain) keeps" in md


def test_against_another_run_scores_its_adapter_with_the_paired_difference(tiny_run, eval_assets, tmp_path):
    import shutil

    # the run this one "started from": the same base and data, a shorter training (a different adapter)
    start = tmp_path / "runs" / "start"
    write_recipe(start, eval_assets["base"], eval_assets["data"])
    train_adapter(start, eval_assets["base"], steps=3)
    report = evaluate_run(tiny_run, against=str(start), ggufs=[])
    assert list(report["table"]) == ["tuned", "start"]  # no base column: the comparison is run vs run
    assert report["models"]["start"]["source"] == str(start / "adapter")
    assert report["table"]["start"]["loss"] != pytest.approx(report["table"]["tuned"]["loss"], rel=1e-3)
    diff = report["difference"]["pairs"]["tuned - start"]
    for name in ("loss", "exact"):
        d = diff[name]
        assert d["value"] == pytest.approx(
            report["table"]["tuned"][name] - report["table"]["start"][name], abs=1e-4
        )
        assert d["interval"][0] <= d["value"] <= d["interval"][1]
    # the tuned column is the run's own adapter still: the same as without --against
    alone = evaluate_run(tiny_run, against="none", ggufs=[], write=False)
    assert alone["table"]["tuned"] == report["table"]["tuned"]
    md = (tiny_run / "eval.md").read_text()
    assert "| metric | tuned | start |" in md and "tuned - start: " in md and "95% interval" in md
    # a run of another base, the run itself, a missing run: one error each, nothing written
    shutil.rmtree(start / "adapter")
    for against, match in ((str(start), "no PEFT adapter"), (str(tiny_run), "the run being evaluated"),
                           (str(tmp_path / "nope"), "--against: no run directory")):  # fmt: skip
        with pytest.raises(EvalError, match=match):
            evaluate_run(tiny_run, against=against, ggufs=[])
    other = tmp_path / "runs" / "other"
    write_recipe(other, eval_assets["root"] / "other", eval_assets["data"])
    (other / "adapter").mkdir()
    (other / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(EvalError, match="was trained on base"):
        evaluate_run(tiny_run, against=str(other), ggufs=[])
