"""medkit.convert: HF -> GGUF (gguf/), quantization (quant/), LoRA -> GGUF and merges (adapter/), the export and
verify verbs and their parity checks; model families in arch/."""
