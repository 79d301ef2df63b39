"""The recipe tests reuse the data tests' tiny tokenizers."""

from tests.data.conftest import load_tok, tokenizer_dirs  # noqa: F401
