"""Reading a recipe's data source -> rows, with no network for local data and no row lost without a word.

JSON Lines are read line by line: a line that is not JSON (or not an object) is a bad line, returned with
its line number for the caller to count as a dropped row against `data.malformed_threshold`, instead of
aborting the whole load. A `.json` file may also hold one array of objects. Every other local type goes
through `datasets`' own builder, with the hub libraries in offline mode for the call (`hub_offline`):
`datasets.load_dataset` otherwise sends a HEAD request to count every load of its json/csv builders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medkit.errors import DataError
from medkit.models import hub_offline

if TYPE_CHECKING:  # the schema, for annotations only (no import cycle at run time)
    from medkit.recipe import Recipe

BUILDERS = {
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".txt": "text",
    ".arrow": "arrow",
}
SNIPPET = 80


@dataclass(frozen=True)
class BadLine:
    """A line (JSON Lines) or item (JSON array) that is not a row: ``reason`` is the drop reason."""

    number: int
    reason: str
    detail: str


class Rows:
    """JSON rows in the shape the mapping code reads from a `datasets.Dataset` (column_names, len, [i],
    iteration; absent keys read as None); ``numbers[i]`` is the 1-based line or item of row i."""

    def __init__(self, rows: list[dict[str, Any]], numbers: list[int]):
        self._rows, self.numbers = rows, numbers
        columns: dict[str, None] = {}
        for row in rows:
            columns.update(dict.fromkeys(row))
        self.column_names = list(columns)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self._rows[i]
        return {c: row.get(c) for c in self.column_names}

    def __iter__(self):
        return (self[i] for i in range(len(self._rows)))


def _snippet(raw: bytes) -> str:
    """The start of a bad line for an error message: control characters (NUL bytes ...) escaped."""
    text = raw.decode("utf-8", errors="replace").strip()
    text = "".join(c if c.isprintable() or c in " \t" else repr(c)[1:-1] for c in text)
    return text if len(text) <= SNIPPET else text[: SNIPPET - 3] + "..."


_WIDE_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16",
              b"\xfe\xff": "UTF-16"}  # fmt: skip


def _check_utf8(path: Path) -> None:
    """A UTF-16/32 file (a BOM, or NUL bytes between ASCII characters) is one line, not a NUL-filled one."""
    with path.open("rb") as fh:
        head = fh.read(4096)
    found = next((enc for bom, enc in _WIDE_BOMS.items() if head.startswith(bom)), None)
    if found is None and head.count(b"\x00") > len(head) // 8:
        found = "UTF-16 or UTF-32"
    if found:
        raise DataError(f"{path} is {found} text, not UTF-8", where="data.source", hint="save it as UTF-8")


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )


def _first_byte(path: Path) -> bytes:
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 16):
            stripped = chunk.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()
            if stripped:
                return stripped[:1]
    return b""


def read_json(path: Path) -> tuple[Rows, list[BadLine]]:
    """Rows of a JSON Lines file (or a `.json` array of objects) and the lines that are not rows."""
    _check_utf8(path)
    if _first_byte(path) == b"[":
        try:
            data = json.loads(path.read_bytes().removeprefix(b"\xef\xbb\xbf"))
        except ValueError as exc:  # JSONDecodeError, or bytes that are not text
            if path.suffix.lower() == ".json":
                at = f"{path}:{exc.lineno}" if isinstance(exc, json.JSONDecodeError) else str(path)
                msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
                raise DataError(f"{at}: not valid JSON: {msg}", where="data.source") from None
            data = None  # a .jsonl whose first line is broken: read it line by line below
        if data is not None:
            if path.suffix.lower() != ".json":
                raise DataError(f"{path} holds one JSON array, not JSON Lines (one object per line)",
                                where="data.source", hint="name it .json, or write one object per line")  # fmt: skip
            return _array_rows(path, data)
    rows, numbers, bad = [], [], []
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            if n == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.strip())
            except (ValueError, RecursionError) as exc:
                msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
                col = f" at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
                bad.append(BadLine(n, "malformed json", f"{path.name}:{n}: {msg}{col}: {_snippet(raw)}"))
                continue
            if not isinstance(value, dict):
                bad.append(BadLine(n, "malformed: line is not a JSON object",
                                   f"{path.name}:{n}: {_kind(value)}: {_snippet(raw)}"))  # fmt: skip
                continue
            rows.append(value)
            numbers.append(n)
    return Rows(rows, numbers), bad


def _array_rows(path: Path, data: list[Any]) -> tuple[Rows, list[BadLine]]:
    rows, numbers, bad = [], [], []
    for i, item in enumerate(data, 1):
        if isinstance(item, dict):
            rows.append(item)
            numbers.append(i)
        else:
            text = json.dumps(item, ensure_ascii=False)[:SNIPPET]
            bad.append(BadLine(i, "malformed: item is not a JSON object",
                               f"{path.name} item {i}: {_kind(item)}: {text}"))  # fmt: skip
    return Rows(rows, numbers), bad


def header_hint(src: str) -> str | None:
    """A CSV's first line is its header: a file without one shows its first row as the column names."""
    if Path(src).suffix.lower() == ".csv":
        return "the first line of a CSV must name its columns, e.g. question,answer"
    return None


