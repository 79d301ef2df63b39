"""Tokenizer -> GGUF vocabulary: SentencePiece (`llama`) and byte-level BPE (`gpt2`) with its pre-tokenizer.

Special ids, add_bos/add_eos, merges and the chat template come through gguf.SpecialVocab; what is
ours is choosing the tokenizer kind, the token types of added tokens, vocab padding, the
pre-tokenizer name (read from the tokenizer's own pre-tokenizer definition, never from the model
name), and the end-of-turn token the chat template closes assistant turns with.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkit.errors import ConvertError

# The regexes byte-level BPE tokenizers split with, as written in their tokenizer.json, and the
# llama.cpp pre-tokenizer that reproduces each (llama.cpp src/llama-vocab.cpp).
_CONTRACTIONS = "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_TAIL = r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
SPLIT_REGEXES = {
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|" + _TAIL: "llama-bpe",
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|" + _TAIL: "qwen2",
    # Qwen3.5: combining marks (\p{M}) belong to words
    _CONTRACTIONS
    + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen35",
    # o200k (GPT-4o style; Phi-4-mini): cased words with optional contractions, '/' kept after punctuation
    "|".join(
        (
            r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
            + _CONTRACTIONS
            + "?",
            r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
            + _CONTRACTIONS
            + "?",
            r"\p{N}{1,3}",
            r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
            r"\s*[\r\n]+",
            r"\s+(?!\S)",
            r"\s+",
        )
    ): "gpt-4o",
}
PRE_TYPES = ("gpt-2", "smollm", "qwen2", "llama-bpe", "gpt-4o", "qwen35")


@dataclass
class GGUFVocab:
    model: str  # tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    pre: str | None = None
    merges: list[str] = field(default_factory=list)
    eot_id: int | None = None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConvertError(f"cannot read {path.name}: {exc}", where=str(path)) from exc


def tokenizer_config(folder: Path) -> dict[str, Any]:
    path = folder / "tokenizer_config.json"
    return _read_json(path) if path.is_file() else {}


def _describe_pre(node: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """Flatten a tokenizers pre_tokenizer into (kind, detail) steps."""
    if not node:
        return []
    kind = node.get("type")
    if kind == "Sequence":
        return [step for child in node.get("pretokenizers", []) for step in _describe_pre(child)]
    if kind == "Split":
        pattern = node.get("pattern", {})
        return [("Split", pattern.get("Regex") or pattern.get("String"))]
    if kind == "ByteLevel":
        return [("ByteLevel", bool(node.get("use_regex", True)))]
    if kind == "Digits":
        return [("Digits", bool(node.get("individual_digits", False)))]
    return [(str(kind), None)]


def detect_pre(tokenizer_json: dict[str, Any], where: str = "tokenizer.json") -> str:
    """llama.cpp's `tokenizer.ggml.pre` for a byte-level BPE tokenizer, from its pre-tokenizer definition."""
    if tokenizer_json.get("normalizer"):
        raise ConvertError("byte-level BPE with a normalizer is not supported", where=where)
    steps = _describe_pre(tokenizer_json.get("pre_tokenizer"))
    if steps == [("ByteLevel", True)]:
        return "gpt-2"
    if steps == [("Digits", True), ("ByteLevel", True)]:
        return "smollm"
    if len(steps) == 2 and steps[0][0] == "Split" and steps[1] == ("ByteLevel", False):
        pre = SPLIT_REGEXES.get(steps[0][1])
        if pre:
            return pre
    raise ConvertError(
        f"unknown byte-level BPE pre-tokenizer {steps} (supported: {', '.join(PRE_TYPES)})", where=where
    )


def _pad(vocab: GGUFVocab, n_vocab: int) -> None:
    import gguf

    for i in range(len(vocab.tokens), n_vocab):
        vocab.tokens.append(f"[PAD{i}]")
        vocab.types.append(gguf.TokenType.UNUSED)
        if vocab.scores is not None:
            vocab.scores.append(-1000.0)


def _added_tokens(folder: Path, tok_json: dict[str, Any] | None) -> dict[int, tuple[str, bool]]:
    """id -> (content, special) from tokenizer.json and tokenizer_config.json's added_tokens_decoder."""
    out: dict[int, tuple[str, bool]] = {}
    for item in (tok_json or {}).get("added_tokens", []):
        out[int(item["id"])] = (item["content"], bool(item.get("special", False)))
    for tid, item in tokenizer_config(folder).get("added_tokens_decoder", {}).items():
        out.setdefault(int(tid), (item["content"], bool(item.get("special", False))))
    return out


