"""medkit.Runtime against the real SmolLM2 GGUF: answers, stops, cancel, adapters, context, bad files."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from medkit.errors import RuntimeLoadError
from medkit.runtime.answer import EvalStarts, compile_template
from medkit.runtime.engine import (
    ContextOverflowError,
    Runtime,
    default_gpu_layers,
    ensure_single_bos,
    read_gguf_info,
)

QUESTION = [{"role": "user", "content": "What is anaemia? Answer in one sentence."}]
GREEDY = {"temperature": 0.0, "max_tokens": 12, "seed": 0}


# -- GGUF checks -------------------------------------------------------------------------------------
def test_reads_smollm2_header_fast(smollm2_gguf):
    t0 = time.perf_counter()
    info = read_gguf_info(smollm2_gguf)
    assert time.perf_counter() - t0 < 1.0
    assert (info.arch, info.n_embd, info.n_layer, info.n_vocab) == ("llama", 576, 30, 49152)
    assert info.kind == "model" and "<|im_start|>" in (info.chat_template or "")
    assert info.tensors["blk.0.attn_q.weight"] == (576, 576)


def test_missing_file_is_one_clear_line(tmp_path):
    with pytest.raises(RuntimeLoadError, match="model file not found") as exc:
        Runtime(tmp_path / "nope.gguf")
    assert "\n" not in str(exc.value) and "nope.gguf" in str(exc.value)


def test_not_a_gguf_is_refused(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_text("this is not a model")
    with pytest.raises(RuntimeLoadError, match="not a GGUF file"):
        Runtime(bad)


@pytest.mark.parametrize("keep", [100, 0.5])
def test_truncated_gguf_is_refused(smollm2_gguf, tmp_path, keep):
    data = smollm2_gguf.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(RuntimeLoadError, match="truncated") as exc:
        Runtime(cut)
    assert "cut.gguf" in str(exc.value)


def test_adapter_for_another_base_names_the_dims(runtime, wrong_base_lora):
    with pytest.raises(RuntimeLoadError, match="another base") as exc:
        runtime.add_adapter("wide", wrong_base_lora)
    msg = str(exc.value)
    assert "2048 x 576" in msg and "576 x 576" in msg and "n_embd 576" in msg
    assert "wide" not in runtime.adapters


def test_model_as_adapter_and_adapter_as_model_are_refused(runtime, smollm2_gguf, patient_lora):
    with pytest.raises(RuntimeLoadError, match="not a LoRA adapter"):
        runtime.add_adapter("oops", smollm2_gguf)
    with pytest.raises(RuntimeLoadError, match="pass it with --adapter"):
        read_gguf_info(patient_lora, what="model")
    with pytest.raises(RuntimeLoadError, match="unknown adapter 'nobody'"):
        runtime.use_adapter("nobody")


# -- BOS on token ids ---------------------------------------------------------------------------------
def test_ensure_single_bos():
    assert ensure_single_bos([5, 6], 1, add_bos=True) == [1, 5, 6]
    assert ensure_single_bos([1, 1, 5], 1, add_bos=True) == [1, 5]
    assert ensure_single_bos([1, 5], 1, add_bos=True) == [1, 5]
    assert ensure_single_bos([5, 6], 1, add_bos=False) == [5, 6]
    assert ensure_single_bos([5], -1, add_bos=True) == [5]


def test_eval_starts_reuse_the_cache_but_replay_a_prompt_from_its_first_start():
    starts = EvalStarts(keep=2)
    assert starts.start([], [1, 2, 3]) == 0  # empty cache
    assert starts.start([1, 2, 3, 9, 9], [1, 2, 4, 5]) == 2  # a new prompt keeps what it shares
    assert starts.start([1, 2, 4, 5, 7], [1, 2, 4, 5]) == 2  # asked again: from where it began, not 3
    assert starts.start([1, 2, 4, 5, 7], [1, 2, 4, 5, 7, 8]) == 5  # its continuation reuses it all
    assert starts.start([1, 2, 4, 5, 7, 8], [1, 2, 4, 5]) == 2  # a prefix of the cache asked again
    assert starts.start([1, 9], [1, 2, 4, 5]) == 1  # the cache lost part of it: only what it holds
    assert starts.start([1, 2, 3, 4], [1, 2, 3]) == 2  # [1, 2, 3] fell out (keep=2): its start 0 is forgotten
    starts.clear()
    assert starts.start([1, 2, 4, 5, 7], [1, 2, 4, 5]) == 3


def test_template_without_bos_token_still_gets_one_bos(runtime, monkeypatch):
    zephyr = (  # TinyLlama's template: no bos_token anywhere
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    monkeypatch.setattr(runtime, "_template", compile_template(zephyr))
    monkeypatch.setattr(runtime, "add_bos", True)
    ids = runtime.prompt_ids(QUESTION)
    assert ids[0] == runtime.bos_id and ids.count(runtime.bos_id) == 1
    with_bos = "{{ bos_token }}" + zephyr
    monkeypatch.setattr(runtime, "_template", compile_template(with_bos))
    ids2 = runtime.prompt_ids(QUESTION)
    assert ids2 == ids  # the template's own BOS is not doubled


def test_smollm2_prompt_uses_gguf_template(runtime):
    text = runtime.render(QUESTION)
    assert text.endswith("<|im_start|>assistant\n") and "What is anaemia?" in text
    ids = runtime.prompt_ids(QUESTION)
    im_start = runtime.tokenize("<|im_start|>")
    assert len(im_start) == 1 and ids.count(im_start[0]) == 3  # special tokens parsed as tokens


# -- generation -------------------------------------------------------------------------------------
def test_answer_streams_and_stops_at_end_of_turn(runtime):
    runtime.use_adapter(None)
    pieces = list(runtime.stream(QUESTION, temperature=0.0, max_tokens=120))
    st = runtime.last_stats
    text = "".join(pieces)
    assert len(pieces) > 3 and len(text.split()) >= 5  # a real sentence, streamed in pieces
    assert st.stop_reason == "eos" and st.completion_tokens < 120
    assert "<|im_end|>" not in text and "\x00" not in text
    assert st.prompt_tokens == len(runtime.prompt_ids(QUESTION))
    assert st.ctx_used == st.prompt_tokens + st.completion_tokens and st.n_ctx == 1024
    assert st.ttft_s > 0 and st.tokens_per_s > 0


def test_max_tokens_stops_with_length(runtime):
    ans = runtime.chat(QUESTION, temperature=0.0, max_tokens=5)
    assert ans.stats.completion_tokens == 5 and ans.stats.stop_reason == "length" and ans.text


def test_seed_makes_sampling_reproducible(runtime):
    a = runtime.chat(QUESTION, temperature=0.9, max_tokens=16, seed=7).text
    b = runtime.chat(QUESTION, temperature=0.9, max_tokens=16, seed=7).text
    assert a == b


def test_cancel_from_another_thread_keeps_partial_text(runtime):
    got: list[str] = []
    for piece in runtime.stream(QUESTION, temperature=0.0, max_tokens=200):
        got.append(piece)
        if len(got) == 3:
            t = threading.Thread(target=runtime.cancel)
            t.start()
            t.join()
    st = runtime.last_stats
    assert st.stop_reason == "cancelled" and 3 <= st.completion_tokens <= 5
    assert "".join(got).strip()


def test_adapter_switch_changes_output_and_switching_back_restores_it(runtime):
    runtime.use_adapter(None)
    base = runtime.chat(QUESTION, **GREEDY).text
    runtime.use_adapter("patient")  # the KV cache holds this prompt computed by the base
    tuned = runtime.chat(QUESTION, **GREEDY)
    assert tuned.stats.adapter == "patient" and tuned.text != base
    runtime.reset()
    assert runtime.chat(QUESTION, **GREEDY).text == tuned.text  # the switch left no stale cache behind
    runtime.use_adapter(None)
    assert runtime.chat(QUESTION, **GREEDY).text == base
    runtime.use_adapter("patient", scale=0.0)  # scale 0 is the base
    assert runtime.chat(QUESTION, **GREEDY).text == base
    runtime.use_adapter(None)


QUESTIONS = [QUESTION] + [
    [{"role": "user", "content": q}] for q in ("Name one cause of a fever.", "What does insulin do?")
]


def test_a_prompt_asked_again_gets_the_same_greedy_answer(runtime):
    """Asked twice in a row, a prompt is evaluated from where it was the first time: without that only its last
    token is evaluated (a batch of one, rounded differently) and the random adapter's greedy answers part."""
    runtime.use_adapter("patient")
    for question in QUESTIONS:
        first = runtime.chat(question, **GREEDY).text
        assert runtime.chat(question, **GREEDY).text == first, question
        assert runtime.chat(question + [{"role": "assistant", "content": first}] + question, **GREEDY).text
        assert runtime.chat(question, **GREEDY).text == first, question  # after another prompt, too
    runtime.reset()
    assert runtime.chat(QUESTIONS[-1], **GREEDY).text == first  # the same as a fresh evaluation
    runtime.use_adapter(None)


