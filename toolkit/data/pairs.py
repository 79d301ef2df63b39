"""Preference pairs -> token ids and labels for both answers (train.method = dpo / orpo).

Pair rows (``prompt`` or ``messages``, ``chosen``, ``rejected``) are read, mapped, cleaned, de-duplicated
and split by medkit.data.rows exactly like SFT rows (layout ``preference``: the chosen answer is the row's
answer, so eval, calibration and the merge report read a pair recipe like any other). Here both answers
are rendered through the chat template after the same prompt and tokenized by medkit.data.tokens' encoder:
prompt masked, the end-of-turn token trained, truncation counted. A pair is kept only when both of its
sides are; the prompt's tokens are the same in both (checked).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medkit.data.rows import SPLITS, RowReport, load_rows
from medkit.data.tokens import IGNORE, DataStats, Encoder, Example, data_fingerprint
from medkit.errors import DataError

if TYPE_CHECKING:  # the schema, for annotations only (no import cycle at run time)
    from medkit.recipe import Recipe


@dataclass
class Pair:
    chosen: Example
    rejected: Example
    row: int = 0  # 1-based row number in its source split

    @property
    def length(self) -> int:
        """Tokens of both sequences: what a batch of pairs costs."""
        return len(self.chosen.input_ids) + len(self.rejected.input_ids)


@dataclass
class PreparedPairs:
    train: list[Pair]
    val: list[Pair]
    test: list[Pair]
    stats: DataStats
    fingerprint: str
    eot_token_id: int
    eot_token: str = ""

    def split(self, name: str) -> list[Pair]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def prepare_pairs(recipe: Recipe, tokenizer: Any, rows: tuple[Any, RowReport] | None = None) -> PreparedPairs:
    """Load (or take ``rows``, from `load_rows`) the recipe's pair rows and tokenize both sides of each."""
    from medkit.formats.chat_template import apply_template, end_of_turn_token, template_name

    splits, report = rows or load_rows(recipe)
    if report.layout != "preference":
        raise DataError(
            f"train.method = {recipe.train.method!r} needs preference pairs (columns prompt or messages, "
            f"chosen, rejected); {recipe.data.source} reads as layout {report.layout!r} "
            f"(columns: {', '.join(report.columns)})",
            where="data.source",
            hint="set data.format = 'preference' and data.fields to map the columns",
        )
    apply_template(tokenizer, recipe)
    eot = end_of_turn_token(tokenizer)
    eot_id = tokenizer.convert_tokens_to_ids(eot)
    stats = DataStats(rows=report, template=template_name(recipe), eot_token=eot)
    enc = Encoder(tokenizer, recipe, eot_id, stats, text_only=False)
    out: dict[str, list[Pair]] = {}
    for s in SPLITS:
        out[s] = _encode_pairs(enc, splits[s], s, report)
        stats.examples[s] = len(out[s])
        stats.lengths[s] = [p.length for p in out[s]]
    if not out["train"]:
        raise DataError(
            f"no training pairs fit data.max_seq_len={recipe.data.max_seq_len} ({stats.truncated} answers cut)",
            where=recipe.data.source,
        )
    flat = {s: [e for p in out[s] for e in (p.chosen, p.rejected)] for s in SPLITS}
    return PreparedPairs(
        train=out["train"], val=out["val"], test=out["test"], stats=stats,
        fingerprint=data_fingerprint(recipe, tokenizer, flat), eot_token_id=eot_id, eot_token=eot,
    )  # fmt: skip


def _encode_pairs(enc: Encoder, rows: list[dict[str, Any]], split: str, report: RowReport) -> list[Pair]:
    """Both sides of each row through the SFT encoder; a pair whose either side was dropped is dropped."""
    if not rows:
        return []
    keyed = [dict(r, _key=k) for k, r in enumerate(rows)]
    chosen, kept_c = enc.encode(keyed, split)
    rejected, kept_r = enc.encode([dict(r, answer=r["rejected"]) for r in keyed], split)
    by_key_r = {r["_key"]: e for r, e in zip(kept_r, rejected, strict=True)}
    pairs = []
    kept_keys = set()
    for r, c in zip(kept_c, chosen, strict=True):
        rj = by_key_r.get(r["_key"])
        if rj is None:
            continue
        kept_keys.add(r["_key"])
        if (
            _prompt_len(c) != _prompt_len(rj)
            or c.input_ids[: _prompt_len(c)] != rj.input_ids[: _prompt_len(rj)]
        ):
            raise DataError(
                "the chosen and rejected answers change the prompt's tokens (the template merges them)",
                where=f"{split} row {r['row']}",
            )
        pairs.append(Pair(c, rj, r["row"]))
    one_sided = len(set(by_key_r) | {r["_key"] for r in kept_c}) - len(kept_keys)
    for _ in range(one_sided):
        report.drop("pair with one side dropped", f"{split}: the other side was kept")
    return pairs


def _prompt_len(e: Example) -> int:
    """Leading masked tokens (the prompt) of an example."""
    for i, label in enumerate(e.labels):
        if label != IGNORE and i > 0:
            return i
    return len(e.labels)
