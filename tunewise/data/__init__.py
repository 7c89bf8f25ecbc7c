"""Data stage: load → validate → clean → dedup → PII → audit → split → card.

Entry points (the CLI and the pipeline call the same ones):
- `check(cfg, out)`: the streaming pass; writes card.json, card.html, quarantine.jsonl (and, with
  `clean_path`, the cleaned canonical JSONL). Only counters and compact per-row state (dedup index, token
  lengths: ~190 bytes a kept row) stay in memory; what is looked up again spills to temporary files. The
  label-issue check (classification, `data.label_issues` not off) holds the kept rows and their TF-IDF matrix.
- `prepare(cfg) -> PreparedData`: the same pass, then splits with a leakage check, then looks for likely
  label errors among the training rows; what training uses."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.config import RunConfig
from tunewise.data.audit import audit
from tunewise.data.builtin import BUILTIN_ROWS
from tunewise.data.card import DataCard, build_card, token_summary, write_card
from tunewise.data.formats import FileFormat
from tunewise.data.label_issues import ISSUE_KIND, LabelIssues, detect
from tunewise.data.load import Rejected, RowError
from tunewise.data.records import Record, group_references
from tunewise.data.scan import Scanner, ScanStats
from tunewise.data.split import remove_leaks, split_off, split_records
from tunewise.data.tokens import TokenCounter, load_counter
from tunewise.errors import DataError

__all__ = ["DataCard", "PreparedData", "check", "content_hash", "prepare"]


@dataclass
class PreparedData:
    train: list[Record]
    val: list[Record]
    test: list[Record]
    labels: list[str] | None
    content_hash: str
    rejected: list[Rejected] = field(default_factory=list)
    card: DataCard | None = None

    def summary(self) -> dict:
        def dist(rs: list[Record]) -> dict:
            return dict(sorted(Counter(r.label for r in rs if r.label is not None).items()))

        out = {
            "content_hash": self.content_hash,
            "counts": {"train": len(self.train), "val": len(self.val), "test": len(self.test),
                       "quarantined": len(self.rejected)},
            "labels": self.labels,
            "label_distribution": {"train": dist(self.train), "val": dist(self.val), "test": dist(self.test)},
        }
        if self.card is not None and self.card.label_issues:
            li = self.card.label_issues
            out["label_issues"] = {"policy": li["policy"], "checked": li["checked"], "count": li["count"],
                                   "note": li["note"], "top": li["issues"][:10]}
        if self.card is not None:
            out["quarantine_reasons"] = self.card.quarantine["by_reason"]
            out["duplicates_removed"] = self.card.counts["duplicates_removed"]
            out["leakage_removed"] = self.card.leakage.get("removed", {})
            out["warnings"] = self.card.warnings
        return out

    def write(self, folder: Path) -> None:
        """Splits as canonical JSONL, the quarantine, a summary and the data card."""
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("train", "val", "test"):
            with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
                for r in getattr(self, name):
                    fh.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
        with (folder / "quarantine.jsonl").open("w", encoding="utf-8") as fh:
            for q in self.rejected:
                fh.write(json.dumps(q.to_json(), ensure_ascii=False) + "\n")
        (folder / "summary.json").write_text(json.dumps(self.summary(), indent=2, ensure_ascii=False))
        if self.card is not None:
            (folder / "leakage.json").write_text(json.dumps(self.card.leakage, indent=2, ensure_ascii=False))
            write_card(self.card, folder)


def content_hash(records: list[Record]) -> str:
    """sha256 of the canonical records (messages + label): the dataset's version."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r.messages, r.label], sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def _counter(cfg: RunConfig) -> tuple[TokenCounter | None, str | None]:
    return load_counter(cfg.model.base, cfg.model.cache_dir)


def _scan(cfg: RunConfig, paths: list[Path], scanner: Scanner):
    if cfg.data.builtin and not paths:
        fmt = FileFormat("text_label", {"text": "text", "label": "label"})
        return scanner.scan_rows(f"builtin:{cfg.data.builtin}", BUILTIN_ROWS[cfg.data.builtin](), fmt)
    return scanner.scan(paths)


