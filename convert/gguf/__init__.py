"""GGUF writing: the model writer, the vocab, the safetensors reader, the base fingerprint."""
