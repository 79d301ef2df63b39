"""Adapters: LoRA -> GGUF (and its base), adapter + base -> merged HF folder, adapters over a shared base."""