def test_context_overflow_drops_oldest_turns_and_keeps_system(smollm2_gguf):
    long = "The patient reports fatigue and pallor. " * 4  # ~40 tokens
    history = [{"role": "system", "content": "You are a careful clinical assistant."}]
    for i in range(6):
        history += [{"role": "user", "content": f"Turn {i}: {long}"}, {"role": "assistant", "content": long}]
    history.append({"role": "user", "content": "Summarise in one line."})
    with Runtime(smollm2_gguf, ctx=256, threads=1, gpu_layers=0) as rt:
        ids, dropped = rt.fit(history, max_tokens=32)
        assert dropped >= 2 and dropped % 2 == 0 and len(ids) + 32 <= rt.n_ctx
        kept = rt.llm.detokenize(ids, special=True).decode()
        assert (
            "careful clinical assistant" in kept
            and "Summarise in one line." in kept
            and "Turn 0:" not in kept
        )
        ans = rt.chat(history, temperature=0.0, max_tokens=4)
        assert ans.stats.dropped_messages == dropped and ans.stats.ctx_used <= rt.n_ctx
        with pytest.raises(ContextOverflowError, match="context holds 256"):
            rt.fit([{"role": "user", "content": long * 10}], max_tokens=32)


def test_truncate_cuts_to_token_budget(runtime):
    text = "word " * 500
    cut, was_cut = runtime.truncate(text, 50)
    assert was_cut and runtime.count_tokens(cut) <= 50 < runtime.count_tokens(text)
    assert runtime.truncate("short", 50) == ("short", False)


def test_gpu_layers_default_follows_the_backend(monkeypatch):
    import llama_cpp

    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)
    assert default_gpu_layers() == -1
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)
    assert default_gpu_layers() == 0


def test_adapters_load_at_construction_and_copies_work(smollm2_gguf, patient_lora, tmp_path):
    copy = tmp_path / "copy.gguf"
    shutil.copy(patient_lora, copy)
    with Runtime(
        smollm2_gguf, adapters={"a": patient_lora, "b": copy}, ctx=256, threads=1, gpu_layers=0
    ) as rt:
        assert rt.adapters == ["a", "b"] and rt.adapter is None
        rt.use_adapter("b")
        assert rt.adapter == "b"


def test_runtime_is_a_chat_app_backend(runtime):
    from medkit.tui.backend import Backend

    assert isinstance(runtime, Backend)
