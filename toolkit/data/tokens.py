"""Conversations -> token ids and labels, exactly masked (`medkit data` shows them: medkit.data.verb).

`prepare(recipe, tokenizer)` renders every conversation through the chat template twice (prompt with the
generation prompt, and the full conversation); the answer's tokens are the difference. Everything before
is masked with -100 unless `data.train_on_prompt`; the answer always ends with the end-of-turn token the
runtime stops on (checked per example), BOS is never doubled, and truncation is counted, never silent.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medkit.data.rows import SPLITS, RowReport, load_rows, load_table
from medkit.errors import DataError

if TYPE_CHECKING:  # the schema, for annotations only (no import cycle at run time)
    from medkit.recipe import Recipe

__all__ = [
    "Conversation",
    "DataStats",
    "Example",
    "Prepared",
    "load_table",
    "prepare",
    "run_tokenizer",
]
IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE (-100) where no loss is taken


@dataclass
class Conversation:
    messages: list[dict[str, str]]  # system + user turns; render with add_generation_prompt=True
    answer: str
    row: int = 0  # 1-based row number in its source split


@dataclass
class DataStats:
    rows: RowReport
    template: str = ""
    eot_token: str = ""
    examples: dict[str, int] = field(default_factory=dict)
    lengths: dict[str, list[int]] = field(default_factory=dict)  # token lengths per split
    truncated: int = 0  # examples whose answer was cut by max_seq_len (dropped or kept, per recipe)
    trained_tokens: int = 0
    total_tokens: int = 0

    @property
    def trained_share(self) -> float:
        return self.trained_tokens / self.total_tokens if self.total_tokens else 0.0

    def percentiles(self) -> dict[str, int]:
        values = sorted(n for lens in self.lengths.values() for n in lens)
        if not values:
            return {}
        pick = {f"p{p}": values[min(len(values) - 1, int(len(values) * p / 100))] for p in (50, 90, 95, 99)}
        return {"min": values[0], **pick, "max": values[-1]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_rows": self.rows.source_rows, "layout": self.rows.layout, "rows_kept": self.rows.kept,
            "dropped": self.rows.dropped, "drop_examples": self.rows.examples, "malformed": self.rows.malformed,
            "prompt_overlap": self.rows.overlap,
            "examples": self.examples, "template": self.template, "eot_token": self.eot_token,
            "length_percentiles": self.percentiles(), "truncated_answers": self.truncated,
            "trained_tokens": self.trained_tokens, "total_tokens": self.total_tokens,
            "trained_share": round(self.trained_share, 4),
        }  # fmt: skip


@dataclass
class Prepared:
    train: list[Example]
    val: list[Example]
    test: list[Example]
    rows: dict[str, list[Conversation]]  # rows[s][i] is the conversation of example s[i] (same order)
    stats: DataStats
    fingerprint: str
    eot_token_id: int
    eot_token: str = ""
    source_rows: dict[str, list[int]] = field(default_factory=dict)  # source row number of each example

    def split(self, name: str) -> list[Example]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def prepare(recipe: Recipe, tokenizer: Any, rows: tuple[Any, RowReport] | None = None) -> Prepared:
    """Load (or take ``rows``, from `load_rows`), clean, split, render and tokenize the recipe's data."""
    from medkit.formats.chat_template import apply_template, end_of_turn_token, template_name

    splits, report = rows or load_rows(recipe)
    text_only = report.layout == "text"
    if text_only:  # documents: all tokens trained, each closed by the eos token
        if recipe.model.chat_template != "auto":
            apply_template(tokenizer, recipe)  # still set, for chatting with the tuned model later
        eot = tokenizer.eos_token
        if not eot:
            raise DataError(f"the tokenizer of {recipe.model.base} has no eos token to end documents with")
    else:
        apply_template(tokenizer, recipe)
        eot = end_of_turn_token(tokenizer)
    eot_id = tokenizer.convert_tokens_to_ids(eot)
    stats = DataStats(rows=report, template=template_name(recipe), eot_token=eot)
    enc = Encoder(tokenizer, recipe, eot_id, stats, text_only)
    out: dict[str, list[Example]] = {}
    source_rows: dict[str, list[int]] = {}
    conversations: dict[str, list[Conversation]] = {}
    for s in SPLITS:
        out[s], kept = enc.encode(splits[s], s)
        conversations[s] = [Conversation(r["messages"], r["answer"], r["row"]) for r in kept]
        source_rows[s] = [r["row"] for r in kept]
        stats.examples[s] = len(out[s])
        stats.lengths[s] = [len(e.input_ids) for e in out[s]]
    if not out["train"]:
        raise DataError(f"no training examples fit data.max_seq_len={recipe.data.max_seq_len} "
                        f"({stats.truncated} answers cut)", where=recipe.data.source)  # fmt: skip
    return Prepared(
        train=out["train"], val=out["val"], test=out["test"], rows=conversations, stats=stats,
        fingerprint=data_fingerprint(recipe, tokenizer, out), eot_token_id=eot_id, eot_token=eot,
        source_rows=source_rows,
    )  # fmt: skip


