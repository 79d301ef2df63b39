"""The README's ICD-10 table: each model unconstrained and constrained, greedy and sampled, from eval.json files.

    python docs/icd10_table.py runs/smollm2_icd10_demo/eval.json runs/smollm2_icd10_demo/eval-t1/eval.json

Each argument is one `medkit eval` report of an icd10 task (its 'constrained' block: medkit.eval.gain's
paired_rates); the rows are its models in table order, one row per model and report. Every number is
read from the reports; nothing is computed here but the layout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RATES = (
    ("valid_rate", "valid code"),
    ("exact", "exact"),
    ("category_match", "category"),
    ("chapter_match", "chapter"),
)


def cell(values: list[float], signed: bool = False) -> str:
    value, lo, hi = values
    return f"{value:+.3f} ({lo:+.3f} to {hi:+.3f})" if signed else f"{value:.3f} ({lo:.3f}-{hi:.3f})"


def decoding(report: dict) -> str:
    gen = report["generation"]
    return "greedy" if gen["greedy"] else f"T={gen['temperature']:g} (seed {gen['seed']})"


def table(reports: list[dict]) -> list[str]:
    spec = reports[0]["constrained"]["spec"]
    head = ["model", "decoding"]
    for _, label in RATES:
        head += [f"{label}", f"{label} +{spec}"] + (["exact: constrained - free"] if label == "exact" else [])
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    models = [m for m in reports[0]["constrained"]["models"]]
    for name in models:
        for report in reports:
            per = report["constrained"]["models"].get(name)
            if per is None:
                continue
            cells = [name, decoding(report)]
            for key, label in RATES:
                cells += [cell(per[key]["free"]), cell(per[key]["other"])]
                if label == "exact":
                    cells.append(cell(per[key]["difference"], signed=True))
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    reports = [json.loads(Path(p).read_text()) for p in sys.argv[1:]]
    for path, report in zip(sys.argv[1:], reports, strict=True):
        if not (report.get("constrained") or {}).get("models"):
            sys.exit(f"error: {path}: no constrained columns (an icd10 task with eval.constrain)")
    first = reports[0]
    print(f"`{first['recipe']}`, split `{first['split']}`, {first['n']} examples; each cell the share and its "
          f"{first['constrained']['level']:.0%} paired bootstrap interval ({first['constrained']['draws']} draws).")  # fmt: skip
    print()
    print("\n".join(table(reports)))


if __name__ == "__main__":
    main()
