"""Deterministic train/val/test splits (stratified by label for classification)."""

from __future__ import annotations

from sklearn.model_selection import train_test_split

from tunewise.data.records import Record


def _size(spec: float | int, n: int) -> int:
    return int(spec) if isinstance(spec, int) or spec >= 1 else max(1, round(spec * n))


def split_off(records: list[Record], size: float | int, seed: int) -> tuple[list[Record], list[Record]]:
    """Split `records` into (rest, held_out) with `size` held out, stratified when every record has a label."""
    k = _size(size, len(records))
    if k <= 0:
        return records, []
    labels = [r.label for r in records]
    counts = {lab: labels.count(lab) for lab in set(labels)}
    stratify = labels if None not in counts and min(counts.values()) >= 2 and k >= len(counts) else None
    rest, held = train_test_split(records, test_size=k, random_state=seed, stratify=stratify)
    return rest, held


def split_records(
    records: list[Record], val: float | int, test: float | int | None, seed: int
) -> tuple[list[Record], list[Record], list[Record]]:
    """Return train, val, test. `test=None` means a test set was given separately (only val is carved)."""
    test_set: list[Record] = []
    rest = records
    if test is not None:
        rest, test_set = split_off(records, _size(test, len(records)), seed)
    train, val_set = split_off(rest, _size(val, len(records)), seed + 1)
    return train, val_set, test_set
