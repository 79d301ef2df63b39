"""Stage 5, runtime: Runtime over llama.cpp, the GGUF header reader, the server, chat history (no torch)."""
