"""Stage 1, data: rows from a source (rows, files), chat templates, token ids + labels (tokens), batches."""
