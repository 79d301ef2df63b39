"""`medkit eval` results: the report dict, and eval.md / eval.png / the rich table / the files on disk.

Matplotlib and rich are imported inside the functions that need them.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

from medkit.eval.gain import (
    DRAWS,
    LEVEL,
    MEDIAN,
    difference_intervals,
    gain_intervals,
    gain_kept,
    median_kept,
    paired_rates,
)
from medkit.eval.metrics import metric
from medkit.eval.score import EvalSet, scored_of
from medkit.formats.files import atomic_path
from medkit.runs import RunDir

CALIBRATION_ROW = "calibration"  # the table row under the header: how each GGUF was quantized


def build_report(
    run: RunDir, recipe, split: str, evset: EvalSet, results: dict, against: list[str] | tuple[str, ...] = ()
) -> dict[str, Any]:
    """The report dict; ``against`` names the columns of other runs (`--against RUN`): each gets the paired
    bootstrap interval of tuned minus it (and of the constrained columns' difference, where scored)."""
    from medkit.eval.constrained import SUFFIX

    table = {name: r["metrics"] for name, r in results.items()}
    scored = {name: scored_of(evset, r["rows"]) for name, r in results.items() if "rows" in r}
    pairs = [p for name in against for p in (("tuned", name), ("tuned" + SUFFIX, name + SUFFIX))]
    return {
        "run": str(run.path),
        "recipe": recipe.name,
        "base": recipe.model.base,
        "split": split,
        "n": len(evset.conversations),
        "task": evset.task,
        "metrics": list(evset.metrics),
        "generation": {
            "max_new_tokens": evset.max_new_tokens,
            "temperature": evset.temperature,
            "seed": evset.seed,
            "greedy": evset.temperature == 0,
        },
        "sources": {name: r["source"] for name, r in results.items()},
        "table": table,
        "gain_kept": gain_kept(table),
        "gain_interval": {"draws": DRAWS, "level": LEVEL, "models": gain_intervals(scored, evset.metrics)},
        # each model unconstrained ("free") and under the constraint ("other": its '+icd10' column)
        "constrained": {
            "spec": evset.constrain
            or next((r.get("constrain") for r in results.values() if r.get("constrain")), None),
            "draws": DRAWS,
            "level": LEVEL,
            "models": paired_rates(
                scored, [(k, k + SUFFIX) for k in results if not k.endswith(SUFFIX)], evset.metrics
            ),
        },
        "difference": {
            "draws": DRAWS,
            "level": LEVEL,
            "pairs": difference_intervals(scored, pairs, evset.metrics) if pairs else {},
        },
        "models": results,
    }


def _gain_lines(report: dict[str, Any]) -> list[str]:
    """'q4_0 (imatrix) keeps 62% of the fine-tuning gain (median, 95% interval 48-75%; loss 41%, bleu 62%)'
    lines (the median over the improved metrics, medkit.eval.gain's bootstrap interval where there is one;
    a float GGUF has no calibration to name)."""
    lines = []
    iv = report.get("gain_interval") or {}
    for name, kept in (report.get("gain_kept") or {}).items():
        if kept:
            median = median_kept(kept)
            parts = ", ".join(f"{m} {v:.0%}" for m, v in kept.items())
            cal = _calibration(report, name)
            label = f"{name} ({cal})" if cal else name
            span = (iv.get("models") or {}).get(name, {}).get(MEDIAN)
            sure = f", {iv.get('level', 0):.0%} interval {span[0]:.0%} to {span[1]:.0%}" if span else ""
            lines.append(f"{label} keeps {median:.0%} of the fine-tuning gain (median{sure}; {parts})")
    return lines


def _difference_lines(report: dict[str, Any]) -> list[str]:
    """'tuned - smollm2_icd10_demo: exact +0.037 (95% interval -0.019 to +0.093), ...' per compared pair."""
    diff = report.get("difference") or {}
    lines = []
    for pair, per in (diff.get("pairs") or {}).items():
        parts = [
            f"{m} {d['value']:+.3f} ({diff['level']:.0%} interval {d['interval'][0]:+.3f} to {d['interval'][1]:+.3f})"
            for m, d in per.items()
            if metric(m).gain  # not ppl: exp(loss), the loss says the same on a linear scale
        ]
        if parts:
            lines.append(f"{pair}: " + ", ".join(parts))
    return lines


def _interval_note(report: dict[str, Any]) -> str:
    iv = report["gain_interval"]
    return (
        f"Intervals: a paired bootstrap over the {report['n']} examples ({iv['draws']} draws, the middle "
        f"{iv['level']:.0%}); a target inside one is not settled by this eval set."
    )


def _calibration(report: dict[str, Any], name: str) -> str | None:
    """How model ``name`` was quantized ("imatrix", "plain", ...; medkit.formats.gguf_header.calibration);
    None for base, tuned and a float GGUF."""
    return (report.get("models", {}).get(name) or {}).get("calibration")


def _calibration_cells(report: dict[str, Any]) -> list[str] | None:
    """The table's calibration row, one cell per column ("—" where nothing was quantized); None when no
    column is a quantized GGUF (the row would say nothing)."""
    cals = [_calibration(report, name) for name in report["table"]]
    return [c or "—" for c in cals] if any(cals) else None


def _fmt(value: Any, name: str) -> str:
    return metric(name).show(value)


def _best(table: dict[str, dict[str, Any]], name: str) -> str | None:
    """The model with the strictly best value of metric ``name`` (None on a tie or with one model)."""
    vals = {k: v[name] for k, v in table.items() if v.get(name) is not None}
    if len(vals) < 2:
        return None
    ordered = sorted(vals, key=vals.__getitem__, reverse=metric(name).higher_is_better)
    return ordered[0] if _fmt(vals[ordered[0]], name) != _fmt(vals[ordered[1]], name) else None


def render_markdown(report: dict[str, Any]) -> str:
    """eval.md: the table, a few generations per model, and the qualitative prompts side by side."""
    metrics, table = report["metrics"], report["table"]
    arrows = [metric(m).label for m in metrics]
    lines = [
        f"# Eval: {report['recipe']}",
        "",
        f"Split `{report['split']}`, {report['n']} examples, task `{report['task']}`, base `{report['base']}`, "
        f"{'greedy' if report['generation']['greedy'] else 'temperature ' + str(report['generation']['temperature'])}, "
        f"max {report['generation']['max_new_tokens']} new tokens.",
        "",
        "| metric | " + " | ".join(table) + " |",
        "|---|" + "---:|" * len(table),
    ]
    cals = _calibration_cells(report)
    if cals:
        lines.append(f"| {CALIBRATION_ROW} | " + " | ".join(cals) + " |")
    for m, label in zip(metrics, arrows, strict=True):
        best = _best(table, m)
        cells = [
            (f"**{_fmt(row[m], m)}**" if best == name else _fmt(row[m], m)) for name, row in table.items()
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    gains = _gain_lines(report)
    if gains:
        lines += ["", "Share of the base -> tuned gain kept by each export:", ""] + [f"- {g}" for g in gains]
        if (report.get("gain_interval") or {}).get("models"):
            lines += ["", _interval_note(report)]
    lines += _constrained_lines(report)
    diffs = _difference_lines(report)
    if diffs:
        lines += ["", "Difference from the compared run (paired bootstrap over the same examples):", ""]
        lines += [f"- {d}" for d in diffs] + ["", _interval_note(report)]
    stale = [f"- `{name}`: {res['stale']}" for name, res in report["models"].items() if res.get("stale")]
    if stale:
        lines += ["", "Exports made from another adapter than the run's (stale):", ""] + stale
    lines += ["", "## Sample generations", ""]
    for name, res in report["models"].items():
        lines.append(f"### {name}")
        for s in res["samples"]:
            lines += [
                f"- **Q:** {_one(s['prompt'])}",
                f"  - reference: {_one(s['reference'])}",
                f"  - answer: {_one(s['answer'])}",
            ]
        lines.append("")
    qual = _qualitative(report)
    if qual:
        names = list(report["models"])
        lines += [
            "## Qualitative prompts",
            "",
            "| domain | prompt | " + " | ".join(names) + " |",
            "|---" * (len(names) + 2) + "|",
        ]
        for (domain, prompt), answers in qual.items():
            lines.append(
                f"| {domain} | {_one(prompt)} | " + " | ".join(_one(answers.get(k, "")) for k in names) + " |"
            )
    return "\n".join(lines) + "\n"


def _constrained_lines(report: dict[str, Any]) -> list[str]:
    """eval.md's comparison of each model unconstrained and constrained: each rate with its interval, and
    the paired interval of the difference (constrained - unconstrained)."""
    block = report.get("constrained") or {}
    models = block.get("models") or {}
    if not models:
        return []
    rates = list(next(iter(models.values())))
    head = ["model"] + [f"{m} {side}" for m in rates for side in ("free", f"+{block['spec']}", "difference")]
    lines = ["", f"## Unconstrained vs constrained to `{block['spec']}`", ""]
    lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, per in models.items():
        cells = [
            _span(per[m][side], signed=side == "difference")
            for m in rates
            for side in ("free", "other", "difference")
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Each cell: the share over the {report['n']} answers and its {block['level']:.0%} interval (a paired "
        f"bootstrap, {block['draws']} draws, the same draw for both sides); difference: constrained - free.",
    ]
    return lines


def _span(cell: list[float], signed: bool = False) -> str:
    """[value, lo, hi] -> '0.833 (0.722-0.926)'; signed: '+0.019 (-0.019 to +0.056)'."""
    value, lo, hi = cell
    if signed:
        return f"{value:+.3f} ({lo:+.3f} to {hi:+.3f})"
    return f"{value:.3f} ({lo:.3f}-{hi:.3f})"


def _one(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _qualitative(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, str]]:
    out: dict[tuple[str, str], dict[str, str]] = {}
    for name, res in report["models"].items():
        for q in res["qualitative"]:
            out.setdefault((q["domain"], q["prompt"]), {})[name] = q["answer"]
    return out


def render_png(report: dict[str, Any]) -> bytes:
    """eval.png: one bar panel per metric, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics, table = report["metrics"], report["table"]
    names = list(table)
    cols = min(4, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, name in zip(axes.flat, metrics, strict=False):
        m = metric(name)
        vals = [table[k][name] for k in names]
        finite = [v if v is not None and math.isfinite(v) else 0.0 for v in vals]
        ax.bar(range(len(names)), finite, color=[colors[i % len(colors)] for i in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        top = max(finite, default=0.0)
        ax.set_ylim(0, 1.1 if m.rate else (top * 1.15 or 1.0))
        ax.set_title(f"{name} ({m.direction})", fontsize=9)
        for i, v in enumerate(vals):
            ax.text(i, finite[i], m.show(v), ha="center", va="bottom", fontsize=7)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.suptitle(f"{report['recipe']}: {report['split']} split, n={report['n']}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def print_table(report: dict[str, Any], console: Any = None) -> None:
    """The comparison table (and the qualitative answers) with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    metrics, table = report["metrics"], report["table"]
    t = Table(title=f"{report['recipe']} · {report['split']} · n={report['n']} · task {report['task']}")
    t.add_column("metric", style="bold")
    for name in table:
        t.add_column(name, justify="right")
    cals = _calibration_cells(report)
    if cals:
        t.add_row(CALIBRATION_ROW, *cals, style="dim", end_section=True)
    for m in metrics:
        best = _best(table, m)
        cells = [
            (f"[green]{_fmt(row[m], m)}[/]" if best == name else _fmt(row[m], m))
            for name, row in table.items()
        ]
        t.add_row(metric(m).label, *cells)
    console.print(t)
    for line in _gain_lines(report) + _difference_lines(report):
        console.print(line)
    qual = _qualitative(report)
    if qual:
        q = Table(title="qualitative prompts", show_lines=True)
        q.add_column("prompt", max_width=30)
        for name in report["models"]:
            q.add_column(name, max_width=40)
        for (domain, prompt), answers in qual.items():
            q.add_row(
                f"[dim]{domain}[/]\n{prompt}", *[_one(answers.get(k, ""), 200) for k in report["models"]]
            )
        console.print(q)


def write_outputs(run: RunDir, report: dict[str, Any], folder: Path | None = None) -> None:
    """Render everything first, then move each file into place atomically: into the run directory (and
    its manifest), or into ``folder`` alone."""
    payload = {
        "eval.json": (json.dumps(report, indent=2, default=str) + "\n").encode(),
        "eval.md": render_markdown(report).encode(),
        "eval.png": render_png(report),
    }
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    for name, data in payload.items():
        with atomic_path((folder or run.path) / name) as tmp:
            tmp.write_bytes(data)
    if folder is not None:
        return
    run.update_manifest(
        eval={"split": report["split"], "n": report["n"], "task": report["task"], "table": report["table"]}
    )
