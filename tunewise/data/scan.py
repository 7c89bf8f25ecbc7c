"""The streaming pass: read → validate → clean → PII → token lengths → dedup, one row at a time (token counts
in batches). Kept records are yielded as they are decided; everything else goes to the quarantine sink with
its file, line, field and reason. Only counters and small fixed-size per-row facts stay in memory (the dedup
index, token lengths, cluster sizes: a few hundred bytes a kept row, docs/data_doctor.md "Memory work"); what
must be looked up again for any earlier row (its shingles, file, line, label, preview) is spilled to disk."""

from __future__ import annotations

import hashlib
import json
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.config import DataConfig, TaskConfig
from tunewise.data.clean import check_control, clean_record, dedup_text
from tunewise.data.clusters import ClusterTable
from tunewise.data.dedup import Deduper, Probe
from tunewise.data.formats import FileFormat, detect_format, sniff, to_record
from tunewise.data.load import RawRow, Rejected, RowError, iter_rows
from tunewise.data.parallel import chunks, prepare_parallel, resolve_workers
from tunewise.data.pii import make_detector, redact
from tunewise.data.records import Record
from tunewise.data.spill import JsonSpill
from tunewise.data.tokens import TokenCounter, record_text
from tunewise.metrics.extraction import parse_json_object

BATCH = 512  # rows per tokenizer call: large enough to amortise the call, small enough to stay streaming
MAX_LISTED = 50  # clusters / conflicts / examples listed on the card (all are counted)
MAX_SLICE_VALUES = 30


@dataclass
class FileReport:
    path: str
    format: str
    rows: int = 0
    kept: int = 0


@dataclass
class ScanStats:
    files: list[FileReport] = field(default_factory=list)
    rows: int = 0
    kept: int = 0
    quarantine: Counter = field(default_factory=Counter)  # reason kind → rows
    quarantine_examples: dict = field(default_factory=dict)  # reason kind → first few rejections
    duplicates: Counter = field(default_factory=Counter)  # exact / near → rows dropped
    clusters: ClusterTable | None = None  # duplicate clusters (set by the Scanner)
    conflicts: list = field(default_factory=list)
    conflict_count: int = 0
    pii: Counter = field(default_factory=Counter)  # kind → occurrences
    pii_rows: Counter = field(default_factory=Counter)  # kind → rows with at least one
    labels: Counter = field(default_factory=Counter)
    slices: dict = field(default_factory=dict)  # column → Counter[(value, label)]
    content_tokens: array = field(default_factory=lambda: array("I"))
    turns: array = field(default_factory=lambda: array("H"))
    warnings: list = field(default_factory=list)


@dataclass
class Prepared:
    """One row after the work that needs no other row; `error` set means it is quarantined."""

    source: str
    line: int
    record: Record | None
    error: RowError | None = None
    n_tokens: int = 0
    probe: Probe | None = None


