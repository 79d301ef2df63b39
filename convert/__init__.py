"""medkit.convert: HF -> GGUF, LoRA -> GGUF, quantization and parity checks."""
