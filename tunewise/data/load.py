"""Read dataset files row by row: JSONL, JSON arrays, CSV/TSV and Parquet. Every row comes out as a `RawRow`
holding either the parsed dict or a `RowError` (file, line, field, reason), so a bad row is quarantined,
never a crash and never silently skipped. Files are streamed (JSON arrays excepted: see `_json_array`)."""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tunewise.errors import DataError

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
            ".parquet": "parquet"}
_SURROGATE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by errors="surrogateescape"


@dataclass
class Rejected:
    """A quarantined row: where it was and why it was refused."""

    file: str
    line: int
    field: str
    reason: str

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "field": self.field, "reason": self.reason}


class RowError(ValueError):
    def __init__(self, field: str, reason: str, kind: str | None = None):
        super().__init__(reason)
        # `kind` is the reason without row-specific details: what the card counts rows by.
        self.field, self.reason, self.kind = field, reason, kind or reason

    def __reduce__(self):  # picklable with all three fields: rows travel to worker processes and back
        return RowError, (self.field, self.reason, self.kind)


@dataclass
class RawRow:
    source: str
    line: int  # 1-based line in the file (JSON arrays: the element's first line; Parquet: the row number)
    row: dict | RowError


def _not_utf8(raw: bytes, err: UnicodeDecodeError) -> RowError:
    return RowError("(line)", f"not UTF-8: byte 0x{raw[err.start]:02x} at position {err.start}", "not UTF-8")


def _jsonl(path: Path) -> Iterator[RawRow]:
    # Binary lines so one bad byte costs one row, not the file; CRLF and a BOM on line 1 are tolerated.
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                row = json.loads(text)
            except UnicodeDecodeError as err:
                yield RawRow(str(path), lineno, _not_utf8(raw, err))
                continue
            except json.JSONDecodeError as err:
                yield RawRow(str(path), lineno, RowError("(line)", f"malformed JSON: {err.msg} (column {err.colno})",
                                                         "malformed JSON"))
                continue
            yield RawRow(str(path), lineno, _as_object(row, "(line)"))


def _as_object(row: object, where: str) -> dict | RowError:
    """A parsed JSON value as a row: an object passes, anything else is a wrong-shape error at `where`."""
    if isinstance(row, dict):
        return row
    return RowError(where, f"wrong shape: expected a JSON object, got {type(row).__name__}",
                    "wrong shape: not a JSON object")


def _json_array(path: Path) -> Iterator[RawRow]:
    """A JSON array of objects, element by element with line numbers. `json` has no incremental parser, so
    the file is read whole (JSON arrays cannot be streamed without one); raw_decode walks the elements, which
    keeps every complete element of a truncated file and gives each its line."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        yield RawRow(str(path), line, RowError("(file)", f"not UTF-8: byte 0x{raw[err.start]:02x}; the JSON "
                                                          "array cannot be read past it", "not UTF-8"))
        return
    dec, pos, n = json.JSONDecoder(), 0, len(text)
    ws = re.compile(r"[\s,]*")
    pos = ws.match(text, pos).end()
    if pos < n and text[pos] != "[":
        yield from _jsonl(path)  # a .json file holding JSON lines
        return
    pos, lineno, counted = pos + 1, 1, 0
    while True:
        pos = ws.match(text, pos).end()
        lineno += text.count("\n", counted, pos)
        counted = pos
        if pos >= n:
            yield RawRow(str(path), lineno, RowError("(file)", "malformed JSON: truncated array (no closing ])",
                                                     "malformed JSON"))
            return
        if text[pos] == "]":
            return
        try:
            row, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            yield RawRow(str(path), err.lineno, RowError("(item)", f"malformed JSON: {err.msg} (column "
                                                                  f"{err.colno}); rest of the array unreadable",
                                                         "malformed JSON"))
            return
        yield RawRow(str(path), lineno, _as_object(row, "(item)"))
        pos = end


def _csv(path: Path, delimiter: str) -> Iterator[RawRow]:
    csv.field_size_limit(sys.maxsize)  # a 10 MB cell is a row to quarantine for length, not a crash
    # surrogateescape keeps non-UTF-8 bytes as markers, so the bad row (not the whole file) is refused.
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        start = reader.line_num + 1
        for values in reader:
            line, start = start, reader.line_num + 1
            if not any(v.strip() for v in values):
                continue
            row: dict | RowError = dict(zip(header, values, strict=False))
            if len(values) > len(header):
                row = RowError("(row)", f"wrong shape: {len(values)} values for {len(header)} header columns",
                               "wrong shape: more values than header columns")
            elif len(values) < len(header):
                missing = header[len(values)]
                row = RowError(missing, f"missing field: row has {len(values)} of {len(header)} columns",
                               "missing field")
            elif any(_SURROGATE.search(v) for v in values):
                col = next(h for h, v in zip(header, values, strict=True) if _SURROGATE.search(v))
                row = RowError(col, "not UTF-8: bytes that are not valid UTF-8 in this cell", "not UTF-8")
            yield RawRow(str(path), line, row)


def _parquet(path: Path) -> Iterator[RawRow]:
    import pyarrow as pa  # heavy
    import pyarrow.parquet as pq  # heavy

    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{path}: not a readable Parquet file ({err})") from None
    line = 0
    for batch in pf.iter_batches(batch_size=2048):
        for row in batch.to_pylist():
            line += 1
            yield RawRow(str(path), line, row)


def file_kind(path: Path) -> str:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} "
                        f"(use {', '.join(sorted(SUFFIXES))})")
    return kind


def iter_rows(path: Path) -> Iterator[RawRow]:
    """Every row of one file, in order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    kind = file_kind(path)
    with path.open("rb") as fh:
        head = fh.read(2)
    if head in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError(f"{path}: the file is UTF-16; save it as UTF-8 and try again")
    if kind == "jsonl":
        return _jsonl(path)
    if kind == "json":
        return _json_array(path)
    if kind == "parquet":
        return _parquet(path)
    return _csv(path, "\t" if kind == "tsv" else ",")
