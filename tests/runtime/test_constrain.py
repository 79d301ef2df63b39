"""Issue 33: answers that can only be billable ICD-10-CM codes, and JSON that matches its schema.

The code set, its automaton and grammar are checked against the pinned `simple-icd-10-cm` table; the
Runtime and `medkit serve` (with the official `openai` client) are run on the SmolLM2 GGUF, greedy and
sampled at temperature 1.0, where the unconstrained model answers prose.
"""

from __future__ import annotations

import json
import random

import pytest

from medkit import icd10
from medkit.runtime import constrain, structured
from medkit.runtime.constrain import ConstraintError

pytest.importorskip("llama_cpp")
pytest.importorskip("simple_icd_10_cm")

ASK = [{"role": "user", "content": "A patient has asthma with an acute exacerbation. Which ICD-10-CM code?"}]


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """A cache folder of this test session: cold and warm compiles are this test's own."""
    monkeypatch.setenv("MEDKIT_CACHE", str(tmp_path_factory.getbasetemp() / "medkit-cache"))


# ---- the code set and its automaton ----------------------------------------------------------------


def test_billable_codes_are_the_leaf_categories_and_subcategories_of_the_package():
    import simple_icd_10_cm as cm

    leaves = {c for c in cm.get_all_codes(False) if cm.is_leaf(c) and cm.is_category_or_subcategory(c)}
    assert icd10.billable_codes() == tuple(sorted(icd10.dotted(c) for c in leaves))
    assert icd10.is_billable("qa0.0101") and not icd10.is_billable("QA0.01")  # 2025's QA0 codes too


def test_the_automaton_admits_exactly_the_billable_codes():
    codes = icd10.billable_codes()
    assert len(codes) > 70_000 and "J45.909" in codes and "A09" in codes
    auto = constrain.automaton("icd10")
    assert len(auto.edges) < len(codes) / 10  # merged subtrees, not a flat trie
    assert all(auto.accepts(c) for c in codes)
    rng = random.Random(0)
    for code in rng.sample(codes, 500):  # near misses: a category, a cut code, one more character
        for wrong in (code[:3] if len(code) > 3 else code + "9", code[:-1], code + "0", code.lower()):
            assert auto.accepts(wrong) == (wrong in set(codes)), wrong
    for text in ("XYZ", "123.4", "R69.X", "Z99.999", "E11.99999", "J45", "J45909", " J45.909", ""):
        assert not auto.accepts(text), text


def test_the_grammar_parses_and_is_cached_on_disk(smollm2_gguf):
    import llama_cpp

    constrain.code_grammar.cache_clear()
    text = constrain.answer_grammar("icd10")
    cached = list(constrain.cache_dir().glob("icd10-*.gbnf"))
    assert len(cached) == 1 and text.endswith(cached[0].read_text())
    constrain.code_grammar.cache_clear()
    assert constrain.answer_grammar("icd10") == text  # read back, same text
    llm = llama_cpp.Llama(str(smollm2_gguf), n_ctx=64, verbose=False)
    try:
        assert structured.parses(llama_cpp.llama_model_get_vocab(llm.model), text)
    finally:
        llm.close()


def test_prefix_and_file_code_sets(tmp_path):
    j = constrain.code_set("icd10:J")
    assert j.codes and all(c.startswith("J") for c in j.codes)
    assert constrain.code_set("icd10:E11.6").codes == tuple(
        c for c in icd10.billable_codes() if c.startswith("E11.6")
    )
    listed = tmp_path / "labels.txt"
    listed.write_text("# the run's labels\nJ45.909, e11.9\n\nI10  # hypertension\n")
    assert constrain.code_set(f"icd10:{listed}").codes == ("E11.9", "I10", "J45.909")


BAD_SPECS = [
    ("unknown", "icd9", "unknown constraint 'icd9'"),
    ("no-code-starts", "icd10:U8", "no billable ICD-10-CM code starts with 'U8'"),
    ("missing-file", "icd10:{tmp}/nope.txt", "no such ICD-10 code file"),
    ("empty-file", "icd10:{empty}", "the code file lists no codes"),
    ("unknown-code", "icd10:{bad}", "'Z99.999' is not a billable ICD-10-CM code"),
]


