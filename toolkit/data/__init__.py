"""Stage 1, data: rows from a source (rows, files, checks), token ids + labels (tokens), preference pairs, batches;
`medkit data` (verb). Chat templates: medkit.formats.chat_template."""
