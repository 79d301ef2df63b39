"""Runtime: Runtime over llama.cpp, sampling and constraints, the options chat and serve share, the server,
chat history. No torch and no TUI: it imports the floor (medkit.formats, errors), medkit.runs and
medkit.icd10 only (tests/test_layers.py)."""
