"""Append-only records on a temporary file: what the data pass must be able to look up again for any earlier
row (its shingles, where it came from) without holding it in memory.

Why by hand: the pass appends one record per kept row and reads back only the few that a later row matches
(~2 reads a row on Banking77), so all it needs is an offsets array and positioned reads. sqlite or shelve
would add a B-tree and per-row overhead for lookups by a dense integer id; a numpy memmap would count every
page it touches in the process's RSS. Here memory is 8 bytes a record (its end offset) plus a write buffer
of at most BUFFER bytes; the file is anonymous (unlinked at once on POSIX) and closed with the object."""

from __future__ import annotations

import json
import tempfile
import weakref
from array import array
from collections.abc import Iterator

BUFFER = 1 << 20  # bytes gathered before one write: amortises the system call, bounded memory


class Spill:
    """Records 0, 1, 2… as bytes on disk; `spill[i]` reads record i back."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(buffering=0)  # our own buffer below; reads go straight to the file
        self._close = weakref.finalize(self, self._file.close)
        self._ends = array("q", [0])  # record i is bytes [_ends[i], _ends[i + 1])
        self._buffer = bytearray()
        self._written = 0  # bytes already in the file; the rest is in _buffer

    def __len__(self) -> int:
        return len(self._ends) - 1

    def append(self, data: bytes) -> None:
        self._buffer += data
        self._ends.append(self._ends[-1] + len(data))
        if len(self._buffer) >= BUFFER:
            self._write()

    def __getitem__(self, i: int) -> bytes:
        lo, hi = self._ends[i], self._ends[i + 1]
        if lo >= self._written:
            return bytes(self._buffer[lo - self._written:hi - self._written])
        if hi > self._written:
            self._write()
        self._file.seek(lo)
        return self._read(hi - lo)

    def __iter__(self) -> Iterator[bytes]:
        """Every record in order, read in large blocks (do not index the spill while iterating it)."""
        self._write()
        self._file.seek(0)
        block, start = b"", 0  # `block` holds the file's bytes from offset `start`
        for i in range(len(self)):
            lo, hi = self._ends[i], self._ends[i + 1]
            if hi > start + len(block):
                block, start = block[lo - start:] + self._read(max(BUFFER, hi - start - len(block))), lo
            yield block[lo - start:hi - start]

    def close(self) -> None:
        self._close()

    def _read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n and (part := self._file.read(n - len(out))):
            out += part
        return bytes(out)

    def _write(self) -> None:
        if self._buffer:
            self._file.seek(self._written)
            view = memoryview(self._buffer)
            while view:  # unbuffered FileIO.write may write less than asked
                view = view[self._file.write(view):]
            self._written += len(self._buffer)
            self._buffer = bytearray()


class JsonSpill(Spill):
    """A Spill of JSON values."""

    def append(self, value: object) -> None:
        super().append(json.dumps(value, ensure_ascii=False).encode())

    def get(self, i: int) -> object:
        return json.loads(self[i])

    def values(self) -> Iterator[object]:
        return (json.loads(b) for b in self)
