"""The floor: facts and small helpers every stage asks (GGUF types and header, chat templates, files).

Nothing here imports medkit above this folder (only each other and medkit.errors); tests/test_layers.py checks.
"""
