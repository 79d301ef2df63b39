"""Structured answers: OpenAI's ``response_format`` and ICD-10 constraints as one GBNF grammar, parsed by
llama.cpp before any sampling (a grammar it cannot parse crashes the process when sampling starts).

    {"type": "text"}                                   no grammar
    {"type": "json_object"}                            any JSON object
    {"type": "json_object", "schema": {...}}           llama-cpp-python's extension: that schema
    {"type": "json_schema", "json_schema": {"name": "...", "schema": {...}, "strict": true}}   OpenAI's

A schema is turned into GBNF by llama-cpp-python's converter, with one addition: a string whose schema
says ``"format": "icd10-cm"`` is a billable ICD-10-CM code (the constraint's trie grammar, quoted). A
keyword the converter would silently ignore (``minimum``, ``uniqueItems``, ``"format": "email"``...) is
refused, naming where it is, instead of being promised and not enforced. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from medkit.runtime import constrain
from medkit.runtime.constrain import ConstraintError

ICD_FORMAT = "icd10-cm"  # "format" of a JSON string field that must be an ICD-10-CM code
FORMATS = ("date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5", ICD_FORMAT)
ENFORCED = {  # keywords the converter turns into grammar
    "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems",
    "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "pattern",
    "format", "minLength", "maxLength",
}  # fmt: skip
ANNOTATIONS = {  # keywords that describe and constrain nothing
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "readOnly",
    "writeOnly", "deprecated", "strict", "name",
}  # fmt: skip
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "$defs", "definitions")


class SchemaError(ConstraintError):
    """A JSON schema (or grammar) that cannot be enforced during decoding. ``param`` names where."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def _walk(schema: Any, where: str) -> None:
    """Refuse what would not be enforced, naming the first keyword's path."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise SchemaError(f"{where}: a schema must be an object (got {type(schema).__name__})", where)
    for key, value in schema.items():
        at = f"{where}.{key}"
        if key in ANNOTATIONS:
            continue
        if key not in ENFORCED:
            raise SchemaError(f"{at}: the keyword '{key}' cannot be enforced during decoding", at)
        if key == "format" and value not in FORMATS:
            raise SchemaError(f"{at}: format {value!r} cannot be enforced (known: {', '.join(FORMATS)})", at)
        if key == "pattern" and not (
            isinstance(value, str) and value.startswith("^") and value.endswith("$")
        ):
            raise SchemaError(f"{at}: a pattern must be anchored, '^...$'", at)
        if key in _SCHEMA_MAPS:
            if not isinstance(value, dict):
                raise SchemaError(f"{at} must be an object of schemas", at)
            for name, sub in value.items():
                _walk(sub, f"{at}.{name}")
        elif key in _SCHEMA_LISTS:
            if not isinstance(value, list):
                raise SchemaError(f"{at} must be a list of schemas", at)
            for i, sub in enumerate(value):
                _walk(sub, f"{at}[{i}]")
        elif key in ("items", "additionalProperties") and isinstance(value, (dict, bool)):
            _walk(value, at)
        elif key == "items" and isinstance(value, list):
            for i, sub in enumerate(value):
                _walk(sub, f"{at}[{i}]")


def _converter(codes: str):
    from llama_cpp.llama_grammar import SchemaConverter

    class Converter(SchemaConverter):
        """llama-cpp-python's converter plus the ICD-10-CM string format."""

        def visit(self, schema, name):
            if isinstance(schema, dict) and schema.get("format") == ICD_FORMAT:
                if constrain.RULE not in self._rules:
                    for line in constrain.code_grammar(codes).splitlines():
                        if "::=" in line and not line.startswith("#"):
                            rule, _, body = line.partition("::=")
                            self._rules[rule.strip()] = body.strip()
                return self._add_rule(name or "root", f'"\\"" {constrain.RULE} "\\"" space')
            return super().visit(schema, name)

    return Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


def schema_grammar(schema: Any, where: str, codes: str = "icd10") -> str:
    """GBNF for ``schema`` (checked first); ``codes`` is the code set behind ``format: icd10-cm``."""
    _walk(schema, where)
    converter = _converter(codes)
    try:
        resolved = converter.resolve_refs(schema, "medkit")
        converter.visit(resolved, "")
    except (AssertionError, KeyError, ValueError, TypeError, RecursionError) as exc:
        raise SchemaError(
            f"{where}: the schema cannot be turned into a grammar ({exc})"[:300], where
        ) from None
    return converter.format_grammar()


