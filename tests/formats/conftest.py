"""The floor's tests read GGUFs and tokenizers the convert and data tests build: the same fixtures."""

from tests.convert.conftest import tiny_gguf  # noqa: F401
from tests.data.conftest import load_tok, tokenizer_dirs  # noqa: F401