@pytest.mark.parametrize("spec,needle", [pytest.param(*r[1:], id=r[0]) for r in BAD_SPECS])
def test_a_bad_constraint_is_one_line(tmp_path, spec, needle):
    (tmp_path / "empty.txt").write_text("# nothing\n")
    (tmp_path / "bad.txt").write_text("J45.909\nZ99.999\n")
    spec = spec.format(tmp=tmp_path, empty=tmp_path / "empty.txt", bad=tmp_path / "bad.txt")
    with pytest.raises(ConstraintError) as info:
        constrain.code_set(spec)
    line = info.value.one_line()
    assert needle in line and "\n" not in line
    if spec.endswith("bad.txt"):
        assert f"{tmp_path / 'bad.txt'}:2" in line and "nearest: Z99." in line  # the line and a hint


def test_a_tokenizer_that_cannot_spell_a_code_is_refused():
    def no_dot(ch: str) -> list[str]:
        return [" ."] if ch == "." else [ch]

    with pytest.raises(ConstraintError, match=r"cannot spell ICD-10 codes: no token for '\.'"):
        constrain.check_spelling(no_dot, where="m.gguf")


# ---- the Runtime -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runtime(smollm2_gguf, tmp_path_factory):
    import os

    os.environ.setdefault("MEDKIT_CACHE", str(tmp_path_factory.getbasetemp() / "medkit-cache"))
    from medkit.runtime.engine import Runtime

    rt = Runtime(smollm2_gguf, ctx=1024, threads=1, gpu_layers=0, constrain="icd10")
    yield rt
    rt.close()


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_runtime_answers_only_billable_codes(runtime, temperature):
    for seed in range(4 if temperature else 1):
        runtime.reset()
        answer = runtime.chat(ASK, temperature=temperature, seed=seed, max_tokens=16)
        assert icd10.is_billable(answer.text) and answer.text == icd10.dotted(answer.text), answer.text
        assert answer.stats.stop_reason == "eos"
    runtime.reset()
    prose = runtime.chat(ASK, temperature=0.0, max_tokens=16, constrain=None).text  # per call: off
    assert not icd10.is_billable(prose) and len(prose.split()) > 2
    runtime.reset()
    streamed = "".join(runtime.stream(ASK, temperature=1.0, seed=7, max_tokens=16, constrain="icd10:J45"))
    assert streamed.startswith("J45.") and icd10.is_billable(streamed)


def test_runtime_json_schema_with_an_icd10_field(runtime):
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "format": "icd10-cm"}, "urgent": {"type": "boolean"}},
        "required": ["code", "urgent"],
    }
    rf = {"type": "json_schema", "json_schema": {"name": "coding", "schema": schema, "strict": True}}
    for seed in range(3):
        runtime.reset()
        text = runtime.chat(ASK, temperature=1.0, seed=seed, max_tokens=40, response_format=rf).text
        value = json.loads(text)
        assert set(value) == {"code", "urgent"} and isinstance(value["urgent"], bool)
        assert icd10.is_billable(value["code"]), value


def test_runtime_refuses_a_constraint_before_answering(runtime):
    with pytest.raises(ConstraintError, match="unknown constraint"):
        runtime.chat(ASK, constrain="icd10-cm")
    with pytest.raises(structured.SchemaError, match="'uniqueItems' cannot be enforced"):
        runtime.chat(ASK, response_format={"type": "json_object", "schema": {"uniqueItems": True}})
    assert runtime.constrain == "icd10"


# ---- medkit serve: --constrain, per request, and the official openai client -------------------------


@pytest.fixture(scope="module")
def icd_server(smollm2_gguf, tmp_path_factory):
    from tests.runtime.test_serve import KEY, start_server

    log = tmp_path_factory.mktemp("serve-icd") / "server.log"
    with start_server(smollm2_gguf, "--constrain", "icd10", "--ctx", "1024", log=log) as (base, _):
        yield base, KEY


def _client(icd_server):
    openai = pytest.importorskip("openai")
    base, key = icd_server
    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120)


