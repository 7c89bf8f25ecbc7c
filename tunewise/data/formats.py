"""Record formats: detect a file's format and turn each row into the canonical `Record`, checking its shape,
types and turn order. Every refusal is a `RowError` naming the field and the reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from tunewise.config import FORMATS
from tunewise.data.load import RawRow, Rejected, RowError, iter_rows
from tunewise.data.records import Record

ROLES = {"system", "user", "assistant"}
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "chatgpt": "assistant"}
# Column names people use for the text and the label when no mapping is given.
TEXT_NAMES = ("text", "sentence", "content", "query", "utterance")
LABEL_NAMES = ("label", "category", "class", "intent", "labels", "target")
_SCALARS = (str, int, float, bool, type(None))


@dataclass
class FileFormat:
    """How one file is read: its format and which column holds each canonical field."""

    name: str
    columns: dict[str, str] = field(default_factory=dict)  # canonical field → column in the file

    def describe(self) -> str:
        renamed = {k: v for k, v in self.columns.items() if k != v}
        return self.name + (f" ({', '.join(f'{k}←{v}' for k, v in renamed.items())})" if renamed else "")


def _pick(keys: set[str], mapping: dict[str, str], canonical: str, fallbacks: tuple[str, ...]) -> str | None:
    if canonical in mapping:
        return mapping[canonical]
    return next((k for k in (canonical, *fallbacks) if k in keys), None)


def detect_format(rows: list[dict], mapping: dict[str, str], forced: str = "auto") -> FileFormat | None:
    """The format most of the first rows look like (None when none fits). `mapping` = data.columns plus
    the text/label field names; explicit mappings win over the usual names."""
    keys: Counter[str] = Counter(k for r in rows for k in r)
    common = {k for k, c in keys.items() if c * 2 >= len(rows)} or set(keys)
    col = {c: mapping.get(c, c) for c in ("messages", "conversations", "instruction", "input", "output",
                                          "prompt", "completion")}
    text = _pick(common, mapping, "text", TEXT_NAMES)
    label = _pick(common, mapping, "label", LABEL_NAMES) or mapping.get("label", "label")
    candidates = {
        "chat": {"messages": col["messages"], "label": label},
        "sharegpt": {"conversations": col["conversations"], "label": label},
        "alpaca": {"instruction": col["instruction"], "input": col["input"], "output": col["output"]},
        "prompt_completion": {"prompt": col["prompt"], "completion": col["completion"]},
        "text_label": {"text": text or mapping.get("text", "text"), "label": label},
    }
    required = {"chat": ["messages"], "sharegpt": ["conversations"], "alpaca": ["instruction", "output"],
                "prompt_completion": ["prompt", "completion"], "text_label": ["text"]}
    if forced != "auto":
        return FileFormat(forced, candidates[forced])
    for name in FORMATS:
        if all(candidates[name][f] in common for f in required[name]):
            return FileFormat(name, candidates[name])
    return None


def sniff(rows, n: int = 50) -> list[dict]:
    return [r.row for r in islice((r for r in rows if isinstance(r.row, dict)), n)]


def text_field(row: dict, col: str, name: str | None = None) -> str:
    if col not in row:
        raise RowError(name or col, "missing field", "missing field")
    value = row[col]
    if value is None:
        raise RowError(name or col, "missing field: null", "missing field")
    if not isinstance(value, str):
        raise RowError(name or col, f"wrong type: expected text, got {type(value).__name__}", "wrong type")
    if not value.strip():
        raise RowError(name or col, "empty field", "empty field")
    return value


def _label(row: dict, col: str, required: bool, labels: frozenset[str] | None) -> str | None:
    if row.get(col) is None and not required:
        return None
    value = row.get(col)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # integer class ids are common; they become their decimal text
    label = text_field({col: value} if col in row else {}, col).strip()
    if labels is not None and label not in labels:
        raise RowError(col, f"label {label[:40]!r} is not in the declared label set",
                       "label outside the declared set")
    return label


def _turns(items: object, fld: str, role_key: str, text_key: str, roles: dict[str, str]) -> list[dict]:
    if not isinstance(items, list):
        raise RowError(fld, f"wrong type: expected a list of turns, got {type(items).__name__}", "wrong type")
    if not items:
        raise RowError(fld, "empty field: no turns", "empty field")
    out = []
    for i, turn in enumerate(items):
        if not isinstance(turn, dict):
            raise RowError(f"{fld}[{i}]", f"wrong type: expected an object, got {type(turn).__name__}",
                           "wrong type")
        role = turn.get(role_key)
        if not isinstance(role, str) or role not in roles:
            raise RowError(f"{fld}[{i}].{role_key}", f"unknown role {role!r}", "unknown role")
        out.append({"role": roles[role], "content": text_field(turn, text_key, f"{fld}[{i}].{text_key}")})
    return check_order(out, fld)


def check_order(msgs: list[dict], fld: str) -> list[dict]:
    """An optional system turn first, then user/assistant alternating, ending with the assistant's answer."""
    if not any(m["role"] == "assistant" for m in msgs):
        raise RowError(fld, "no assistant turn: nothing to train on", "no assistant turn")
    expected = "user"
    for i, m in enumerate(msgs):
        if m["role"] == "system" and i == 0:
            continue
        if m["role"] != expected:
            raise RowError(f"{fld}[{i}].role", f"roles out of order: {m['role']} where {expected} was expected",
                           "roles out of order")
        expected = "assistant" if expected == "user" else "user"
    if msgs[-1]["role"] != "assistant":
        raise RowError(fld, "roles out of order: the last turn must be the assistant's answer",
                       "roles out of order")
    return msgs