def is_blank(path: Path) -> bool:
    """True for a file with nothing but whitespace (read in chunks: data files can be large)."""
    return _first_byte(path) == b""


def read_file(path: Path) -> tuple[Any, list[BadLine]]:
    """The rows of one local data file (a `Rows` or a `datasets.Dataset`) and its bad lines."""
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DataError(
            f"unsupported file type {path.suffix!r} of {path}: use {', '.join(BUILDERS)}", where="data.source"
        )
    if is_blank(path):  # datasets' builders fail on an empty file with a bare StopIteration
        raise DataError(f"{path} is empty: no rows to read", where="data.source")
    if builder == "json":
        return read_json(path)
    import datasets

    try:
        with hub_offline():
            return datasets.load_dataset(builder, data_files={"train": str(path)}, split="train"), []
    except (ValueError, OSError, datasets.exceptions.DatasetGenerationError) as exc:
        if builder == "csv" and _lines(path) < 2:
            raise DataError(f"{path} has no rows (a header alone?)", where="data.source") from None
        raise DataError(f"cannot read {path}: {first_line(exc)}", where="data.source") from None


def _lines(path: Path, most: int = 3) -> int:
    """Non-blank lines in ``path``, counted up to ``most``."""
    n = 0
    with path.open("rb") as fh:
        for raw in fh:
            n += bool(raw.strip())
            if n >= most:
                break
    return n


def load_split(recipe: Recipe, split: str, report: Any = None):
    """One split of the recipe's source: a `datasets.Dataset` (hub id, saved dataset, folder of data files,
    csv/parquet/txt/arrow file) or the rows of a JSON Lines / JSON file. Bad lines of a JSON file go to
    ``report`` (a `RowReport`) as malformed rows. Nothing local touches the network; only a hub id may."""
    from medkit.recipe import is_local_ref

    src, cfg = recipe.data.source, recipe.data.config_name or None
    path = Path(src).expanduser()
    local = is_local_ref(src)
    if local and not path.exists():
        raise DataError(f"{src} does not exist", where="data.source")
    if path.is_dir() and not _has_data(path):
        raise DataError(f"{src} is a folder with no data files ({', '.join(BUILDERS)}) and no saved dataset",
                        where="data.source", hint="point data.source at a data file")  # fmt: skip
    if path.is_file():
        if split != recipe.data.train_split:
            raise DataError(f"a single file has no split {split!r}", where="data.source",
                            hint="leave data.val_split/test_split empty to carve them with split_ratios")  # fmt: skip
        table, bad = read_file(path)
        for line in bad if report is not None else ():
            report.source_rows += 1
            report.drop(line.reason, line.detail)
        return table
    import datasets

    try:
        with hub_offline(local):
            if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
                return _saved_split(datasets.load_from_disk(str(path)), recipe, split)
            return datasets.load_dataset(src, cfg, split=split)
    except DataError:
        raise
    except (
        ValueError,
        OSError,
        datasets.exceptions.DatasetGenerationError,
    ) as exc:  # OSError: missing, offline
        raise DataError(
            f"cannot load split {split!r} of {src}: {first_line(exc)}", where="data.source"
        ) from None


def _has_data(folder: Path) -> bool:
    """A saved dataset, or at least one data file of a known type somewhere inside."""
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        return True
    return any(p.suffix.lower() in BUILDERS and p.is_file() for p in folder.rglob("*"))


def _saved_split(saved: Any, recipe: Recipe, split: str):
    import datasets

    src = recipe.data.source
    if isinstance(saved, datasets.DatasetDict):
        if split not in saved:
            raise DataError(f"no split {split!r} in {src}; it has {', '.join(saved)}", where="data.source")
        return saved[split]
    if split != recipe.data.train_split:
        raise DataError(f"{src} holds one split, not {split!r}", where="data.source")
    return saved


def first_line(exc: BaseException) -> str:
    """The first line of an error, or of its cause where the library only says that something failed."""
    import datasets

    if isinstance(exc, datasets.exceptions.DatasetGenerationError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]
