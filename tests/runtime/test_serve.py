"""`medkit serve` over loopback: /v1/models, chat completions (plain and SSE), adapters per request, API key."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.runtime.conftest import THREADS

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

KEY = "test-key"
QUESTION = [{"role": "user", "content": "What is anaemia?"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, body: dict | None = None, key: str | None = KEY) -> urllib.request.Request:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    return urllib.request.Request(url, data=data, headers=headers)


@contextlib.contextmanager
def start_server(gguf: Path, *args: str, log: Path, key: str | None = KEY, timeout: float = 180):
    """`medkit serve GGUF ARGS` on a free loopback port; yields (base URL, its /v1/models answer).

    The server's output goes to ``log`` (a pipe nobody reads could fill up and stall it)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "medkit", "serve", str(gguf), "--port", str(port), *args]
    cmd += ["--threads", str(THREADS), "--gpu-layers", "0"] + (["--api-key", key] if key else [])
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with urllib.request.urlopen(_request(base + "/v1/models", key=key), timeout=5) as r:
                    models = json.load(r)
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"server did not start: {log.read_text()}")
                time.sleep(0.3)
        yield base, models
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(smollm2_gguf, patient_lora, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with start_server(smollm2_gguf, "--adapter", f"patient={patient_lora}", "--ctx", "512", log=log) as s:
        yield s


def _chat(base: str, model: str, **extra) -> dict:
    body = {"model": model, "messages": QUESTION, "max_tokens": 8, "temperature": 0, **extra}
    with urllib.request.urlopen(_request(base + "/v1/chat/completions", body), timeout=60) as r:
        return json.load(r)


def test_models_lists_base_and_adapters(server):
    _, models = server
    ids = [m["id"] for m in models["data"]]
    assert ids[:2] == ["base", "patient"] and "SmolLM2-135M-Instruct.Q4_1" in ids


def test_chat_completion_and_adapter_per_request(server):
    base, _ = server
    a = _chat(base, "base")
    text = a["choices"][0]["message"]["content"]
    assert a["object"] == "chat.completion" and text.strip() and a["usage"]["completion_tokens"] <= 8
    b = _chat(base, "patient")["choices"][0]["message"]["content"]
    assert b != text  # the adapter answers differently...
    assert _chat(base, "base")["choices"][0]["message"]["content"] == text  # ...and switching back restores


def test_streaming_chat_completion_is_sse(server):
    base, _ = server
    body = {"model": "base", "messages": QUESTION, "max_tokens": 6, "temperature": 0, "stream": True}
    events = []
    with urllib.request.urlopen(_request(base + "/v1/chat/completions", body), timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.strip() and len(chunks) >= 3


def test_api_key_and_unknown_model_are_refused(server):
    base, _ = server
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(_request(base + "/v1/models", key="wrong"), timeout=10)
    assert exc.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as exc:
        _chat(base, "gpt-4")
    assert exc.value.code == 404 and "available: base, patient" in exc.value.read().decode()


def test_text_completion_reports_the_model_name_not_its_path(server):
    base, _ = server
    body = {"prompt": "Anaemia is", "max_tokens": 4, "temperature": 0}
    with urllib.request.urlopen(_request(base + "/v1/completions", body), timeout=60) as r:
        out = json.load(r)
    assert out["object"] == "text_completion" and out["choices"][0]["text"].strip()
    assert out["model"] == "base" and _chat(base, "patient")["model"] == "patient"
