"""`medkit serve` under concurrency and bad input (issue 13, defects 2 and 10).

Bad requests are a table: add a row (path, body or raw bytes, headers, expected status, a needle of the
message). Every answer must be one line of JSON with no traceback and no server path in it. The real server
runs in a subprocess on the SmolLM2 GGUF with a random LoRA adapter, so two model names ("base", "patient")
share one loaded model.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.runtime.lora_gguf import write_random_lora
from tests.runtime.test_serve import KEY, _request, start_server

pytest.importorskip("llama_cpp")

CHAT = "/v1/chat/completions"
ASK = [{"role": "user", "content": "What is anaemia?"}]
ASK2 = [{"role": "user", "content": "Name one cause of a fever."}]
EOS_IDS = ("0", "2")  # SmolLM2's <|endoftext|> and <|im_end|>: biased away, an answer runs to max_tokens


@pytest.fixture(scope="module")
def server(smollm2_gguf, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-faults")
    lora = write_random_lora(smollm2_gguf, folder / "patient.gguf", seed=1)
    log = folder / "server.log"
    with start_server(smollm2_gguf, "--adapter", f"patient={lora}", "--ctx", "2048", log=log) as (base, _):
        yield base, log


def _post(base: str, path: str, data: bytes, headers: dict[str, str], timeout: float = 120):
    req = urllib.request.Request(base + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _json(body) -> bytes:
    return json.dumps(body).encode()


def _msg(role: str = "user", content="hi") -> bytes:
    return _json({"messages": [{"role": role, "content": content}], "max_tokens": 4})


AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
WRONG_KEY = {"Authorization": "Bearer nope", "Content-Type": "application/json"}
OK = {"messages": ASK, "max_tokens": 4, "temperature": 0}

# id, path, raw body, headers, status, needle in the message, text the answer must not contain
BAD_REQUESTS = [
    ("malformed-json", CHAT, b'{"messages": [', AUTH, 400, "not JSON", None),
    ("empty-body", CHAT, b"", AUTH, 400, "not JSON", None),
    ("not-utf8", CHAT, b'{"messages": "\xff\xfe"}', AUTH, 400, "UTF-8", None),
    ("array-body", CHAT, _json([1, 2]), AUTH, 400, "must be a JSON object, not array", None),
    ("string-body", CHAT, _json("hi"), AUTH, 400, "must be a JSON object, not string", None),
    ("unknown-role", CHAT, _msg(role="wizard"), AUTH, 422, "role must be one of", None),
    ("content-null", CHAT, _msg(content=None), AUTH, 422, "content must be text (got null)", None),
    ("content-number", CHAT, _msg(content=3), AUTH, 422, "content must be text", None),
    ("message-not-object", CHAT, _json({"messages": ["hi"]}), AUTH, 422, "must be an object", None),
    ("no-messages", CHAT, _json({"max_tokens": 4}), AUTH, 422, "'messages' is required", None),
    ("empty-messages", CHAT, _json({"messages": []}), AUTH, 422, "non-empty list", None),
    ("bad-temperature", CHAT, _json({**OK, "temperature": "hot"}), AUTH, 422, "temperature", None),
    ("n-2", CHAT, _json({**OK, "n": 2}), AUTH, 422, "one choice", None),
    ("bad-grammar", CHAT, _json({**OK, "grammar": "root ::= ("}), AUTH, 422, "grammar", None),  # was a crash
    ("bad-logit-bias", CHAT, _json({**OK, "logit_bias": {"abc": 1}}), AUTH, 422, "logit_bias", None),
    ("too-long", CHAT, _msg(content="fever " * 3000), AUTH, 400, "exceed context window", None),
    ("unknown-model", CHAT, _json({**OK, "model": "gpt-4"}), AUTH, 404, "available: base, patient", None),
    ("model-not-string", CHAT, _json({**OK, "model": 7}), AUTH, 422, "model must be a string", None),
    # the key comes first: nothing about models or the body before it is right
    ("unknown-model-wrong-key", CHAT, _json({**OK, "model": "gpt-4"}), WRONG_KEY, 401, "API key", "patient"),
    ("malformed-json-wrong-key", CHAT, b"{", WRONG_KEY, 401, "API key", "JSON"),
    ("no-key", CHAT, _json(OK), {"Content-Type": "application/json"}, 401, "API key", None),
    ("no-prompt", "/v1/completions", _json({"max_tokens": 4}), AUTH, 422, "'prompt' is required", None),
    ("completion-wrong-key", "/v1/completions", _json({"prompt": "x"}), WRONG_KEY, 401, "API key", None),
]
PATH_LIKE = re.compile(r"(/[\w.+-]+){2,}|\.py\b|\\\w")


@pytest.mark.parametrize(
    "path,data,headers,status,needle,absent", [pytest.param(*row[1:], id=row[0]) for row in BAD_REQUESTS]
)
def test_bad_request_is_a_4xx_with_one_line(server, path, data, headers, status, needle, absent):
    base, _ = server
    code, text = _post(base, path, data, headers)
    assert code == status, text
    message = json.loads(text)["error"]["message"]
    assert needle in message and "\n" not in message
    for leak in ("Traceback", "line ", 'File "'):
        assert leak not in text, text
    assert not PATH_LIKE.search(text), text
    assert absent is None or absent not in text, text


def _ask(base: str, model: str, messages, stream: bool, **extra) -> tuple[str, str | None]:
    """(answer text, finish_reason) of one chat request; a stream must end with a finish_reason and [DONE]."""
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": 12,
        "temperature": 0,
        "stream": stream,
        **extra,
    }
    with urllib.request.urlopen(_request(base + CHAT, body), timeout=300) as r:
        if not stream:
            choice = json.load(r)["choices"][0]
            return choice["message"]["content"], choice["finish_reason"]
        events = [line[6:].decode().strip() for line in r if line.startswith(b"data: ")]
    assert events[-1] == "[DONE]", events
    choices = [json.loads(e)["choices"][0] for e in events[:-1]]
    text = "".join(c["delta"].get("content") or "" for c in choices)
    return text, choices[-1].get("finish_reason")


QUESTIONS = [ASK, ASK2] + [
    [{"role": "user", "content": q}] for q in ("What does insulin do?", "Is a cough contagious?")
]


def test_concurrent_clients_each_get_their_whole_sequential_answer(server):
    """8 clients at once (streaming and not, two model names, four questions) queue instead of cutting each
    other short: every answer is complete, ends with a finish_reason and equals its sequential answer.
    Whichever request the server takes first, the last sequential one included (the same prompt twice in a row:
    the Runtime evaluates it from where it began the first time, tests/runtime), the answers are the same."""
    base, _ = server
    clients = [(model, q, k % 2 == 0) for model in ("base", "patient") for k, q in enumerate(QUESTIONS)]
    expected = {(m, q[0]["content"]): _ask(base, m, q, stream=False) for m, q, _ in clients}
    assert expected[("base", ASK[0]["content"])] != expected[("patient", ASK[0]["content"])]
    start, results = threading.Barrier(len(clients)), {}

    def client(i: int, model: str, messages, stream: bool) -> None:
        start.wait()
        try:
            results[i] = _ask(base, model, messages, stream)
        except Exception as exc:  # IncompleteRead and friends: reported below, per client
            results[i] = exc

    threads = [threading.Thread(target=client, args=(i, *c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (model, messages, stream) in enumerate(clients):
        text, finish = expected[(model, messages[0]["content"])]
        assert results[i] == (text, finish), f"client {i} ({model}, stream={stream}): {results[i]!r}"
        assert finish in ("stop", "length") and text.strip()


def _wait_for_log(log: Path, start: int, pattern: str, timeout: float = 300) -> re.Match:
    deadline = time.monotonic() + timeout
    while not (found := re.search(pattern, log.read_text()[start:])):
        assert time.monotonic() < deadline, f"{pattern!r} never logged:\n{log.read_text()[start:]}"
        time.sleep(0.1)
    return found


def _open(base: str, body: dict) -> http.client.HTTPConnection:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    conn.request("POST", CHAT, body=_json(body), headers=AUTH)
    return conn


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "plain"])
def test_client_that_goes_away_frees_the_slot(server, stream):
    """A client asking for 1500 tokens that hangs up stops its generation; the next request proceeds."""
    base, log = server
    expected = _ask(base, "base", ASK2, stream=False)
    offset = len(log.read_text())
    long = {"messages": ASK, "max_tokens": 1500, "temperature": 0, "stream": stream}
    conn = _open(base, {**long, "logit_bias": dict.fromkeys(EOS_IDS, -100)})
    if stream:
        response = conn.getresponse()
        assert response.status == 200
        assert response.readline().startswith(b"data: ")  # it is generating: hang up mid-answer
    conn.sock.shutdown(2)
    conn.close()
    gone = _wait_for_log(log, offset, r"client went away(?: before its turn|; stopped after (\d+) tokens)")
    assert gone.group(1) is None or int(gone.group(1)) < 1500
    assert _ask(base, "base", ASK2, stream=False) == expected
