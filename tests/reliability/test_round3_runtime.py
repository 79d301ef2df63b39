"""Issue 30, rows 1-3 and the Runtime items of row 14: serve's grammars, the cancel path with a grammar,
the Runtime after close() and its bad input.

1. a schema whose grammar llama.cpp cannot parse was a segfault of `medkit serve`: now a 422 naming the
   schema keyword, and the server answers the next request;
2. a client hanging up on a request sampled with a grammar killed the server ("Unexpected empty grammar
   stack"): now the answer stops within a token, grammar or not, and the slot is free;
3. Runtime.chat() after close() was a segfault: now RuntimeClosedError;
14. adapters={"base": ...}, max_tokens=0, chat([]), content None or a bare string: one MedkitError line;
    an adapter recorded for another base (same shapes) is refused when both files record their base.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from medkit.errors import MedkitError, RuntimeLoadError
from tests.reliability.test_serve_faults import AUTH, CHAT, _json, _open, _post, _wait_for_log
from tests.runtime.lora_gguf import write_random_lora
from tests.runtime.test_serve import _request, start_server

pytest.importorskip("llama_cpp")

ASK = [{"role": "user", "content": "What is the ICD-10 code of asthma?"}]
ROW1_PATTERN = r"^[A-Z][0-9]{2}(\.[0-9A-Z]{1,4})?$"
LONG_LITERAL = "1234567890" * 300  # a grammar that forbids end-of-sequence for ~3000 tokens


@pytest.fixture(scope="module")
def server(smollm2_gguf, tmp_path_factory):
    folder = tmp_path_factory.mktemp("round3-serve")
    log = folder / "server.log"
    with start_server(smollm2_gguf, "--ctx", "4096", log=log) as (base, _):
        yield base, log


def _answer(base: str, **extra) -> dict:
    body = {"messages": ASK, "max_tokens": 8, "temperature": 0, **extra}
    with urllib.request.urlopen(_request(base + CHAT, body), timeout=300) as r:
        return json.load(r)


# ---- row 1: every grammar parsed before sampling ---------------------------------------------------

UNPARSEABLE = [
    (
        "json_object-pattern",
        {
            "type": "json_object",
            "schema": {"type": "object", "properties": {"code": {"pattern": ROW1_PATTERN}}},
        },
        "response_format.schema.properties.code.pattern",
    ),
    (
        "json_schema-pattern",
        {
            "type": "json_schema",
            "json_schema": {
                "name": "c",
                "schema": {"type": "object", "properties": {"c": {"pattern": ROW1_PATTERN}}},
            },
        },
        "response_format.json_schema.schema.properties.c.pattern",
    ),
    (
        "unenforceable-keyword",
        {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "integer", "minimum": 3}}},
        "response_format.json_schema.schema.minimum",
    ),
    (
        "unknown-format",
        {
            "type": "json_schema",
            "json_schema": {"name": "e", "schema": {"type": "string", "format": "email"}},
        },
        "response_format.json_schema.schema.format",
    ),
    ("unknown-type", {"type": "xml"}, "response_format.type"),
]


@pytest.mark.parametrize("rf,param", [pytest.param(*row[1:], id=row[0]) for row in UNPARSEABLE])
def test_a_schema_llama_cpp_cannot_take_is_a_422_naming_the_keyword(server, rf, param):
    base, _ = server
    body = {"messages": ASK, "max_tokens": 8, "response_format": rf}
    status, text = _post(base, CHAT, _json(body), AUTH)
    assert status == 422, text
    error = json.loads(text)["error"]
    assert error["param"] == param and error["message"].startswith(param), error
    assert "\n" not in error["message"]
    assert _answer(base)["choices"][0]["message"]["content"]  # still serving


def test_grammar_and_constrain_are_parsed_before_sampling(server):
    base, _ = server
    for body, param in (
        ({"grammar": 'root ::= "a'}, "grammar"),
        ({"grammar": 7}, "grammar"),
        ({"constrain": "icd11"}, "constrain"),
        ({"constrain": "icd10:/no/such/codes.txt"}, "constrain"),
    ):
        status, text = _post(base, CHAT, _json({"messages": ASK, "max_tokens": 4, **body}), AUTH)
        assert status == 422, (body, text)
        assert json.loads(text)["error"]["param"] == param
    assert _answer(base)["choices"][0]["message"]["content"]


# ---- row 2: a cancelled request with a grammar -----------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    "extra",
    [
        {"grammar": f'root ::= "{LONG_LITERAL}"'},
        {"response_format": {"type": "json_object", "schema": {"type": "object", "properties": {
            "note": {"type": "string", "const": LONG_LITERAL}}, "required": ["note"]}}},
    ],
    ids=["gbnf", "json-schema"],
)  # fmt: skip
def test_client_hanging_up_on_a_grammar_request_stops_it_and_frees_the_slot(server, stream, extra):
    base, log = server
    expected = _answer(base)["choices"][0]["message"]["content"]
    offset = len(log.read_text())
    conn = _open(base, {"messages": ASK, "max_tokens": 1500, "temperature": 0, "stream": stream, **extra})
    if stream:
        response = conn.getresponse()
        assert response.status == 200
        assert response.readline().startswith(b"data: ")  # generating under the grammar: hang up now
    else:
        time.sleep(0.6)  # the user's timing in the issue: the answer is being generated
    conn.sock.shutdown(2)
    conn.close()
    gone = _wait_for_log(log, offset, r"client went away(?: before its turn|; stopped after (\d+) tokens)")
    assert gone.group(1) is None or int(gone.group(1)) < 1500
    assert "terminate called" not in log.read_text()[offset:]
    assert _answer(base)["choices"][0]["message"]["content"] == expected  # alive, same answer


# ---- rows 3 and 14: the Runtime API ----------------------------------------------------------------


@pytest.fixture(scope="module")
def runtime(smollm2_gguf):
    from medkit.runtime.engine import Runtime

    rt = Runtime(smollm2_gguf, ctx=512, threads=1, gpu_layers=0)
    yield rt
    rt.close()


def test_runtime_after_close_raises_instead_of_crashing(smollm2_gguf, tmp_path):
    from medkit.runtime.engine import Runtime, RuntimeClosedError

    lora = write_random_lora(smollm2_gguf, tmp_path / "a.gguf", seed=3)
    with Runtime(smollm2_gguf, ctx=256, threads=1, gpu_layers=0) as rt:
        assert rt.chat(ASK, max_tokens=2).text
    calls = [
        lambda: rt.chat(ASK, max_tokens=2),
        lambda: list(rt.stream(ASK, max_tokens=2)),
        lambda: rt.reset(),
        lambda: rt.use_adapter(None),
        lambda: rt.add_adapter("a", lora),
        lambda: rt.tokenize("hi"),
    ]
    for call in calls:
        with pytest.raises(RuntimeClosedError, match="this Runtime is closed"):
            call()
    rt.close()  # twice is fine


def test_base_is_not_an_adapter_name(smollm2_gguf, tmp_path):
    from medkit.runtime.engine import Runtime

    lora = write_random_lora(smollm2_gguf, tmp_path / "a.gguf", seed=3)
    with pytest.raises(RuntimeLoadError, match="'base' is reserved"):
        Runtime(smollm2_gguf, adapters={"base": lora}, ctx=256, threads=1, gpu_layers=0)
    with pytest.raises(RuntimeLoadError, match="is empty"):
        Runtime(smollm2_gguf, adapters={" ": lora}, ctx=256, threads=1, gpu_layers=0)


BAD_CALLS = [
    ("max_tokens-0", ASK, {"max_tokens": 0}, "max_tokens must be a whole number of at least 1"),
    ("max_tokens-negative", ASK, {"max_tokens": -3}, "max_tokens"),
    ("max_tokens-float", ASK, {"max_tokens": 2.5}, "max_tokens"),
    ("no-messages", [], {}, "messages is empty"),
    ("bare-string", "What is asthma?", {}, "messages must be a list"),
    ("content-none", [{"role": "user", "content": None}], {}, "messages[0].content must be a string"),
    ("content-list", [{"role": "user", "content": ["x"]}], {}, "messages[0].content must be a string"),
    ("no-role", [{"content": "hi"}], {}, "messages[0].role"),
    ("message-string", ["hi"], {}, "messages[0] must be a dict"),
    ("bad-constrain", ASK, {"constrain": "icd9"}, "unknown constraint"),
]


@pytest.mark.parametrize("messages,params,needle", [pytest.param(*r[1:], id=r[0]) for r in BAD_CALLS])
def test_bad_chat_input_is_one_medkit_error(runtime, messages, params, needle):
    with pytest.raises(MedkitError) as info:
        runtime.chat(messages, **params)
    assert needle in info.value.one_line() and "\n" not in info.value.one_line()
    assert runtime.chat(ASK, max_tokens=1).stats.completion_tokens == 1  # still usable


def test_adapter_recorded_for_another_base_is_refused(smollm2_gguf):
    from medkit.formats.gguf_header import (
        ADAPTER_BASE_ID_KEY,
        MODEL_ID_KEY,
        GGUFInfo,
        check_adapter_base,
    )

    model = GGUFInfo(path=Path("m.gguf"), kind="model", arch="llama", meta={MODEL_ID_KEY: "a" * 64})
    same = GGUFInfo(path=Path("x.gguf"), kind="adapter", arch="llama", meta={ADAPTER_BASE_ID_KEY: "a" * 64})
    other = GGUFInfo(path=Path("y.gguf"), kind="adapter", arch="llama", meta={ADAPTER_BASE_ID_KEY: "b" * 64})
    unknown = GGUFInfo(path=Path("z.gguf"), kind="adapter", arch="llama")
    check_adapter_base(model, same)
    check_adapter_base(model, unknown)  # files that record nothing: nothing to compare
    with pytest.raises(RuntimeLoadError, match="trained on another base") as info:
        check_adapter_base(model, other)
    assert info.value.where == "y.gguf"