def test_serve_constrain_default_and_per_request(icd_server):
    client = _client(icd_server)
    for seed in range(3):
        reply = client.chat.completions.create(
            model="base", messages=ASK, temperature=1.0, seed=seed, max_tokens=16
        )
        assert icd10.is_billable(reply.choices[0].message.content), reply
        assert reply.choices[0].finish_reason == "stop"
    off = client.chat.completions.create(
        model="base", messages=ASK, temperature=0, max_tokens=16, extra_body={"constrain": None}
    )
    assert not icd10.is_billable(off.choices[0].message.content)
    j = client.chat.completions.create(
        model="base", messages=ASK, temperature=0, max_tokens=16, extra_body={"constrain": "icd10:J"}
    )
    assert j.choices[0].message.content.startswith("J") and icd10.is_billable(j.choices[0].message.content)


def test_openai_json_schema_request_with_an_icd10_field(icd_server):
    client = _client(icd_server)
    schema = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "format": "icd10-cm", "description": "billable ICD-10-CM"},
            "reason": {"type": "string", "maxLength": 60},
        },
        "required": ["code", "reason"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model="base",
        messages=ASK,
        temperature=1.0,
        seed=1,
        max_tokens=80,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "coding", "schema": schema, "strict": True},
        },
    )
    value = json.loads(reply.choices[0].message.content)
    assert set(value) == {"code", "reason"} and icd10.is_billable(value["code"]), value


def test_serve_refuses_what_it_cannot_enforce(icd_server):
    openai = pytest.importorskip("openai")
    client = _client(icd_server)
    bad = {
        "type": "json_schema",
        "json_schema": {"name": "n", "schema": {"type": "array", "uniqueItems": True}},
    }
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.chat.completions.create(model="base", messages=ASK, max_tokens=8, response_format=bad)
    assert info.value.body["param"] == "response_format.json_schema.schema.uniqueItems"
    with pytest.raises(openai.UnprocessableEntityError, match="no billable ICD-10-CM code starts with"):
        client.chat.completions.create(
            model="base", messages=ASK, max_tokens=8, extra_body={"constrain": "icd10:U8"}
        )
    # min_tokens past the end of a code would leave the sampler nothing to pick (a crash in llama.cpp)
    with pytest.raises(openai.UnprocessableEntityError, match="min_tokens cannot be combined"):
        client.chat.completions.create(
            model="base", messages=ASK, max_tokens=16, extra_body={"min_tokens": 12}
        )
    reply = client.chat.completions.create(model="base", messages=ASK, max_tokens=16)
    assert icd10.is_billable(reply.choices[0].message.content)  # still serving


# ---- the command line: one line for a constraint that cannot be used --------------------------------


@pytest.mark.parametrize("verb", ["chat", "serve"])
def test_cli_refuses_a_bad_constraint_in_one_line(smollm2_gguf, tmp_path, verb):
    from tests.runtime.test_cli import _medkit

    out = _medkit(verb, str(smollm2_gguf), "--constrain", "icd9")
    assert out.returncode == 2 and "Invalid value for '--constrain': unknown constraint 'icd9'" in out.stderr
    codes = tmp_path / "labels.txt"
    codes.write_text("J45.909\nR69.X\n")
    db = ["--db", str(tmp_path / "h.db")] if verb == "chat" else []
    out = _medkit(verb, str(smollm2_gguf), "--constrain", f"icd10:{codes}", *db)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert errors == [f"error: {codes}:2: 'R69.X' is not a billable ICD-10-CM code ({icd10.release()}) "
                      "(nearest: R69)"]  # fmt: skip
    empty = tmp_path / "empty.txt"
    empty.write_text("# no codes yet\n")
    out = _medkit(verb, str(smollm2_gguf), "--constrain", f"icd10:{empty}", *db)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 1 and errors == [f"error: {empty}: the code file lists no codes"], out.stderr


@pytest.mark.parametrize("spec", ["icd10", "icd10:E"])
def test_grammar_first_sampling_picks_what_the_full_check_picks(runtime, spec):
    """Greedy: the Runtime's one-token-first check (and its best-first search when the grammar refuses)
    gives llama-cpp-python's full-vocabulary answer."""
    from llama_cpp import LlamaGrammar

    grammar = LlamaGrammar.from_string(constrain.answer_grammar(spec), verbose=False)
    for question in (
        "Type 2 diabetes with hyperglycaemia. Code?",
        "Hypothyroidism, unspecified. Code?",
        "Hi",
    ):
        msgs = [{"role": "user", "content": question}]
        runtime.reset()
        fast = runtime.chat(msgs, temperature=0.0, max_tokens=16, constrain=spec).text
        runtime.reset()
        ids = runtime.prompt_ids(msgs)
        full = runtime.llm.create_completion(ids, temperature=0.0, max_tokens=16, grammar=grammar)
        assert fast == full["choices"][0]["text"].strip() and icd10.is_billable(fast), (fast, full)


