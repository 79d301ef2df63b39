"""What `medkit export` asks of calibration: the importance matrix it quantizes with (computed once from
the run's data, reused, or read from a file) and the GPTQ refiner run on each freshly quantized file.

    check_needed(types, mode, calib, is_run)         # a type that needs an imatrix and none to be had: one line
    im = for_export(source, types, "auto")           # the pass (medkit.convert.quant.imatrix, or layerwise),
                                                     # written once as export/imatrix.gguf
    post = refiner(hf_dir, im.seqs, f16, im.grams)   # GPTQ's codes for each quantized file (medkit.convert.quant.gptq)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medkit.convert.quant.calib import DEFAULT_BUDGET, file_sequences, run_sequences
from medkit.convert.quant.gptq import (
    GRAM_BUDGET,
    RefineResult,
    gram_bytes,
    parts,
    refinable_shapes,
    refine,
    rounds,
)
from medkit.convert.quant.imatrix import collect
from medkit.convert.quant.imatrix_file import (
    IMATRIX_FILE,
    IMatrix,
    read_imatrix,
    record_in_run,
    source_record,
    write_imatrix,
)
from medkit.errors import ConvertError
from medkit.formats.gguf_types import BY_NAME, FLOAT_TYPES


def check_needed(
    types: list[str], mode: str, calib: Path | None, is_run: bool, gptq: bool | None = None
) -> None:
    """A type that needs an importance matrix, and none to be had, or ``--gptq`` asked for without the
    calibration data it rounds on: one line, before anything is written."""
    data = mode == "auto" and (is_run or calib is not None)
    if gptq is True and not data and any(t not in FLOAT_TYPES for t in types):
        why = f"--imatrix {mode}" if mode != "auto" else "a HF folder without --calib"
        raise ConvertError(
            f"--gptq rounds on the calibration texts themselves and {why} gives none",
            hint="drop --gptq (llama.cpp's rounding), or use --imatrix auto with a run or --calib FILE",
        )

    needs = [t for t in types if t in BY_NAME and BY_NAME[t].imatrix]
    if needs and (mode == "none" or (mode == "auto" and not is_run and calib is None)):
        why = "--imatrix none" if mode == "none" else "a HF folder without --calib"
        raise ConvertError(
            f"{needs[0]} needs an importance matrix and {why} gives none: llama.cpp's i-quants below "
            "4 bits are unusable without one",
            hint="drop --imatrix none for a run, or give --calib FILE or --imatrix PATH",
        )


def for_export(
    source: Any,
    types: list[str],
    mode: str,
    calib: Path | None = None,
    *,
    force: bool = False,
    budget: int = DEFAULT_BUDGET,
    log: Callable[[str], Any] = print,
    gptq: bool = False,
) -> IMatrix | None:
    """The importance matrix an export quantizes ``types`` with. ``mode`` auto (a run: its train split,
    written once as export/imatrix.gguf; a HF folder: ``calib`` or none), none, or an imatrix GGUF path.
    A run's run.json records it (imatrix: file, datasets, tokens, the calibrated types). ``gptq``: the
    same pass sums the Gram matrices GPTQ rounds with (a file on disk has none: computed again)."""
    quants = [t for t in types if t not in FLOAT_TYPES]
    needed = any(t in BY_NAME and BY_NAME[t].imatrix for t in quants)
    reserve = _quantized_bytes(source.hf_dir, quants) if quants and gptq else 0
    im, path = (
        _imatrix(source, mode, calib, force, budget, log, needed, gptq, reserve) if quants else (None, None)
    )
    if source.run is not None and quants:
        record = {"file": str(path), "datasets": im.datasets, "tokens": im.tokens} if im else {"file": None}
        gptq_types = [t for t in quants if rounds(t)] if im is not None and im.seqs and gptq else []
        record_in_run(
            source, {**record, "calibrated": quants if im else [], "mode": mode, "gptq": gptq_types}
        )
    return im


LAYERWISE = True  # a family medkit.convert.quant.layerwise runs is calibrated a decoder layer at a time


def _imatrix(
    source: Any,
    mode: str,
    calib: Path | None,
    force: bool,
    budget: int,
    log: Callable[[str], Any],
    needed: bool,
    gptq: bool = False,
    reserve: int = 0,
) -> tuple[IMatrix | None, Path | None]:
    if mode == "none" or (mode == "auto" and source.run is None and calib is None):
        return None, None
    if mode != "auto":
        return read_imatrix(Path(mode)), Path(mode)
    from medkit.provenance import ADAPTER_KEY, recorded_merge_hash, stale_reason

    path = Path(source.out_dir) / IMATRIX_FILE
    if path.is_file() and not force and calib is None and stale_reason(path) is None and not gptq:
        log(f"importance matrix: {path} (reused; --force computes it again)")
        return read_imatrix(path), path
    try:
        if calib is not None:
            seqs, what = file_sequences(calib, source.hf_dir, budget)
        else:
            seqs, what = run_sequences(source.run, source.hf_dir, budget)
    except ConvertError as exc:
        if calib is not None or needed:
            raise
        log(f"note: quantizing without an importance matrix ({exc.message})")  # the data moved since training
        return None, None
    from medkit.convert.gguf.writer import read_config
    from medkit.convert.quant import layerwise

    if LAYERWISE and layerwise.supports(read_config(Path(source.hf_dir))):
        im = layerwise.calibrate(source, seqs, what, gptq, log, progress_bar, reserve)
    else:
        with progress_bar() as bar:
            im = collect(source.hf_dir, seqs, datasets=[what], progress=bar, grams=gptq)
    im.seqs = seqs
    sha = recorded_merge_hash(source.hf_dir)
    im.metadata = {**({ADAPTER_KEY: sha} if sha else {}), "medkit.imatrix.tokens": str(im.tokens)}
    im.metadata.update(source_record(source.hf_dir))
    write_imatrix(im, path)
    log(f"wrote {path} ({what}, {im.tokens} tokens, {len(im.sums)} tensors) in {im.seconds:.1f}s")
    return im, path


def _quantized_bytes(hf_dir: Path, types: list[str]) -> int:
    """Bytes the quantized files of ``types`` will take (each twice: the parity check's plain twin), which
    the Gram store must leave room for on the export's disk."""
    import numpy as np

    from medkit.convert.gguf.writer import WeightReader

    reader = WeightReader(Path(hf_dir))
    n = sum(int(np.prod(reader.shape(k), dtype=np.int64)) for k in reader.names())
    return int(2 * n * sum(BY_NAME[t].bytes_per_weight or 1.0 if t in BY_NAME else 1.0 for t in types))


@contextmanager
def progress_bar(console: Any = None) -> Iterator[Callable[[int], Callable[[int], None]]]:
    """Rows and tokens/s on stderr while the importance matrix is read (shown on a terminal only)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = console or Console(stderr=True)
    cols = (TextColumn("importance matrix"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[tps]}"), TimeRemainingColumn())  # fmt: skip
    with Progress(*cols, console=console, transient=True, disable=not console.is_terminal) as bar:
        t0, seen = time.perf_counter(), [0]

        def start(total: int) -> Callable[[int], None]:
            task = bar.add_task("rows", total=total, tps="")

            def step(tokens: int) -> None:
                seen[0] += tokens
                tps = f"{seen[0] / max(1e-9, time.perf_counter() - t0):,.0f} tokens/s"
                bar.update(task, advance=1, tps=tps, refresh=True)

            return step

        yield start


def refiner(
    hf_dir: Path,
    seqs: list[list[int]],
    f16: Path,
    grams: Any = None,
    log: Callable[[str], Any] = print,
    budget: int | None = None,
) -> Callable[[Path], RefineResult]:
    """What `medkit export` runs on each freshly quantized file (before it is renamed into place).
    ``grams``: the Gram matrices the imatrix pass already summed (they fit GRAM_BUDGET), or the store the
    layer-by-layer pass wrote them to (read back whole blocks at a time, ``budget`` bytes of them); without
    them, one calibration pass over ``seqs`` per part of the model that fits, for every file."""
    if hasattr(grams, "refiner"):  # a gram_store.GramStore (read back a few blocks at a time) or a
        # layerwise.Recompute (the pass again for each file, each layer rounded as it goes)
        return grams.refiner(f16, budget or getattr(grams, "budget", None) or GRAM_BUDGET)
    shapes = refinable_shapes(f16)
    cut = [list(shapes)] if grams is not None else parts(shapes)
    if len(cut) > 1:
        log(
            f"GPTQ: the Gram matrices take {gram_bytes(shapes) / 2**30:.1f} GiB: {len(cut)} calibration passes"
        )

    factors: dict[Any, Any] = {}  # one Cholesky factor per input (and their stacks), for every file

    def run(path: Path) -> RefineResult:
        total = RefineResult(0, 0.0, {})
        for part in cut:
            got = grams if grams is not None else collect(hf_dir, seqs, grams=part).grams or {}
            total.add(refine(path, f16, got, part, factors if grams is not None else None))
        return total

    return run
