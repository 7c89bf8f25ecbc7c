"""Compact key → slots index for deduplication: what every kept row leaves behind in memory.

Why not Python dicts alone, or datasketch: a dict entry with an int key costs
~70 bytes, and LSH needs one per band (16) per kept row — ~1.1 KiB a row, ~0.2 GiB at 200k kept rows, and
datasketch's per-band sets of keys ~6 KiB a row. Here the rows of the last FLUSH additions live in a dict
(fast to update one at a time), and older ones in one sorted key array with a uint32 slot array beside it
(8 bytes per entry with 32-bit LSH band keys, 12 with the 64-bit exact-duplicate keys), looked up for a whole
batch with one vectorised searchsorted. The rows' shingle sets are not here: they are on disk (spill.py)."""

from __future__ import annotations

import numpy as np

FLUSH = 8192  # rows per merge into the sorted arrays: each merge is O(index size) memmove, ~25 at 200k rows


class BandIndex:
    """key → slots of the rows that have it (band keys are already salted per band, so one table serves all)."""

    def __init__(self, dtype: type = np.uint32) -> None:
        self.keys = np.empty(0, dtype=dtype)
        self.slots = np.empty(0, dtype=np.uint32)
        self._recent: dict[int, int | list[int]] = {}
        self._pending_keys: list[int] = []
        self._pending_slots: list[int] = []

    def lookup(self, keys: np.ndarray) -> list[set[int]]:
        """Slots in the sorted part sharing a key with each row of `keys` (rows × bands), for a whole batch."""
        rows, bands = keys.shape
        out: list[set[int]] = [set() for _ in range(rows)]
        if not self.keys.size or not rows:
            return out
        flat = keys.ravel()
        lo = np.searchsorted(self.keys, flat, side="left")
        hi = np.searchsorted(self.keys, flat, side="right")
        for j in np.nonzero(hi > lo)[0].tolist():
            out[j // bands].update(self.slots[lo[j]:hi[j]].tolist())
        return out

    def recent(self, keys: list[int], found: set[int]) -> set[int]:
        """`found` plus the slots added since the last flush that share a key with this row."""
        found = set(found)
        for key in keys:
            hit = self._recent.get(key)
            if hit is None:
                continue
            if isinstance(hit, list):
                found.update(hit)
            else:
                found.add(hit)
        return found

    def add(self, slot: int, keys: list[int]) -> None:
        """Index a row's keys (every row has the same number of them)."""
        for key in keys:
            hit = self._recent.get(key)
            if hit is None:
                self._recent[key] = slot
            elif isinstance(hit, list):
                hit.append(slot)
            else:
                self._recent[key] = [hit, slot]
        self._pending_keys.extend(keys)
        self._pending_slots.append(slot)

    def due(self) -> bool:
        return len(self._pending_slots) >= FLUSH

    def flush(self) -> None:
        """Merge the recent rows into the sorted arrays (call only between batches: lookups of a batch in
        flight refer to the sorted part as it was)."""
        if not self._pending_slots:
            return
        keys = np.array(self._pending_keys, dtype=self.keys.dtype)
        slots = np.repeat(np.array(self._pending_slots, dtype=np.uint32), len(keys) // len(self._pending_slots))
        order = np.argsort(keys, kind="stable")
        keys, slots = keys[order], slots[order]
        at = np.searchsorted(self.keys, keys, side="right")
        self.keys, self.slots = np.insert(self.keys, at, keys), np.insert(self.slots, at, slots)
        self._recent.clear()
        self._pending_keys, self._pending_slots = [], []