def response_format_grammar(rf: Any, where: str = "response_format", codes: str = "icd10") -> str | None:
    """The grammar ``rf`` asks for (None for text); SchemaError naming the part that is wrong."""
    if rf is None:
        return None
    if not isinstance(rf, dict):
        raise SchemaError(f"{where} must be an object with a 'type'", where)
    kind = rf.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = rf.get("schema", {"type": "object"})
        return schema_grammar(schema, f"{where}.schema", codes)
    if kind == "json_schema":
        spec = rf.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise SchemaError(f"{where}.json_schema.schema is required", f"{where}.json_schema.schema")
        return schema_grammar(spec["schema"], f"{where}.json_schema.schema", codes)
    raise SchemaError(
        f"{where}.type must be 'text', 'json_object' or 'json_schema' (got {json.dumps(kind)[:40]})",
        f"{where}.type",
    )


def parses(vocab: Any, grammar: str) -> bool:
    """Whether llama.cpp parses ``grammar`` (root rule 'root') for this vocabulary."""
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def blame(vocab: Any, schema: Any, where: str, codes: str = "icd10") -> str:
    """The deepest part of ``schema`` whose own grammar llama.cpp cannot parse (its keyword's path)."""
    if isinstance(schema, dict):
        subs: list[tuple[Any, str]] = []
        for key in _SCHEMA_MAPS:
            subs += [(s, f"{where}.{key}.{n}") for n, s in (schema.get(key) or {}).items()]
        for key in _SCHEMA_LISTS:
            subs += [(s, f"{where}.{key}[{i}]") for i, s in enumerate(schema.get(key) or [])]
        if isinstance(schema.get("items"), dict):
            subs.append((schema["items"], f"{where}.items"))
        for sub, at in subs:
            try:
                ok = parses(vocab, schema_grammar(sub, at, codes))
            except ConstraintError:
                ok = True  # the $ref of a part alone: judged with its parent
            if not ok:
                return blame(vocab, sub, at, codes)
        for key in ("pattern", "format", "enum", "const"):
            if key in schema:
                return f"{where}.{key}"
    return where


_PARSED: dict[str, None] = {}  # digests of grammars llama.cpp parsed (the last 64): not parsed twice


def checked(vocab: Any, grammar: str, *, param: str, schema: Any = None, codes: str = "icd10") -> str:
    """``grammar`` once llama.cpp has parsed it; else SchemaError naming the schema keyword (or param)."""
    digest = hashlib.sha256(grammar.encode("utf-8")).hexdigest()
    if digest in _PARSED:
        return grammar
    if parses(vocab, grammar):
        _PARSED[digest] = None
        while len(_PARSED) > 64:
            del _PARSED[next(iter(_PARSED))]
        return grammar
    if schema is not None:
        at = blame(vocab, schema, param, codes)
        raise SchemaError(f"{at}: llama.cpp cannot parse the grammar made from this keyword", at)
    raise SchemaError(f"{param}: not a GBNF grammar llama.cpp can parse", param)


def grammar_for(
    vocab: Any, *, response_format: Any = None, grammar: str | None = None, constrain_spec: str | None = None
) -> str | None:
    """The one grammar an answer is sampled with, parsed by llama.cpp: ``response_format`` (JSON) first,
    else a GBNF ``grammar``, else the ICD-10 constraint; None when nothing constrains the answer. An
    icd10 constraint also picks the code set of ``format: icd10-cm`` fields inside a JSON answer."""
    codes = constrain_spec or "icd10"
    text = response_format_grammar(response_format, codes=codes)
    if text is not None:
        schema = response_format.get("schema", {"type": "object"})
        if response_format.get("type") == "json_schema":
            schema, where = response_format["json_schema"]["schema"], "response_format.json_schema.schema"
        else:
            where = "response_format.schema"
        return checked(vocab, text, param=where, schema=schema, codes=codes)
    if grammar is not None:
        if not isinstance(grammar, str) or not grammar.strip():
            raise SchemaError("grammar must be a non-empty GBNF text", "grammar")
        return checked(vocab, grammar, param="grammar")
    if constrain_spec is not None:
        return checked(vocab, constrain.answer_grammar(constrain_spec), param="constrain")
    return None
