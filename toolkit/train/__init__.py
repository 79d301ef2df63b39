"""Stage 2, train: the verb, the loop, the model/precision plan, loss, optimizer, checkpoints, FLOPs, run records."""
