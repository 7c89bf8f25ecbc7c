"""Worker processes for the per-row work of the data pass (validate, clean, PII, token counts, dedup hashing).

Only the decisions that need the other rows (dedup index, counters, the card) stay in the main process, so
the result — kept rows, quarantine lines and their order, the card — is identical to the serial pass: chunks
are submitted and consumed in input order, and each row's prepared facts depend on that row alone.

Fork start method: the workers inherit the scanner (tokenizer, compiled patterns, config) without pickling
it. A bounded number of chunks is in flight (`Pool.imap` would read the whole input ahead into its task
queue), so memory stays flat however long the input is."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tunewise.data.dedup import pack, unpack

if TYPE_CHECKING:
    from tunewise.data.formats import FileFormat
    from tunewise.data.load import RawRow

Prepared = Any  # data.scan.Prepared: scan imports this module, so the type is named, not imported


class Scanner(Protocol):
    """What the workers use of data.scan.Scanner: its counters and its per-row work."""

    stats: Any

    def prepare_rows(self, *task: Any) -> list[Prepared]: ...

CHUNK = 2000  # rows per task: large enough to amortise the pickling round trip, small enough to stay streaming
AUTO_MIN_BYTES = 4 * 2**20  # `auto`: workers only for inputs over ~4 MiB (~20k short rows); below, serial
_SCANNER: Scanner | None = None  # the scanner the forked workers inherit


def resolve_workers(setting: int | str, paths: list[Path]) -> int:
    """Worker processes for this input: `auto` is min(2, CPUs) for inputs over ~20k rows, else 1 (serial)."""
    if "fork" not in mp.get_all_start_methods():  # Windows: serial (workers inherit the scanner by fork)
        return 1
    if setting != "auto":
        return int(setting)
    size = sum(Path(p).stat().st_size for p in paths if Path(p).is_file())
    return min(2, os.cpu_count() or 1) if size >= AUTO_MIN_BYTES else 1


def chunks(rows: Iterable, size: int) -> Iterator[list]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


def _work(task: tuple[list[RawRow], FileFormat | None]) -> tuple:
    scanner = _SCANNER
    scanner.stats.pii.clear()
    scanner.stats.pii_rows.clear()
    prepared = scanner.prepare_rows(*task)
    with_probe = [p for p in prepared if p.probe is not None]
    packed = pack([p.probe for p in with_probe])
    for p in with_probe:
        p.probe = None
    return prepared, packed, Counter(scanner.stats.pii), Counter(scanner.stats.pii_rows)


def prepare_parallel(scanner: Scanner, rows: Iterable[RawRow], fmt: FileFormat | None,
                     workers: int) -> Iterator[Prepared]:
    """`scanner.prepare_rows` over `rows` in `workers` processes; prepared rows come back in input order."""
    global _SCANNER
    _SCANNER = scanner
    ctx = mp.get_context("fork")
    pending: deque = deque()
    # Objects alive at fork go to the permanent generation while the workers start: the children's collector
    # then never walks (and so never copies on write) the parent's ~0.5 GB of libraries and tokenizer.
    gc.freeze()
    try:
        pool = ctx.Pool(workers)
    finally:
        gc.unfreeze()
    try:
        with pool:
            for chunk in chunks(rows, CHUNK):
                pending.append(pool.apply_async(_work, ((chunk, fmt),)))
                if len(pending) >= 2 * workers:
                    yield from _merge(scanner, pending.popleft().get())
            while pending:
                yield from _merge(scanner, pending.popleft().get())
    finally:
        _SCANNER = None  # the scanner (its dedup index, its spill files) is not kept alive after the pass


def _merge(scanner: Scanner, result: tuple) -> list[Prepared]:
    prepared, packed, pii, pii_rows = result
    for p, probe in zip((p for p in prepared if p.record is not None), unpack(packed), strict=True):
        p.probe = probe
    scanner.stats.pii.update(pii)
    scanner.stats.pii_rows.update(pii_rows)
    return prepared