def _bpe_vocab(folder: Path, tok_json: dict[str, Any] | None, n_vocab: int | None) -> GGUFVocab:
    import gguf

    if tok_json is not None:
        base: dict[str, int] = tok_json["model"]["vocab"]
        pre = detect_pre(tok_json, where=str(folder / "tokenizer.json"))
    else:  # slow GPT-2 tokenizer files: GPT-2's own regex by definition
        base = _read_json(folder / "vocab.json")
        pre = "gpt-2"
    added = _added_tokens(folder, tok_json)
    if (folder / "added_tokens.json").is_file():
        for text, tid in _read_json(folder / "added_tokens.json").items():
            added.setdefault(int(tid), (text, True))
    cfg = tokenizer_config(folder)
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):  # named specials are control tokens
        special = token_text(cfg.get(key))
        if special is not None and special in base and base[special] not in added:
            added[base[special]] = (special, True)
    by_id: dict[int, str] = {tid: text for text, tid in base.items()}
    for tid, (text, _special) in added.items():
        by_id[tid] = text
    size = max(n_vocab or 0, max(by_id) + 1)
    vocab = GGUFVocab(model="gpt2", tokens=[], types=[], pre=pre)
    merges = (tok_json or {}).get("model", {}).get("merges") or []
    if merges and isinstance(merges[0], str):
        vocab.merges = merges
    elif merges and not any(" " in part for pair in merges for part in pair):
        vocab.merges = [f"{a} {b}" for a, b in merges]
    # else: merges.txt, or pairs with spaces: gguf.SpecialVocab loads and encodes them
    for i in range(size):
        if i in added:
            vocab.tokens.append(added[i][0])
            vocab.types.append(gguf.TokenType.CONTROL if added[i][1] else gguf.TokenType.USER_DEFINED)
        elif i in by_id:
            vocab.tokens.append(by_id[i])
            vocab.types.append(gguf.TokenType.NORMAL)
        else:
            vocab.tokens.append(f"[PAD{i}]")
            vocab.types.append(gguf.TokenType.UNUSED)
    return vocab


def _spm_vocab(folder: Path, tok_json: dict[str, Any] | None, n_vocab: int | None) -> GGUFVocab:
    import gguf

    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    if (folder / "tokenizer.model").is_file():
        try:
            spm = gguf.SentencePieceVocab(folder)
        except Exception as exc:  # sentencepiece raises plain RuntimeError/OSError on bad files
            raise ConvertError(f"cannot read tokenizer.model: {exc}", where=str(folder)) from exc
        for text, score, ttype in spm.all_tokens():
            tokens.append(text.decode("utf-8"))
            scores.append(float(score))
            types.append(int(ttype))
    else:  # tokenizer.json only: SentencePiece exported as BPE with byte fallback, or as Unigram
        assert tok_json is not None
        model = tok_json["model"]
        if model["type"] == "Unigram":
            pairs = [(p, float(s)) for p, s in model["vocab"]]
        else:
            rank: dict[str, int] = {}
            for r, merge in enumerate(model.get("merges", [])):
                a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
                rank.setdefault(a + b, r)
            ordered = sorted(model["vocab"].items(), key=lambda kv: kv[1])
            pairs = [(p, -float(rank.get(p, 0))) for p, _ in ordered]
        unk = model.get("unk_token")
        unk_id = model.get("unk_id")
        for i, (piece, score) in enumerate(pairs):
            tokens.append(piece)
            scores.append(score)
            if piece == unk or i == unk_id:
                types.append(gguf.TokenType.UNKNOWN)
            elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece):
                types.append(gguf.TokenType.BYTE)
            else:
                types.append(gguf.TokenType.NORMAL)
    for tid, (text, special) in sorted(_added_tokens(folder, tok_json).items()):
        ttype = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
        if tid < len(tokens):
            if types[tid] != gguf.TokenType.UNKNOWN:
                tokens[tid], types[tid] = text, ttype
        elif tid == len(tokens):
            tokens.append(text)
            scores.append(-1000.0)
            types.append(ttype)
        else:
            raise ConvertError(
                f"added token '{text}' has id {tid}, not next to the vocabulary ({len(tokens)})"
            )
    vocab = GGUFVocab(model="llama", tokens=tokens, types=types, scores=scores)
    if n_vocab:
        _pad(vocab, n_vocab)
    return vocab


def _tokenizer_json(folder: Path) -> dict[str, Any] | None:
    path = folder / "tokenizer.json"
    return _read_json(path) if path.is_file() else None