def _labels(cfg: RunConfig, scanner: Scanner) -> list[str] | None:
    if cfg.task.type != "classification":
        return None
    return list(cfg.task.labels) if cfg.task.labels else sorted(scanner.stats.labels)


def _card(cfg: RunConfig, scanner: Scanner, counter: TokenCounter | None, why_not: str | None,
          digest: str, label_issues: LabelIssues | None = None) -> DataCard:
    labels = _labels(cfg, scanner)
    framing = counter.framing(cfg.task, labels) if counter else 0
    tokens = token_summary(scanner.stats, framing, counter.name if counter else None,
                           counter.context if counter else None, cfg.model.max_length, why_not)
    found = audit(scanner.stats, cfg.data, cfg.task.type == "classification")
    return build_card(scanner.stats, found, digest, cfg.task.type, cfg.data.pii, tokens, label_issues,
                      pii_engine=cfg.data.pii_engine, pii_region=cfg.data.pii_region)


def _label_issues(cfg: RunConfig, scanner: Scanner, records: list[Record], scope: str) -> LabelIssues | None:
    """Likely mislabelled rows among `records`; under `drop` each is quarantined (the caller removes it)."""
    if cfg.task.type != "classification" or cfg.data.label_issues == "off":
        return None
    found = detect(records, cfg.data.label_issues, scope, cfg.seed)
    if found.policy == "drop":
        stats = scanner.stats
        for issue in found.issues:
            scanner.quarantine(issue.source, issue.line, RowError("label", issue.reason, ISSUE_KIND))
            stats.kept -= 1
            stats.labels[issue.given] -= 1
            if stats.labels[issue.given] <= 0:  # a class flagged whole leaves the label counts (the audit divides)
                del stats.labels[issue.given]
            for report in stats.files:
                if report.path == issue.source:
                    report.kept -= 1
                    break
    return found


def _drop_lines(path: Path, drop: set[int]) -> None:
    """Rewrite a JSONL file without the rows (0-based) in `drop`."""
    tmp = path.with_name(path.name + ".tmp")
    with path.open(encoding="utf-8") as src, tmp.open("w", encoding="utf-8") as dst:
        dst.writelines(line for i, line in enumerate(src) if i not in drop)
    tmp.replace(path)


def _no_rows(scanner: Scanner, where: str) -> DataError:
    n = scanner.stats.rows
    return DataError(f"no usable rows: all {n} rows were quarantined or duplicates (see {where})" if n
                     else "the dataset is empty: no rows in any file")


def check(cfg: RunConfig, out: Path, clean_path: Path | None = None,
          counter: tuple[TokenCounter | None, str | None] | None = None,
          progress: Callable[[ScanStats], None] | None = None) -> DataCard:
    """Stream every row through the checks; write out/card.json, card.html, quarantine.jsonl (and the kept
    rows as canonical JSONL to `clean_path`). Raises DataError, after writing, when no usable row remains.
    `counter` reuses an already loaded tokenizer; `progress` is called after each kept row (benchmarks)."""
    out.mkdir(parents=True, exist_ok=True)
    tok, why_not = counter or _counter(cfg)
    paths = list(cfg.data.paths) + list(cfg.data.test_paths)
    hold = cfg.task.type == "classification" and cfg.data.label_issues != "off"
    with (out / "quarantine.jsonl").open("w", encoding="utf-8") as qf:
        scanner = Scanner(cfg.data, cfg.task, tok, _writer(qf), cfg.task.labels)
        kept = _stream(cfg, paths, scanner, clean_path, progress, hold)
        issues = _label_issues(cfg, scanner, kept, "usable rows")
    if clean_path and issues is not None and issues.policy == "drop" and issues.count:
        _drop_lines(clean_path, {i.index for i in issues.issues})
    card = _card(cfg, scanner, tok, why_not, scanner.hash.hexdigest(), issues)
    write_card(card, out)
    if scanner.stats.kept == 0:
        raise _no_rows(scanner, out / "quarantine.jsonl")
    return card