def _preview(text: str, n: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


class Scanner:
    def __init__(self, data: DataConfig, task: TaskConfig, counter: TokenCounter | None,
                 sink: Callable[[Rejected], None], labels: list[str] | None = None):
        self.data, self.task, self.counter, self.sink = data, task, counter, sink
        self.classification = task.type == "classification"
        self.labels = frozenset(labels) if labels else None
        d = data.dedup
        self.dedup = Deduper(d.threshold, d.num_perm, d.exact, d.near)
        # kept id → [file, line, label, preview], on disk: read back only when a later row duplicates it
        self._where = JsonSpill()
        self.stats = ScanStats(clusters=ClusterTable(self._where))
        self.hash = hashlib.sha256()
        self._framing = counter.framing(task, labels) if counter else 0
        # text_field/label_field are explicit only when changed; otherwise the usual names are looked for.
        explicit = {k: v for k, v in (("text", data.text_field), ("label", data.label_field)) if k != v}
        self._mapping = {**explicit, **data.columns}
        self._slice_values: dict[str, set[str]] = {}
        self.workers = 1  # set per scan from data.workers and the input size
        self.pii_detector = make_detector(data.pii_engine, data.pii_region)

    def quarantine(self, source: str, line: int, err: RowError) -> None:
        self.stats.quarantine[err.kind] += 1
        rej = Rejected(source, line, err.field, err.reason)
        examples = self.stats.quarantine_examples.setdefault(err.kind, [])
        if len(examples) < 3:
            examples.append(rej.to_json())
        self.sink(rej)

    def scan(self, paths: list[Path]) -> Iterator[Record]:
        """Kept records of every file, in file and line order."""
        self.workers = resolve_workers(self.data.workers, paths)
        for path in paths:
            yield from self._scan_file(Path(path))

    def _scan_file(self, path: Path) -> Iterator[Record]:
        fmt = detect_format(sniff(iter_rows(path)), self._mapping, self.data.format)
        yield from self.scan_rows(str(path), iter_rows(path), fmt)

    def scan_rows(self, name: str, rows: Iterable[RawRow], fmt: FileFormat | None) -> Iterator[Record]:
        """Kept records of one stream of rows read in format `fmt` (None: no format fits, all refused)."""
        report = FileReport(name, fmt.describe() if fmt else "(unrecognised)")
        self.stats.files.append(report)
        batch: list[Prepared] = []
        for item in self._prepared(rows, fmt):
            report.rows += 1
            self.stats.rows += 1
            if item.error is not None:
                self.quarantine(item.source, item.line, item.error)
                continue
            batch.append(item)
            if len(batch) >= BATCH:
                yield from self._decide(batch, report)
                batch = []
        yield from self._decide(batch, report)
        if report.rows == 0:
            report.format = "(empty file)"
            self.stats.warnings.append(f"{name}: empty file, no rows")

    def _prepared(self, rows: Iterable[RawRow], fmt: FileFormat | None) -> Iterator[Prepared]:
        if self.workers > 1:
            yield from prepare_parallel(self, rows, fmt, self.workers)
            return
        for chunk in chunks(rows, BATCH):
            yield from self.prepare_rows(chunk, fmt)

    def prepare_rows(self, rows: list[RawRow], fmt: FileFormat | None) -> list[Prepared]:
        """The per-row work that needs no other row (validate, clean, PII, token count, dedup hashing), in
        order; safe to run in a worker process (only `stats.pii*` are touched)."""
        out = []
        for raw in rows:
            try:
                out.append(Prepared(raw.source, raw.line, self._build(raw, fmt)))
            except RowError as err:
                out.append(Prepared(raw.source, raw.line, None, err))
        kept = [p for p in out if p.record is not None]
        if not kept:
            return out
        lengths = self.counter.count([record_text(p.record) for p in kept]) if self.counter else [0] * len(kept)
        probes = self.dedup.probes([dedup_text(p.record, self.classification) for p in kept])
        for p, n, probe in zip(kept, lengths, probes, strict=True):
            p.n_tokens, p.probe = n, probe
        return out

    def _build(self, raw: RawRow, fmt: FileFormat | None) -> Record:
        if isinstance(raw.row, RowError):
            raise raw.row
        if fmt is None:
            raise RowError("(row)", f"wrong shape: no known format fits the keys {sorted(raw.row)[:6]}",
                           "wrong shape: unrecognised format")
        record = to_record(raw, fmt, self.classification, self.labels)
        group = self.data.group_column
        if group and group in raw.row and group not in record.meta:
            record.meta[group] = raw.row[group]  # the group may be the input column itself (E2E groups by mr)
        size = sum(len(m["content"]) for m in record.messages)
        if size > self.data.max_row_chars:
            raise RowError("messages", f"too long: {size:,} characters > data.max_row_chars "
                                       f"({self.data.max_row_chars:,})", "too long (characters)")
        check_control(record)
        clean_record(record)
        if self.task.type == "extraction" and parse_json_object(record.answer) is None:
            raise RowError("messages[-1].content", "not a JSON object: an extraction answer must be one",
                           "answer not a JSON object")
        self._pii(record)
        return record

    def _pii(self, record: Record) -> None:
        seen: set[str] = set()
        # A classification answer is the label itself: it is checked against the label set, not for PII.
        turns = record.messages[:-1] if self.classification else record.messages
        for i, m in enumerate(turns):
            hits = self.pii_detector.find(m["content"])
            if not hits:
                continue
            kinds = [h.kind for h in hits]
            self.stats.pii.update(kinds)
            seen.update(kinds)
            if self.data.pii == "drop":
                self.stats.pii_rows.update(seen)
                raise RowError(f"messages[{i}].content", f"contains PII ({', '.join(sorted(set(kinds)))}); "
                                                         "data.pii is drop", "contains PII (drop policy)")
            if self.data.pii == "redact":
                m["content"] = redact(m["content"], hits)
        self.stats.pii_rows.update(seen)

    def _decide(self, batch: list[Prepared], report: FileReport) -> Iterator[Record]:
        context = self.counter.context if self.counter else None
        self.dedup.lookup([p.probe for p in batch])
        for p in batch:
            if context and p.n_tokens + self._framing > context:
                self.quarantine(p.source, p.line, RowError(
                    "messages", f"too many tokens: {p.n_tokens + self._framing:,} with the prompt framing > the "
                                f"{context:,}-token context of {self.counter.name}",
                    "too many tokens for the model context"))
                continue
            if self._is_duplicate(p.source, p.line, p.record, p.probe):
                continue
            self._keep(p.record, p.n_tokens)
            report.kept += 1
            yield p.record

    def _is_duplicate(self, source: str, line: int, record: Record, probe: Probe) -> bool:
        match = self.dedup.match(probe)
        if match is not None:
            rep_file, rep_line, rep_label, rep_preview = self._where.get(match.rep)
            if not self.classification or rep_label == record.label:
                self.stats.duplicates[match.kind] += 1
                self.stats.clusters.add(match.rep, {"file": source, "line": line, "kind": match.kind,
                                                    "similarity": round(match.similarity, 3)})
                return True
            self.stats.conflict_count += 1
            if len(self.stats.conflicts) < MAX_LISTED:
                self.stats.conflicts.append({
                    "kind": match.kind, "similarity": round(match.similarity, 3), "text": rep_preview,
                    "a": {"file": rep_file, "line": rep_line, "label": rep_label},
                    "b": {"file": source, "line": line, "label": record.label}})
        self.dedup.add(len(self._where), probe)
        self._where.append([source, line, record.label, _preview(record.input_text)])
        return False

    def _keep(self, record: Record, n_tokens: int) -> None:
        s = self.stats
        s.kept += 1
        s.content_tokens.append(min(n_tokens, 2**32 - 1))
        s.turns.append(min(len(record.messages), 65535))
        if record.label is not None:
            s.labels[record.label] += 1
        for col in self.data.slice_columns:
            seen = self._slice_values.setdefault(col, set())
            value = str(record.meta.get(col, "(missing)"))
            if value not in seen:
                if len(seen) >= MAX_SLICE_VALUES:
                    value = "(other)"
                seen.add(value)
            s.slices.setdefault(col, Counter())[(value, record.label)] += 1
        self.hash.update(json.dumps([record.messages, record.label], sort_keys=True, ensure_ascii=False).encode())
        self.hash.update(b"\n")