def load_vocab(folder: Path, n_vocab: int | None = None) -> GGUFVocab:
    """Read the tokenizer in ``folder`` as a GGUF vocabulary, padded to ``n_vocab`` entries when given."""
    tok_path = folder / "tokenizer.json"
    tok_json = _read_json(tok_path) if tok_path.is_file() else None
    if tok_json is not None:
        model = tok_json.get("model", {})
        byte_level = model.get("type") == "BPE" and not model.get("byte_fallback", False)
        if byte_level and not (folder / "tokenizer.model").is_file():
            vocab = _bpe_vocab(folder, tok_json, n_vocab)
        else:
            vocab = _spm_vocab(folder, tok_json, n_vocab)
    elif (folder / "tokenizer.model").is_file():
        vocab = _spm_vocab(folder, None, n_vocab)
    elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        vocab = _bpe_vocab(folder, None, n_vocab)
    else:
        raise ConvertError(
            "no tokenizer files (tokenizer.json, tokenizer.model, or vocab.json + merges.txt)",
            where=str(folder),
        )
    if n_vocab and len(vocab.tokens) > n_vocab:
        raise ConvertError(
            f"tokenizer has {len(vocab.tokens)} tokens but the model's embedding has {n_vocab} rows",
            where=str(folder),
        )
    return vocab


def chat_template(folder: Path) -> str | None:
    """The chat template from tokenizer_config.json, else chat_template.jinja / chat_template.json."""
    tmpl = tokenizer_config(folder).get("chat_template")
    if isinstance(tmpl, str):
        return tmpl
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if (folder / "chat_template.json").is_file():
        return _read_json(folder / "chat_template.json").get("chat_template")
    return None


