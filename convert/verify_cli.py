"""`medkit verify`: GGUF files checked against their HF model (the parity check: medkit.convert.verify)."""

from __future__ import annotations

from pathlib import Path

import click

from medkit.convert.verify import gguf_type, held_out_texts, progress_bar, read_texts, report, verify
from medkit.errors import ConvertError


@click.command(name="verify")
@click.argument("ggufs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--against", "hf_dir", required=True, type=click.Path(path_type=Path), help="HF model folder.")
@click.option("--texts", "texts_file", type=click.Path(path_type=Path), help="Extra texts, one per line.")
@click.option(
    "--threshold", default=0.99, show_default=True, help="Top-1 agreement required for f32/f16/bf16."
)
@click.option("--threads", default=2, show_default=True)
@click.option("--trust-remote-code", is_flag=True, help="Allow the HF model's own code to run.")
def command(
    ggufs: tuple[Path, ...],
    hf_dir: Path,
    texts_file: Path | None,
    threshold: float,
    threads: int,
    trust_remote_code: bool,
) -> None:
    """Check GGUF files against their HF model: next-token agreement, logits, perplexity, tokenization."""
    for g in ggufs:
        if not g.exists():
            raise ConvertError("no such GGUF file", where=str(g))
        gguf_type(g)  # a truncated, random or text file fails here, in one line, before any model loads
    if not (hf_dir / "config.json").is_file():
        raise ConvertError("not a Hugging Face model folder (no config.json)", where=str(hf_dir))
    texts = held_out_texts()
    if texts_file is not None:
        texts += read_texts(texts_file)
    with progress_bar() as progress:
        results = verify(
            list(ggufs),
            hf_dir,
            texts=texts,
            threshold=threshold,
            trust_remote_code=trust_remote_code,
            threads=threads,
            progress=progress,
        )
    report(results)