class Encoder:
    """Renders and tokenizes conversations; one instance per prepare() call."""

    def __init__(self, tok: Any, recipe: Recipe, eot_id: int, stats: DataStats, text_only: bool):
        self.tok, self.recipe, self.eot_id, self.stats, self.text_only = tok, recipe, eot_id, stats, text_only
        self.bos_id = tok.bos_token_id
        probe = tok("a", add_special_tokens=True)["input_ids"]
        self.adds_bos = self.bos_id is not None and bool(probe) and probe[0] == self.bos_id
        self.checked = False

    def ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of rendered texts (one batch call): the tokenizer's BOS added once, unless the text
        already starts with it; an empty text is just that BOS."""
        batch = self.tok([t for t in texts if t], add_special_tokens=False)["input_ids"] if any(texts) else []
        it = iter(batch)
        out = []
        for text in texts:
            ids = list(next(it)) if text else []
            if self.adds_bos and not (ids and ids[0] == self.bos_id):
                ids = [self.bos_id] + ids
            if self.bos_id is not None and ids[:2] == [self.bos_id, self.bos_id]:
                raise DataError(
                    f"template {self.stats.template!r} renders BOS twice (BOS in text and added again)"
                )
            out.append(ids)
        return out

    def texts(self, row: dict[str, Any], where: str) -> tuple[str, str]:
        from medkit.formats.chat_template import render

        if self.text_only:
            return "", row["answer"] + self.stats.eot_token
        msgs = row["messages"]
        think = self.think = bool(getattr(self.recipe.model, "enable_thinking", False))
        prompt = render(self.tok, msgs, generation_prompt=True, where=where, enable_thinking=think)
        full = render(
            self.tok,
            msgs + [{"role": "assistant", "content": row["answer"]}],
            generation_prompt=False,
            where=where,
            enable_thinking=think,
        )
        if not full.startswith(prompt):
            full = self._after_generation_prompt(msgs, prompt, full, where, think)
        if not full.startswith(prompt):
            raise DataError(f"template {self.stats.template!r}: the prompt rendered with add_generation_prompt is not "
                            "a prefix of the full conversation, so the answer cannot be isolated", where=where)  # fmt: skip
        return prompt, full

    def _after_generation_prompt(
        self, msgs: list[Any], prompt: str, full: str, where: str, think: bool
    ) -> str:
        """Gemma 4: the generation prompt opens the model turn with more than a past turn shows (an empty
        thought channel, thinking off). The answer is trained after the whole generation prompt, as the
        runtime prompts it: the turn's opening line, shared by both, is replaced by the prompt's."""
        from medkit.formats.chat_template import render

        base = render(self.tok, msgs, generation_prompt=False, where=where, enable_thinking=think)
        if not (prompt.startswith(base) and full.startswith(base)):
            return full
        opening, turn = prompt[len(base) :], full[len(base) :]
        k = next(
            (i for i, (a, b) in enumerate(zip(opening, turn, strict=False)) if a != b),
            min(len(opening), len(turn)),
        )
        k = opening.rfind("\n", 0, k) + 1  # whole lines only: never a piece of the answer
        return prompt + turn[k:] if k else full

    def encode(self, rows: list[dict[str, Any]], split: str) -> tuple[list[Example], list[dict[str, Any]]]:
        d, report = self.recipe.data, self.stats.rows
        examples, kept_rows = [], []
        wheres = [f"{split} row {row['row']}" for row in rows]
        texts = [self.texts(row, where) for row, where in zip(rows, wheres, strict=True)]
        prompt_ids, full_ids = self.ids([p for p, _ in texts]), self.ids([f for _, f in texts])
        for row, where, p_ids, f_ids in zip(rows, wheres, prompt_ids, full_ids, strict=True):
            if f_ids[: len(p_ids)] != p_ids:
                raise DataError(f"template {self.stats.template!r}: the prompt's tokens are not a prefix of the full "
                                "conversation's tokens (the generation prompt merges with the answer)", where=where)  # fmt: skip
            answer = f_ids[len(p_ids) :]
            ends = [i for i, t in enumerate(answer) if t == self.eot_id]
            if not ends:
                raise DataError(f"template {self.stats.template!r} does not end the answer with "
                                f"{self.stats.eot_token!r}", where=where)  # fmt: skip
            if len(ends) > 1 or (self.text_only and ends[0] != len(answer) - 1):
                report.drop(
                    f"answer contains the end-of-turn token {self.stats.eot_token}",
                    f"{where}: {row['answer'][:80]!r}",
                )
                continue
            answer = answer[: ends[0] + 1]  # what follows the end-of-turn token (a newline) is not trained
            if not self.checked:
                self._check_span(answer, row["answer"], where)
            ids = p_ids + answer
            labels = list(ids) if d.train_on_prompt else [IGNORE] * len(p_ids) + answer
            if self.adds_bos and labels[0] == self.bos_id:
                labels[0] = IGNORE
            if len(ids) > d.max_seq_len:
                self.stats.truncated += 1
                if len(p_ids) >= d.max_seq_len - 1:
                    report.drop("prompt alone exceeds max_seq_len", f"{where}: {len(p_ids)} prompt tokens")
                    continue
                if d.truncation == "drop":
                    report.drop("answer cut by max_seq_len (dropped)", f"{where}: {len(ids)} tokens")
                    continue
                ids, labels = ids[: d.max_seq_len], labels[: d.max_seq_len]
            self.stats.total_tokens += len(ids)
            self.stats.trained_tokens += sum(1 for x in labels if x != IGNORE)
            examples.append(Example(ids, labels))
            kept_rows.append(row)
        return examples, kept_rows

    def _check_span(self, answer_ids: list[int], answer: str, where: str) -> None:
        """The trained span decodes to the answer text followed by the end-of-turn token."""
        self.checked = True
        decoded = self.tok.decode(answer_ids[:-1], skip_special_tokens=False)
        got, want = "".join(decoded.split()), "".join(answer.split())
        # thinking on (Qwen3): the template opens an answer without reasoning with an empty think block
        if got != want and not (getattr(self, "think", False) and got == "<think></think>" + want):
            raise DataError(f"template {self.stats.template!r}: the trained tokens decode to {decoded[:60]!r}, "
                            f"not the answer {answer[:60]!r}", where=where)  # fmt: skip


def data_fingerprint(recipe: Recipe, tokenizer: Any, out: dict[str, list[Example]]) -> str:
    import array

    h = hashlib.sha256(json.dumps(recipe.to_dict()["data"], sort_keys=True, default=str).encode())
    h.update((tokenizer.chat_template or "").encode())
    for s in SPLITS:
        h.update(s.encode())
        for e in out[s]:
            h.update(array.array("i", e.input_ids).tobytes())
            h.update(array.array("i", e.labels).tobytes())
    return h.hexdigest()


def run_tokenizer(recipe: Recipe, saved: Path | None = None) -> Any:
    """The tokenizer a run trained with: the one saved in ``saved`` (a run's adapter/) when it holds one,
    else the base's (medkit.models.load_tokenizer), with the recipe's chat template applied."""
    from medkit.formats.chat_template import apply_template
    from medkit.models import load_tokenizer

    if saved is not None and (saved / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(saved))
    else:
        tok = load_tokenizer(recipe.model.base)
    apply_template(tok, recipe)
    return tok