def _meta(row: dict, used: set[str], base: dict) -> dict:
    meta = dict(row["meta"]) if isinstance(row.get("meta"), dict) else {}  # canonical JSONL keeps its origin
    for k, v in row.items():
        if k not in used and k != "meta":
            meta[k] = v if isinstance(v, _SCALARS) else str(v)
    return {**base, **meta}


def to_record(raw: RawRow, fmt: FileFormat, classification: bool, labels: frozenset[str] | None) -> Record:
    """Build the canonical record of one parsed row, or raise RowError."""
    row, c = raw.row, fmt.columns
    label_col = c.get("label")
    if fmt.name in ("chat", "sharegpt"):
        fld = c["messages"] if fmt.name == "chat" else c["conversations"]
        if fld not in row:
            raise RowError(fld, "missing field", "missing field")
        msgs = (_turns(row[fld], fld, "role", "content", {r: r for r in ROLES}) if fmt.name == "chat"
                else _turns(row[fld], fld, "from", "value", SHAREGPT_ROLES))
    elif fmt.name == "alpaca":
        instruction, output = text_field(row, c["instruction"]), text_field(row, c["output"])
        extra = row.get(c["input"])
        if extra is not None and not isinstance(extra, str):
            raise RowError(c["input"], f"wrong type: expected text, got {type(extra).__name__}", "wrong type")
        user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    elif fmt.name == "prompt_completion":
        msgs = [{"role": "user", "content": text_field(row, c["prompt"])},
                {"role": "assistant", "content": text_field(row, c["completion"])}]
    else:
        text = text_field(row, c["text"])
        label = _label(row, label_col, True, labels)
        msgs = [{"role": "user", "content": text}, {"role": "assistant", "content": label}]
    label = msgs[-1]["content"] if fmt.name == "text_label" else None
    if fmt.name in ("chat", "sharegpt") and label_col and row.get(label_col) is not None:
        label = _label(row, label_col, False, labels)
    elif classification and label is None:
        # A classification chat/prompt row without a label column: its answer is the label.
        label = _label({"answer": msgs[-1]["content"]}, "answer", True, labels)
    used = set(c.values()) | ({"references"} if fmt.name == "chat" else set())
    meta = _meta(row, used, {"source": raw.source, "line": raw.line})
    return Record(msgs, label=label, meta=meta, references=_references(row) if fmt.name == "chat" else None)


def _references(row: dict) -> list[str] | None:
    """A canonical JSONL row (tunewise's own test.jsonl) keeps a multi-reference test example's references."""
    refs = row.get("references")
    if refs is None:
        return None
    if not isinstance(refs, list) or not refs or not all(isinstance(x, str) and x.strip() for x in refs):
        raise RowError("references", "wrong type: expected a non-empty list of texts", "wrong type")
    return refs


def read_records(path: Path, classification: bool = False) -> tuple[list[Record], list[Rejected]]:
    """A small file (a replay set, exported feedback) read straight into records, format auto-detected; no
    cleaning, dedup or PII pass. Rows that do not parse come back as Rejected."""
    raws = list(iter_rows(path))
    fmt = detect_format(sniff(raws), {})
    records, rejected = [], []
    for raw in raws:
        err = raw.row if isinstance(raw.row, RowError) else None
        if err is None and fmt is None:
            err = RowError("(row)", "unrecognised format")
        if err is None:
            try:
                records.append(to_record(raw, fmt, classification, None))
                continue
            except RowError as e:
                err = e
        rejected.append(Rejected(raw.source, raw.line, err.field, err.reason))
    return records, rejected
