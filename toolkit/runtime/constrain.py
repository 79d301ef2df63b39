"""Answers that can only be ICD-10-CM codes: the code set as a minimized prefix trie, and its GBNF grammar.

    constrain="icd10"            every billable code of the pinned release (medkit.icd10)
    constrain="icd10:J"          the billable codes under a chapter letter or category prefix (J, E11, J45.9)
    constrain="icd10:codes.txt"  the codes listed in a file (one per line, # comments), each checked

The codes go into a trie whose equal subtrees are merged (a minimal acyclic automaton: 74,719 codes, 3,059
thousand states), written as GBNF: one rule per state, one alternative per target state with the
characters leading there as one class. llama.cpp's sampler then admits exactly those codes followed by
the end-of-turn token, a token at a time, with no 70k-way alternation. The grammar text is compiled once
and cached on disk by release and code set (``$MEDKIT_CACHE/constrain/``): it does not depend on the
tokenizer, which llama.cpp matches against characters itself; whether a tokenizer can spell the codes is
checked per model (``check_spelling``). The automaton also drives the transformers-side constraint of
`medkit eval` (medkit.eval.constrained). Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from medkit import icd10
from medkit.errors import MedkitError
from medkit.formats.files import cache_root

FORMAT = 1  # bump when the grammar text changes for the same codes
RULE = "icd10"  # rule-name prefix of the code grammar (unique inside a JSON-schema grammar)
ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.")
_PREFIX = re.compile(r"^[A-Za-z][0-9A-Za-z]{0,2}(\.?[0-9A-Za-z]{0,4})?$")


class ConstraintError(MedkitError):
    """A constraint cannot be built or used as asked (unknown spec, bad code file, unspellable codes)."""


@dataclass(frozen=True)
class CodeSet:
    """The codes a constraint admits. ``key`` names it in the disk cache (release + what was asked)."""

    spec: str
    codes: tuple[str, ...]
    release: str
    key: str


# ---- which codes -----------------------------------------------------------------------------------


def parse_spec(spec: str | None) -> str | None:
    """``spec`` checked for its shape (no code table needed): None/'' means no constraint."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none", "off")):
        return None
    if not isinstance(spec, str) or not (spec.strip() == "icd10" or spec.strip().startswith("icd10:")):
        raise ConstraintError(
            f"unknown constraint {spec!r}: use 'icd10', 'icd10:<prefix>' (e.g. icd10:J) or 'icd10:<file>'"
        )
    return spec.strip()


def code_set(spec: str) -> CodeSet:
    """The codes ``spec`` admits, each a billable code of the pinned release (ConstraintError if not)."""
    spec = parse_spec(spec) or ""
    release = icd10.release()
    arg = spec.partition(":")[2].strip()
    if not arg:
        return CodeSet(spec, icd10.billable_codes(), release, f"all-{release}")
    path = Path(arg).expanduser()
    if path.is_file() or not _PREFIX.match(arg):
        codes, digest = _codes_from_file(path, spec)
        return CodeSet(spec, codes, release, f"file-{digest}-{release}")
    want = icd10.undotted(arg)
    codes = tuple(c for c in icd10.billable_codes() if icd10.undotted(c).startswith(want))
    if not codes:
        raise ConstraintError(
            f"constraint {spec!r}: no billable ICD-10-CM code starts with {arg!r} ({release})"
        )
    return CodeSet(spec, codes, release, f"prefix-{want}-{release}")


