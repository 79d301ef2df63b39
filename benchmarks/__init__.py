"""`make bench`: training, export and runtime benchmarks. Each prints its own numbers and ratios."""
