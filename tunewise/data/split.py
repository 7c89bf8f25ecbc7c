"""Deterministic train/val/test splits: stratified by label, group-aware when a group column is given, and
checked for leakage (exact and near duplicates across splits are removed from val/test)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from tunewise.config import DedupConfig
from tunewise.data.clean import dedup_text
from tunewise.data.dedup import Deduper
from tunewise.data.records import Record


def _size(spec: float | int, n: int) -> int:
    return int(spec) if isinstance(spec, int) or spec >= 1 else max(1, round(spec * n))


def _groups(records: list[Record], column: str) -> list[str]:
    # A row without the column is its own group: it can go anywhere without leaking a group.
    return [str(r.meta[column]) if r.meta.get(column) is not None else f"(row {i})" for i, r in enumerate(records)]


def split_off(records: list[Record], size: float | int, seed: int,
              group_column: str | None = None) -> tuple[list[Record], list[Record]]:
    """Split `records` into (rest, held_out) with about `size` held out, stratified when every record has a
    label; with `group_column`, rows sharing its value land on the same side (sizes then approximate)."""
    k = _size(size, len(records))
    if k <= 0 or len(records) < 2:
        return records, []
    labels = [r.label for r in records]
    counts = {lab: labels.count(lab) for lab in set(labels)}
    stratified = None not in counts and min(counts.values()) >= 2 and k >= len(counts)
    if group_column:
        n_splits = max(2, min(len(records), round(len(records) / k)))
        y = labels if None not in counts else [0] * len(records)
        with warnings.catch_warnings():  # "least populated class has fewer members than n_splits"
            warnings.simplefilter("ignore", UserWarning)
            sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            rest_idx, held_idx = next(sgkf.split(records, y, _groups(records, group_column)))
        return [records[i] for i in rest_idx], [records[i] for i in held_idx]
    rest, held = train_test_split(records, test_size=k, random_state=seed, stratify=labels if stratified else None)
    return rest, held


def split_records(
    records: list[Record], val: float | int, test: float | int | None, seed: int, group_column: str | None = None
) -> tuple[list[Record], list[Record], list[Record]]:
    """Return train, val, test. `test=None` means a test set was given separately (only val is carved)."""
    test_set: list[Record] = []
    rest = records
    if test is not None:
        rest, test_set = split_off(records, _size(test, len(records)), seed, group_column)
    train, val_set = split_off(rest, _size(val, len(records)), seed + 1, group_column)
    return train, val_set, test_set


@dataclass
class LeakageReport:
    exact: int = 0
    near: int = 0
    removed: dict = field(default_factory=lambda: {"val": 0, "test": 0})
    kept: dict = field(default_factory=lambda: {"val": 0, "test": 0})  # leaks reported but kept (official test)
    examples: list = field(default_factory=list)
    groups_shared: int = 0  # group values found in more than one split (0 when group-aware)

    def to_json(self) -> dict:
        return {"exact": self.exact, "near": self.near, "removed": self.removed, "kept": self.kept,
                "groups_shared": self.groups_shared, "examples": self.examples}


def remove_leaks(train: list[Record], val: list[Record], test: list[Record], dedup: DedupConfig,
                 classification: bool, group_column: str | None = None, keep_test: bool = False
                 ) -> tuple[list[Record], list[Record], LeakageReport]:
    """Drop from val the rows that duplicate train, and from test those that duplicate train or val.
    `keep_test`: report test leaks but keep the rows (an official test set stays comparable)."""
    report = LeakageReport()
    index = Deduper(dedup.threshold, dedup.num_perm, exact=True, near=dedup.near)
    where: list[Record] = []

    def admit(records: list[Record], name: str | None, keep: bool = False) -> list[Record]:
        kept = []
        for r in records:
            match, probe = index.find(dedup_text(r, classification))
            if match is not None and name is not None:
                setattr(report, match.kind, getattr(report, match.kind) + 1)
                if keep:
                    report.kept[name] += 1
                    r.meta["leaked_from_train"] = True  # lets evaluation report the de-leaked subset too
                    kept.append(r)
                    continue
                report.removed[name] += 1
                if len(report.examples) < 20:
                    other = where[match.rep]
                    report.examples.append({"split": name, "kind": match.kind,
                                            "similarity": round(match.similarity, 3),
                                            "text": r.input_text[:100], "duplicates": other.meta})
                continue
            if not keep:  # an as-published test set may repeat itself; only leaks from train/val count
                index.add(len(where), probe)
                where.append(r)
            kept.append(r)
        return kept

    admit(train, None)
    val, test = admit(val, "val"), admit(test, "test", keep=keep_test)
    if group_column:
        sets = [{str(r.meta[group_column]) for r in s if r.meta.get(group_column) is not None}
                for s in (train, val, test)]
        report.groups_shared = len((sets[0] & sets[1]) | (sets[0] & sets[2]) | (sets[1] & sets[2]))
    return val, test, report