def _stream(cfg: RunConfig, paths: list[Path], scanner: Scanner, clean_path: Path | None,
            progress: Callable[[ScanStats], None] | None, hold: bool) -> list[Record]:
    """Run the pass, writing kept rows to `clean_path`; returns them when `hold`, else an empty list."""
    kept: list[Record] = []
    clean_fh = clean_path.open("w", encoding="utf-8") if clean_path else None
    try:
        for record in _scan(cfg, paths, scanner):
            if clean_fh:
                clean_fh.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
            if hold:
                kept.append(record)
            if progress:
                progress(scanner.stats)
    finally:
        if clean_fh:
            clean_fh.close()
    return kept


def _writer(fh) -> Callable[[Rejected], None]:
    return lambda rej: fh.write(json.dumps(rej.to_json(), ensure_ascii=False) + "\n")


def _scan_pool(cfg: RunConfig, paths: list[Path], rejected: list[Rejected], tok) -> tuple[list[Record], Scanner]:
    scanner = Scanner(cfg.data, cfg.task, tok, rejected.append, cfg.task.labels)
    return list(_scan(cfg, paths, scanner)), scanner


def prepare(cfg: RunConfig) -> PreparedData:
    """Check and clean the data, split it without leaks, and build the card."""
    d, rejected = cfg.data, []
    tok, why_not = _counter(cfg)
    records, scanner = _scan_pool(cfg, list(d.paths), rejected, tok)
    official_test = None
    if d.test_paths:  # its own dedup index: overlap with the pool is leakage, reported by remove_leaks
        as_published = d.official_test == "as_published"
        test_cfg = cfg.model_copy(update={"data": d.model_copy(update={
            "dedup": d.dedup.model_copy(update={"exact": False, "near": False})})}) if as_published else cfg
        official_test, test_scan = _scan_pool(test_cfg, list(d.test_paths), rejected, tok)
        scanner.stats.files += test_scan.stats.files
        scanner.stats.rows += test_scan.stats.rows
        scanner.stats.quarantine.update(test_scan.stats.quarantine)
        for kind, examples in test_scan.stats.quarantine_examples.items():
            scanner.stats.quarantine_examples.setdefault(kind, examples)
    if not records:
        raise _no_rows(scanner, "quarantine.jsonl in the run's data folder")
    classification = cfg.task.type == "classification"
    labels = _labels(cfg, scanner)
    if classification and len(labels) < 2:
        raise DataError("classification needs at least two labels in the data")
    seed = cfg.seed if d.split.seed is None else d.split.seed
    train, val, test = split_records(records, d.split.val, None if official_test is not None else d.split.test,
                                     seed, d.group_column)
    if official_test is not None:
        test = official_test
    val, test, leakage = remove_leaks(train, val, test, d.dedup, classification, d.group_column,
                                      keep_test=official_test is not None and d.official_test == "as_published")
    grouped = ""
    if cfg.task.type == "generation" and d.group_test_references:
        rows, test = len(test), group_references(test)
        if len(test) < rows:
            grouped = f"; the {rows} test rows grouped by input into {len(test)} multi-reference examples"
    # Subsets are stratified too, so a CPU-sized run keeps the class balance of the full data.
    if d.max_train_examples and len(train) > d.max_train_examples:
        _, train = split_off(train, d.max_train_examples, seed + 2)
    if d.max_test_examples and len(test) > d.max_test_examples:
        _, test = split_off(test, d.max_test_examples, seed + 3)
    issues = _label_issues(cfg, scanner, train, "training rows")
    if issues is not None and issues.policy == "drop":
        dropped = {i.index for i in issues.issues}
        train = [r for i, r in enumerate(train) if i not in dropped]
    digest = content_hash(records + (official_test or []))
    card = _card(cfg, scanner, tok, why_not, digest, issues)
    method = "group-aware (" + d.group_column + "), " if d.group_column else ""
    card.splits = {"counts": {"train": len(train), "val": len(val), "test": len(test)}, "seed": seed,
                   "method": f"{method}stratified by label where every row has one, seed {seed}"
                             + ("; test from data.test_paths" if official_test is not None else "") + grouped}
    card.leakage = leakage.to_json()
    return PreparedData(train=train, val=val, test=test, labels=labels, content_hash=digest, rejected=rejected,
                        card=card)