def test_serve_logit_bias_still_applies_under_the_constraint(icd_server, smollm2_gguf):
    import llama_cpp

    client = _client(icd_server)
    first = client.chat.completions.create(model="base", messages=ASK, temperature=0, max_tokens=16)
    code = first.choices[0].message.content
    vocab = llama_cpp.Llama(str(smollm2_gguf), vocab_only=True, verbose=False)
    (letter,) = vocab.tokenize(code[0].encode(), add_bos=False, special=False)
    again = client.chat.completions.create(
        model="base", messages=ASK, temperature=0, max_tokens=16, logit_bias={str(letter): -100}
    )
    text = again.choices[0].message.content
    assert icd10.is_billable(text) and text[0] != code[0], (code, text)


def test_a_sentencepiece_model_spells_codes_with_its_bare_pieces(tmp_path):
    """A SentencePiece tokenizer puts its space marker before a lone character ('▁J'), yet has the bare
    pieces (and byte tokens) llama.cpp's grammar spells a code with: the constraint works on it."""
    from medkit.convert.gguf.writer import write_gguf
    from medkit.runtime.engine import Runtime
    from tests.factories import build_tiny_model

    gguf = tmp_path / "spm.gguf"
    write_gguf(build_tiny_model("llama", tmp_path / "hf"), gguf, "f32")
    with Runtime(gguf, ctx=256, threads=1, gpu_layers=0, constrain="icd10") as rt:
        alone = [rt.llm.detokenize([i]).decode() for i in rt.llm.tokenize(b"J", add_bos=False, special=False)]
        assert alone != ["J"]  # what a check by tokenizing each character alone refused
        for seed in range(3):
            rt.reset()
            answer = rt.chat(
                [{"role": "user", "content": "Code?"}], temperature=1.0, seed=seed, max_tokens=12
            )
            assert icd10.is_billable(answer.text) and answer.stats.stop_reason == "eos", answer.text


@pytest.mark.parametrize(
    "content,needle",
    [
        pytest.param("J45.909\nZ99.999\n", "'Z99.999' is not a billable ICD-10-CM code", id="unknown-code"),
        pytest.param("# nothing here\n\n", "the code file lists no codes", id="empty-file"),
    ],
)
def test_serve_refuses_a_bad_code_file_per_request(icd_server, tmp_path, content, needle):
    """A request's constrain naming a bad code file: 422 naming the file (and line), the server still serves."""
    openai = pytest.importorskip("openai")
    client = _client(icd_server)
    codes = tmp_path / "codes.txt"
    codes.write_text(content)
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.chat.completions.create(
            model="base", messages=ASK, max_tokens=8, extra_body={"constrain": f"icd10:{codes}"}
        )
    assert info.value.body["param"] == "constrain" and needle in info.value.body["message"]
    assert str(codes) in info.value.body["message"] and "\n" not in info.value.body["message"]
    reply = client.chat.completions.create(model="base", messages=ASK, max_tokens=16)
    assert icd10.is_billable(reply.choices[0].message.content)


def test_the_constraint_holds_across_a_live_adapter_switch(smollm2_gguf, patient_lora):
    from medkit.runtime.engine import Runtime

    with Runtime(smollm2_gguf, adapters={"patient": patient_lora}, ctx=512, threads=1, gpu_layers=0,
                 constrain="icd10") as rt:  # fmt: skip
        answers = {}
        for adapter in (None, "patient", None):  # greedy: a refused step checks pieces until one is allowed
            rt.use_adapter(adapter)
            rt.reset()
            answers[adapter] = rt.chat(ASK, temperature=0.0, max_tokens=16).text
            assert icd10.is_billable(answers[adapter]), (adapter, answers[adapter])
        assert rt.constrain == "icd10"
