"""Stage 4, eval: the verb, scoring of HF models and GGUFs, the metric registry, the report."""
