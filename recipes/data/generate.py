"""Regenerate the demo data sets in recipes/data/ from the hand-written tables beside this file.

    python recipes/data/generate.py           # rewrite medqa_demo.jsonl, icd10_demo.jsonl, numeric_demo.jsonl
    python recipes/data/generate.py --check   # exit 1 if a checked-in file differs from what would be written

Deterministic: every random choice comes from random.Random(0), one generator per file. Every ICD-10-CM
code is checked against the CMS code set shipped in `simple-icd-10-cm` (valid, billable leaf, title).
Demo data for the pipeline, not medical advice.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _facts import CONDITIONS, GENERAL  # noqa: E402
from _icd_facts import ICD_TEMPLATES  # noqa: E402

PER_CODE = 8
ASPECTS = (
    "what",
    "symptoms",
    "causes",
    "risk",
    "complications",
    "diagnosis",
    "treatment",
    "prevention",
    "doctor",
)
QUESTIONS: dict[str, list[str]] = {
    "what": [
        "What {is} {q}?",
        "Can you explain what {q} {is}?",
        "What should I know about {q}?",
        "What does it mean to have {q}?",
    ],
    "symptoms": [
        "What are the symptoms of {q}?",
        "What are the signs of {q}?",
        "What are the warning signs of {q}?",
        "Which symptoms point to {q}?",
    ],
    "causes": [
        "What causes {q}?",
        "What are the causes of {q}?",
        "Why do people get {q}?",
        "What leads to {q}?",
    ],
    "risk": [
        "Who is at risk for {q}?",
        "Who is most likely to get {q}?",
        "What are the risk factors for {q}?",
    ],
    "complications": [
        "What health problems can {q} cause?",
        "What are the complications of {q}?",
    ],
    "diagnosis": [
        "How {is} {q} diagnosed?",
        "What tests are used to diagnose {q}?",
        "How do doctors test for {q}?",
    ],
    "treatment": [
        "How {is} {q} treated?",
        "What are the treatments for {q}?",
        "How do doctors treat {q}?",
        "What can be done for {q}?",
    ],
    "prevention": [
        "How can {q} be prevented?",
        "Can {q} be prevented?",
        "How can I lower my risk of {q}?",
        "How can I avoid getting {q}?",
    ],
    "doctor": [
        "When should I see a doctor about {q}?",
        "When should I seek medical help for {q}?",
        "When {does} {q} need urgent medical attention?",
    ],
}
OPENERS = [
    "What brings you in today?",
    "How can I help you today?",
    "What seems to be the problem?",
    "Good morning, what can I do for you?",
    "Hello, come in. What's going on?",
]
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")


def _check_answer(answer: str, where: str) -> None:
    words = len(answer.split())
    sentences = len(_SENTENCE_END.findall(answer))
    assert 25 <= words <= 90, f"{where}: answer has {words} words (want 25-90)"
    assert 1 <= sentences <= 4, f"{where}: answer has {sentences} sentences (want 1-4)"


def medqa_rows() -> list[dict[str, str]]:
    """Question/answer pairs: one per (condition, aspect) plus the stand-alone GENERAL pairs."""
    rng = random.Random(0)
    rows: list[dict[str, str]] = []
    for name, facts in CONDITIONS.items():
        plural = facts.get("plural") == "yes"
        words = {"q": facts["q"], "is": "are" if plural else "is", "does": "do" if plural else "does"}
        for aspect in ASPECTS:
            if aspect not in facts:
                continue
            question = facts.get(f"ask_{aspect}") or rng.choice(QUESTIONS[aspect]).format(**words)
            question = question[0].upper() + question[1:]
            _check_answer(facts[aspect], f"{name}/{aspect}")
            rows.append({"question": question, "answer": facts[aspect], "topic": facts["topic"]})
    for question, answer, topic in GENERAL:
        _check_answer(answer, question)
        rows.append({"question": question, "answer": answer, "topic": topic})
    seen = [r["question"].lower() for r in rows]
    assert len(seen) == len(set(seen)), "duplicate questions in the medqa set"
    return rows


def _opening(rng: random.Random, complaint: str, age: int, sex: str) -> str:
    soft = complaint if complaint.startswith(("I ", "I'")) else complaint[0].lower() + complaint[1:]
    return rng.choice(
        [
            complaint,
            f"I'm a {age}-year-old {sex}, and {soft}",
            f"I'm {age}. {complaint}",
            f"Hi. {complaint}",
        ]
    )


def _dialogue(rng: random.Random, spec: dict) -> str:
    age = rng.randint(*spec.get("ages", (20, 75)))
    sex = rng.choice(spec.get("sexes", ["man", "woman"]))
    complaint = rng.choice(spec["complaint"]).format(dur=rng.choice(spec["dur"]))
    lines = [f"Doctor: {rng.choice(OPENERS)}", f"Patient: {_opening(rng, complaint, age, sex)}"]
    for question, answer in rng.sample(spec["history"], 2):
        lines += [f"Doctor: {question}", f"Patient: {answer}"]
    closing = rng.choice(spec["exam"])
    if rng.random() < 0.7:
        closing += " " + rng.choice(spec["assess"])
    lines.append(f"Doctor: {closing}")
    return "\n".join(lines)


def icd_rows() -> list[dict[str, str]]:
    """PER_CODE distinct vignettes per code, each labelled with one billable ICD-10-CM code."""
    import simple_icd_10_cm as cm

    rng = random.Random(0)
    rows: list[dict[str, str]] = []
    for code, spec in ICD_TEMPLATES.items():
        assert cm.is_valid_item(code), f"{code}: not an ICD-10-CM code"
        assert cm.is_leaf(code), f"{code}: not billable (has subcodes)"
        title = cm.get_description(code)
        dialogues: list[str] = []
        for _ in range(200):
            text = _dialogue(rng, spec)
            if text not in dialogues:
                dialogues.append(text)
            if len(dialogues) == PER_CODE:
                break
        assert len(dialogues) == PER_CODE, f"{code}: templates too narrow for {PER_CODE} vignettes"
        for text in dialogues:
            assert code not in text, f"{code}: the code leaks into its dialogue"
            rows.append({"dialogue": text, "code": code, "title": title})
    return rows


def _bmi(rng: random.Random) -> tuple[str, str]:
    weight = rng.randint(45, 130)
    height = rng.randint(150, 198) / 100
    question = rng.choice(
        [
            "Patient weighs {w} kg and is {h:.2f} m tall. What is the BMI?",
            "An adult is {h:.2f} m tall and weighs {w} kg. Calculate the body mass index.",
            "Weight {w} kg, height {h:.2f} m. What is the body mass index (kg/m2, one decimal)?",
        ]
    ).format(w=weight, h=height)
    return question, f"{weight / height**2:.1f}"


def _map(rng: random.Random) -> tuple[str, str]:
    systolic = rng.randint(95, 185)
    diastolic = rng.randint(55, min(115, systolic - 25))
    question = rng.choice(
        [
            "Blood pressure is {s}/{d} mmHg. What is the mean arterial pressure?",
            "A patient's blood pressure reads {s} over {d}. Estimate the mean arterial pressure in mmHg.",
            "BP {s}/{d}. Calculate the MAP (rounded to the nearest whole number).",
        ]
    ).format(s=systolic, d=diastolic)
    return question, str(round((systolic + 2 * diastolic) / 3))


def _temperature(rng: random.Random) -> tuple[str, str]:
    fahrenheit = rng.randint(950, 1055) / 10
    question = rng.choice(
        [
            "A patient's temperature is {f:.1f} °F. What is it in degrees Celsius?",
            "Convert a body temperature of {f:.1f} degrees Fahrenheit to Celsius.",
            "Temperature {f:.1f} F. What is this in °C (one decimal)?",
        ]
    ).format(f=fahrenheit)
    return question, f"{(fahrenheit - 32) * 5 / 9:.1f}"


def numeric_rows() -> list[dict[str, str]]:
    """Short clinical arithmetic: BMI (1 decimal), mean arterial pressure (integer), °F -> °C (1 decimal)."""
    rng = random.Random(0)
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    for make, count in ((_bmi, 70), (_map, 60), (_temperature, 50)):
        made = 0
        while made < count:
            question, answer = make(rng)
            if question in seen:
                continue
            seen.add(question)
            rows.append({"question": question, "answer": answer})
            made += 1
    return rows


def render(rows: list[dict[str, str]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def outputs() -> dict[Path, bytes]:
    return {
        HERE / "medqa_demo.jsonl": render(medqa_rows()),
        HERE / "icd10_demo.jsonl": render(icd_rows()),
        HERE / "numeric_demo.jsonl": render(numeric_rows()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the checked-in files only")
    args = parser.parse_args(argv)
    stale = []
    for path, data in outputs().items():
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                stale.append(path.name)
        else:
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
            print(f"wrote {path.name}: {len(data.splitlines())} rows")
    if stale:
        print(f"error: out of date: {', '.join(stale)} (run python recipes/data/generate.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
