"""Read dataset files into canonical records, row by row. A bad row is quarantined with its file, line,
field and reason; it never crashes the run and never vanishes."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from tunewise.data.records import Record, classification_record
from tunewise.errors import DataError

ROLES = {"system", "user", "assistant"}


@dataclass
class Rejected:
    file: str
    line: int
    field: str
    reason: str

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "field": self.field, "reason": self.reason}


class RowError(ValueError):
    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


def _text(row: dict, key: str) -> str:
    if key not in row or row[key] is None:
        raise RowError(key, "missing field")
    value = row[key]
    if not isinstance(value, str):
        raise RowError(key, f"expected text, got {type(value).__name__}")
    if not value.strip():
        raise RowError(key, "empty")
    return value


def _messages(row: dict) -> list[dict[str, str]]:
    msgs = row["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise RowError("messages", "expected a non-empty list")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise RowError(f"messages[{i}]", "expected an object with role and content")
        role = m.get("role")
        if role not in ROLES:
            raise RowError(f"messages[{i}].role", f"unknown role {role!r}")
        out.append({"role": role, "content": _text(m, "content")})
    if out[-1]["role"] != "assistant":
        raise RowError("messages", "last turn must be the assistant's answer")
    return out


def row_to_record(row: dict, text_field: str, label_field: str, meta: dict) -> Record:
    """Detect the row's format by its keys and build the canonical record."""
    if "messages" in row:
        return Record(_messages(row), label=row.get(label_field), meta=meta)
    if "prompt" in row and "completion" in row:
        msgs = [{"role": "user", "content": _text(row, "prompt")},
                {"role": "assistant", "content": _text(row, "completion")}]
        return Record(msgs, meta=meta)
    if text_field in row or label_field in row:
        text, label = _text(row, text_field), row.get(label_field)
        if isinstance(label, (int, float)) and not isinstance(label, bool):
            label = str(label)
        label = _text({label_field: label}, label_field)
        extra = {k: v for k, v in row.items() if k not in (text_field, label_field)}
        return classification_record(text, label.strip(), {**meta, **extra})
    raise RowError("(row)", f"unrecognised format: keys {sorted(row)[:6]}")


def _rows(path: Path):
    """Yield (line_number, row dict or RowError)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        with path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw.decode("utf-8-sig"))
                except UnicodeDecodeError:
                    yield lineno, RowError("(line)", "not UTF-8")
                    continue
                except json.JSONDecodeError as err:
                    yield lineno, RowError("(line)", f"malformed JSON: {err.msg}")
                    continue
                yield lineno, row if isinstance(row, dict) else RowError("(line)", "expected a JSON object")
    elif suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            for i, row in enumerate(reader, start=2):  # line 1 is the header
                if None in row:
                    yield i, RowError("(row)", "more values than header columns")
                else:
                    yield i, {k: v for k, v in row.items()}
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r} (use .jsonl or .csv/.tsv)")


def load_files(paths: list[Path], text_field: str, label_field: str) -> tuple[list[Record], list[Rejected]]:
    records, rejected = [], []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        for lineno, row in _rows(path):
            if isinstance(row, RowError):
                rejected.append(Rejected(str(path), lineno, row.field, row.reason))
                continue
            try:
                records.append(row_to_record(row, text_field, label_field, {"source": str(path), "line": lineno}))
            except RowError as err:
                rejected.append(Rejected(str(path), lineno, err.field, err.reason))
    return records, rejected