def token_text(value: Any) -> str | None:
    """The text of a tokenizer_config.json special-token entry (a string or an AddedToken dict)."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def end_of_turn(template: str | None, tokens: list[str], types: list[int], cfg: dict[str, Any]) -> int | None:
    """Id of the special token the chat template writes right after an assistant reply, if any."""
    if not template:
        return None
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        return None
    marker = "MEDKIT_REPLY_7f3a"
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = lambda msg: (_ for _ in ()).throw(ValueError(msg))
    env.globals["strftime_now"] = lambda fmt: "01 Jan 2025"
    messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": marker}]
    try:
        text = env.from_string(template).render(
            messages=messages,
            add_generation_prompt=False,
            bos_token=token_text(cfg.get("bos_token")) or "",
            eos_token=token_text(cfg.get("eos_token")) or "",
        )
    except Exception:
        return None
    tail = text.split(marker, 1)[-1] if marker in text else ""
    specials = {tok: i for i, (tok, t) in enumerate(zip(tokens, types, strict=False)) if t in (3, 4) and tok}
    best: tuple[int, int] | None = None
    for tok, tid in specials.items():
        pos = tail.find(tok)
        if pos >= 0 and (
            best is None or pos < best[0] or (pos == best[0] and len(tok) > len(tokens[best[1]]))
        ):
            best = (pos, tid)
    return best[1] if best and not tail[: best[0]].strip() else None


def _add_flags(folder: Path, cfg: dict[str, Any], model: str) -> dict[str, bool]:
    """Whether the HF tokenizer adds BOS/EOS: probed with `tokenizers` when tokenizer.json exists."""
    flags = {"bos": model == "llama", "eos": False}  # the slow tokenizers' defaults
    for kind in ("bos", "eos"):
        if f"add_{kind}_token" in cfg and cfg[f"add_{kind}_token"] is not None:
            flags[kind] = bool(cfg[f"add_{kind}_token"])
    if (folder / "tokenizer.json").is_file():
        try:
            from tokenizers import Tokenizer
        except ImportError:
            return flags
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        plain = tok.encode("hello", add_special_tokens=False).ids
        full = tok.encode("hello", add_special_tokens=True).ids
        start = full.index(plain[0]) if plain and plain[0] in full else 0
        flags = {"bos": start > 0, "eos": len(full) > start + len(plain)}
    return flags


def _spm_space_prefix(folder: Path, tok_json: dict[str, Any] | None) -> bool:
    """Whether a SentencePiece tokenizer prefixes text with a space (Llama: yes, Gemma: no), as transformers
    does it: tokenizer.json first (a saved Llama tokenizer.model may say add_dummy_prefix = false because
    transformers adds the prefix itself, legacy = False), then the SentencePiece model, else yes."""
    if tok_json is not None:
        text = json.dumps([tok_json.get("normalizer"), tok_json.get("pre_tokenizer")])
        return any(
            marker in text
            for marker in ('"Prepend"', '"prepend_scheme": "always"', '"prepend_scheme": "first"',
                           '"add_prefix_space": true')
        )  # fmt: skip
    if (folder / "tokenizer.model").is_file():
        try:
            from sentencepiece import sentencepiece_model_pb2 as pb

            proto = pb.ModelProto()
            proto.ParseFromString((folder / "tokenizer.model").read_bytes())
            return bool(proto.normalizer_spec.add_dummy_prefix)
        except Exception:  # no protobuf support: llama.cpp's default
            pass
    return True


def add_vocab(writer: Any, folder: Path, n_vocab: int) -> GGUFVocab:
    """Write tokens, scores, types, merges, pre-tokenizer, special ids, flags and chat template."""
    import gguf

    vocab = load_vocab(folder, n_vocab)
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre:
        writer.add_tokenizer_pre(vocab.pre)
    if vocab.model == "llama" and not _spm_space_prefix(folder, _tokenizer_json(folder)):
        writer.add_add_space_prefix(False)  # llama.cpp's default is a space prefix
    writer.add_token_list(vocab.tokens)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    need_merges = vocab.model == "gpt2" and not vocab.merges
    special = gguf.SpecialVocab(folder, load_merges=need_merges, n_vocab=len(vocab.tokens))
    if vocab.merges:
        special.merges = vocab.merges
    if vocab.model == "gpt2" and not special.merges:
        raise ConvertError("byte-level BPE tokenizer has no merges", where=str(folder))
    cfg = tokenizer_config(folder)
    template = chat_template(folder)
    special.chat_template = template
    special.add_special_token.update(_add_flags(folder, cfg, vocab.model))
    eot = end_of_turn(template, vocab.tokens, vocab.types, cfg)
    if eot is not None:
        vocab.eot_id = eot
        special.special_token_ids.setdefault("eos", eot)
        special.special_token_ids["eot"] = eot
    special.add_to_gguf(writer, quiet=True)
    return vocab


def gemma4_vocab(writer: Any, folder: Any, n_vocab: int) -> Any:
    """tokenizer.json as llama.cpp's `gemma4` tokenizer (BPE over SentencePiece-style pieces, byte fallback):
    pieces in id order (gguf's LlamaHfVocab), VISIBLE tokens user-defined, merges, special ids, BOS added,
    no space prefix, the chat template, and the end-of-turn token it closes model turns with."""
    import gguf

    from medkit.convert.arch.gemma4 import VISIBLE

    try:
        hf = gguf.LlamaHfVocab(folder)
    except (OSError, TypeError, ValueError) as exc:
        raise ConvertError(
            f"Gemma 4 needs its tokenizer.json (BPE with byte fallback): {exc}", where=str(folder)
        ) from exc
    vocab = GGUFVocab(model="gemma4", tokens=[], types=[], scores=[])
    assert vocab.scores is not None
    for text, score, ttype in hf.all_tokens():
        piece = text.decode("utf-8")
        vocab.tokens.append(piece)
        vocab.scores.append(float(score))
        vocab.types.append(int(gguf.TokenType.USER_DEFINED if piece in VISIBLE else ttype))
    if len(vocab.tokens) > n_vocab:
        raise ConvertError(
            f"tokenizer has {len(vocab.tokens)} tokens but the model's embedding has {n_vocab} rows",
            where=str(folder),
        )
    for i in range(len(vocab.tokens), n_vocab):
        vocab.tokens.append(f"[PAD{i}]")
        vocab.scores.append(-1000.0)
        vocab.types.append(int(gguf.TokenType.UNUSED))
    writer.add_tokenizer_model("gemma4")
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    special = gguf.SpecialVocab(folder, load_merges=True)
    if not special.merges:
        raise ConvertError("Gemma 4 tokenizer.json has no merges", where=str(folder))
    template = chat_template(folder)
    special.chat_template = template
    eot = end_of_turn(template, vocab.tokens, vocab.types, tokenizer_config(folder))
    if eot is not None:
        vocab.eot_id = eot
        special.special_token_ids["eot"] = eot
    special.add_special_token["bos"] = True  # llama.cpp adds BOS for gemma4 whatever the file says
    special.add_to_gguf(writer, quiet=True)
    writer.add_add_space_prefix(False)
    return vocab


# tokenizer models a family writes its own way (Family.vocab names one): (writer, folder, n_vocab) -> GGUFVocab
OWN_VOCABS = {"gemma4": gemma4_vocab}
