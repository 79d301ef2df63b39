"""`medkit serve` over loopback: /v1/models, chat completions (plain and SSE), adapters per request, API key."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

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


@pytest.fixture(scope="module")
def server(smollm2_gguf, patient_lora):
    port = _free_port()
    cmd = [sys.executable, "-m", "medkit", "serve", str(smollm2_gguf), "--port", str(port), "--api-key", KEY]
    cmd += [
        "--adapter",
        f"patient={patient_lora}",
        "--ctx",
        "512",
        "--threads",
        str(THREADS),
        "--gpu-layers",
        "0",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(_request(base + "/v1/models"), timeout=2) as r:
                models = json.load(r)
            break
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"server did not start: {proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.3)
    yield base, models
    proc.terminate()
    proc.wait(10)


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
