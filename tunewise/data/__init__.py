"""Data stage: load → validate → split. Entry point: `prepare(cfg) -> PreparedData`."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.config import RunConfig
from tunewise.data.builtin import BUILTINS
from tunewise.data.load import Rejected, load_files
from tunewise.data.records import Record
from tunewise.data.split import split_off, split_records
from tunewise.errors import DataError


@dataclass
class PreparedData:
    train: list[Record]
    val: list[Record]
    test: list[Record]
    labels: list[str] | None
    content_hash: str
    rejected: list[Rejected] = field(default_factory=list)

    def summary(self) -> dict:
        def dist(rs: list[Record]) -> dict:
            return dict(sorted(Counter(r.label for r in rs if r.label is not None).items()))

        return {
            "content_hash": self.content_hash,
            "counts": {"train": len(self.train), "val": len(self.val), "test": len(self.test),
                       "quarantined": len(self.rejected)},
            "labels": self.labels,
            "label_distribution": {"train": dist(self.train), "val": dist(self.val), "test": dist(self.test)},
        }

    def write(self, folder: Path) -> None:
        """Splits as canonical JSONL, the quarantine and a summary: what the later stages and a reviewer read."""
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("train", "val", "test"):
            with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
                for r in getattr(self, name):
                    fh.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
        with (folder / "quarantine.jsonl").open("w", encoding="utf-8") as fh:
            for q in self.rejected:
                fh.write(json.dumps(q.to_json()) + "\n")
        (folder / "summary.json").write_text(json.dumps(self.summary(), indent=2))


def content_hash(records: list[Record]) -> str:
    """sha256 of the canonical records (messages + label): the dataset's version."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r.messages, r.label], sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def _load(cfg: RunConfig) -> tuple[list[Record], list[Record] | None, list[Rejected]]:
    d = cfg.data
    if d.builtin:
        return BUILTINS[d.builtin](), None, []
    records, rejected = load_files(d.paths, d.text_field, d.label_field)
    test = None
    if d.test_paths:
        test, rejected_test = load_files(d.test_paths, d.text_field, d.label_field)
        rejected += rejected_test
    return records, test, rejected


def _labels(cfg: RunConfig, records: list[Record]) -> list[str] | None:
    if cfg.task.type != "classification":
        return None
    found = sorted({r.label for r in records if r.label is not None})
    if cfg.task.labels:
        unknown = set(found) - set(cfg.task.labels)
        if unknown:
            raise DataError(f"labels not in task.labels: {sorted(unknown)[:5]}")
        return list(cfg.task.labels)
    if len(found) < 2:
        raise DataError("classification needs at least two labels in the data")
    return found


def prepare(cfg: RunConfig) -> PreparedData:
    records, official_test, rejected = _load(cfg)
    if not records:
        raise DataError("no usable rows: every row was quarantined" if rejected else "the dataset is empty")
    if cfg.task.type == "classification" and any(r.label is None for r in records):
        raise DataError("classification needs a label on every row (set data.label_field)")
    d = cfg.data
    train, val, test = split_records(records, d.split.val, None if official_test else d.split.test, cfg.seed)
    if official_test is not None:
        test = official_test
    # Subsets are stratified too, so a CPU-sized run keeps the class balance of the full data.
    if d.max_train_examples and len(train) > d.max_train_examples:
        _, train = split_off(train, d.max_train_examples, cfg.seed + 2)
    if d.max_test_examples and len(test) > d.max_test_examples:
        _, test = split_off(test, d.max_test_examples, cfg.seed + 3)
    labels = _labels(cfg, records + (official_test or []))
    return PreparedData(train, val, test, labels, content_hash(records + (official_test or [])), rejected)
