"""Duplicate clusters for the card, kept compact: every cluster is counted, the largest are listed.

Why not a dict of clusters with their members: it grows by ~0.5 KiB per duplicate row, all in memory, to
list 50 clusters at the end. Here a cluster's size lives in an array indexed by its representative (4 bytes a
kept row), its first members wait on disk, and the representatives' file, line and preview come from the
scanner's row spill. `largest` reads back only what the card lists."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from tunewise.data.spill import JsonSpill

MAX_MEMBERS = 10  # members listed per cluster (all are counted)


@dataclass
class Cluster:
    representative: dict  # file, line, text preview
    members: list[dict] = field(default_factory=list)
    size: int = 1


class ClusterTable:
    def __init__(self, where: JsonSpill) -> None:
        self._where = where  # row id → [file, line, label, preview]
        self._sizes = array("I")  # row id → rows in its cluster (0: none yet)
        self._order = array("q")  # representatives in the order their clusters began
        self._members = JsonSpill()  # [representative, member] for each cluster's first MAX_MEMBERS

    def __len__(self) -> int:
        return len(self._order)

    def add(self, rep: int, member: dict) -> None:
        """Count `member` as a duplicate of row `rep`."""
        if rep >= len(self._sizes):
            self._sizes.frombytes(bytes(4 * (len(self._where) - len(self._sizes))))
        if self._sizes[rep] == 0:
            self._sizes[rep] = 1
            self._order.append(rep)
        if self._sizes[rep] <= MAX_MEMBERS:
            self._members.append([rep, member])
        self._sizes[rep] += 1

    def largest(self, n: int) -> list[Cluster]:
        """The `n` largest clusters, ties in the order the clusters began (a stable sort by size)."""
        top = sorted(self._order, key=lambda rep: -self._sizes[rep])[:n]
        out = {}
        for rep in top:
            file, line, _, preview = self._where.get(rep)
            out[rep] = Cluster({"file": file, "line": line, "text": preview}, size=self._sizes[rep])
        for rep, member in self._members.values():
            if rep in out:
                out[rep].members.append(member)
        return list(out.values())