def _codes_from_file(path: Path, spec: str) -> tuple[tuple[str, ...], str]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConstraintError("no such ICD-10 code file", where=str(path)) from None
    except OSError as exc:
        raise ConstraintError(f"cannot read the code file ({exc.strerror})", where=str(path)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConstraintError("the code file is not UTF-8 text", where=str(path)) from None
    codes: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        for item in re.split(r"[\s,;]+", line.split("#", 1)[0].strip()):
            if not item:
                continue
            if not icd10.is_billable(item):
                near = ", ".join(icd10.nearest_codes(item))
                raise ConstraintError(
                    f"{item!r} is not a billable ICD-10-CM code ({icd10.release()})",
                    where=f"{path}:{n}",
                    hint=f"nearest: {near}" if near else None,
                )
            codes.add(icd10.dotted(item))
    if not codes:
        raise ConstraintError("the code file lists no codes", where=str(path))
    ordered = tuple(sorted(codes))
    return ordered, hashlib.sha256("\n".join(ordered).encode()).hexdigest()[:16]


# ---- the automaton ---------------------------------------------------------------------------------


@dataclass
class Automaton:
    """A minimal acyclic automaton: ``edges[s]`` maps a character to the next state; state 0 starts."""

    edges: list[dict[str, int]]
    final: list[bool]

    def walk(self, state: int, text: str) -> int:
        """The state after reading ``text`` from ``state``; -1 when ``text`` leaves the code set."""
        for ch in text:
            state = self.edges[state].get(ch, -1)
            if state < 0:
                return -1
        return state

    def accepts(self, text: str) -> bool:
        state = self.walk(0, text)
        return state >= 0 and self.final[state]


def build_automaton(codes: Iterable[str]) -> Automaton:
    """The trie of ``codes`` with equal subtrees merged (bottom-up, by their signature)."""
    trie: list[dict[str, int]] = [{}]
    ends: list[bool] = [False]
    for code in codes:
        node = 0
        for ch in code:
            nxt = trie[node].get(ch)
            if nxt is None:
                nxt = len(trie)
                trie[node][ch] = nxt
                trie.append({})
                ends.append(False)
            node = nxt
        ends[node] = True
    register: dict[tuple, int] = {}
    edges: list[dict[str, int]] = []
    final: list[bool] = []
    canon = [0] * len(trie)
    # children have higher ids than their parent in this trie: reversed id order is post-order enough
    for node in range(len(trie) - 1, -1, -1):
        out = {ch: canon[child] for ch, child in trie[node].items()}
        sig = (ends[node], tuple(sorted(out.items())))
        state = register.get(sig)
        if state is None:
            state = register[sig] = len(edges)
            edges.append(out)
            final.append(ends[node])
        canon[node] = state
    # renumber so the start is 0 and every state comes before the states it leads to
    order = list(range(len(edges) - 1, -1, -1))
    new = {old: i for i, old in enumerate(order)}
    return Automaton(
        edges=[{ch: new[t] for ch, t in edges[old].items()} for old in order],
        final=[final[old] for old in order],
    )


def _char_class(chars: list[str]) -> str:
    if len(chars) == 1:
        return f'"{chars[0]}"'
    chars = sorted(chars)
    parts, i = [], 0
    while i < len(chars):
        j = i
        while j + 1 < len(chars) and ord(chars[j + 1]) == ord(chars[j]) + 1:
            j += 1
        parts.append(chars[i] if i == j else f"{chars[i]}-{chars[j]}" if j > i + 1 else chars[i] + chars[j])
        i = j + 1
    return "[" + "".join(parts) + "]"


def to_gbnf(auto: Automaton, name: str = RULE) -> str:
    """GBNF rules ``{name}-s<N>``; ``{name}`` is the code itself (no root rule: callers add theirs)."""
    lines = [f"{name} ::= {name}-s0"]
    for state, out in enumerate(auto.edges):
        by_target: dict[int, list[str]] = {}
        for ch, target in out.items():
            by_target.setdefault(target, []).append(ch)
        alts = []
        for target, chars in sorted(by_target.items()):
            leaf = not auto.edges[target]  # the end of a code: nothing follows
            alts.append(_char_class(chars) + ("" if leaf else f" {name}-s{target}"))
        if not alts:
            continue
        body = " | ".join(alts)
        lines.append(f"{name}-s{state} ::= " + (f"( {body} )?" if auto.final[state] else body))
    return "\n".join(lines) + "\n"


# ---- compiled once, cached -------------------------------------------------------------------------


def cache_dir() -> Path:
    return cache_root() / "constrain"


@lru_cache(maxsize=8)
def automaton(spec: str) -> Automaton:
    return build_automaton(code_set(spec).codes)


def _key(spec: str) -> str:
    """The cache key without building the code set: release + spec (+ the file's bytes for a file)."""
    spec = parse_spec(spec) or ""
    arg = spec.partition(":")[2].strip()
    path = Path(arg).expanduser()
    extra = ""
    if arg and (path.is_file() or not _PREFIX.match(arg)):
        try:
            extra = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        except OSError:
            extra = "unreadable"  # code_set raises the one-line error
    text = f"{FORMAT}|{icd10.release()}|{icd10.undotted(arg) if not extra else extra}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@lru_cache(maxsize=8)
def code_grammar(spec: str) -> str:
    """The GBNF rules of ``spec``'s code set: from the disk cache, else compiled and cached."""
    path = cache_dir() / f"icd10-{_key(spec)}.gbnf"
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        pass
    text = f"# {spec} ({icd10.release()})\n" + to_gbnf(automaton(spec))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache costs the next process one compile, nothing more
    return text


def answer_grammar(spec: str) -> str:
    """A whole answer that is one code: ``root ::= icd10``."""
    return f"root ::= {RULE}\n" + code_grammar(spec)


# ---- the model's side ------------------------------------------------------------------------------


def check_spelling(
    piece_of: Callable[[str], list[str]],
    where: str | None = None,
    vocab: Callable[[], Iterable[str]] | None = None,
) -> None:
    """Every character a code uses must be one token on its own, or llama.cpp could never finish a code:
    ConstraintError naming the characters. ``piece_of(ch)``: the pieces of ``ch`` tokenized alone;
    ``vocab()``: every token's text, asked only for what that misses (a SentencePiece model puts its space
    marker before a lone character, '▁A', yet has the bare piece 'A' or the byte token <0x41>)."""
    missing = [ch for ch in sorted(ALPHABET) if piece_of(ch) != [ch]]
    if missing and vocab is not None:
        singles = {piece for piece in vocab() if len(piece) == 1}
        missing = [ch for ch in missing if ch not in singles]
    if missing:
        raise ConstraintError(
            f"this model's tokenizer cannot spell ICD-10 codes: no token for {' '.join(missing)!r}",
            where=where,
        )
