"""Exact and near-duplicate detection, one row at a time (streaming), with the per-row hashing done in batches.

Exact: a 128-bit digest of the normalised text. Near: character 5-gram shingles, MinHash + LSH banding to find
candidates, then the exact Jaccard of the shingle sets to decide. Because every candidate is verified, the
banding is tuned for recall (>= 99.9% at the threshold) rather than balanced against false positives: a false
candidate costs one set intersection, a missed duplicate cannot be recovered.

num_perm defaults to 64: the signatures only propose candidates, so their estimation error does not decide
anything; 64 permutations in 16 bands of 4 find a pair at Jaccard 0.8 with probability 0.9998.

Why not datasketch: its MinHashLSH keeps, per band, a dict from the band's bytes to a Python set of keys, most
of the data pass's memory per row and a third of its CPU (docs/data_doctor.md, "Speed work"). Here a band is
one 32-bit key in a compact index (band_index.py: 8 bytes per band entry), the kept rows' shingle sets wait on
disk (spill.py) for the few candidates that need them, and the MinHash of a whole batch of rows is one
vectorised numpy computation (multiply-shift hashing of all shingles at once, then a segmented minimum)."""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass, field

import numpy as np

from tunewise.data.band_index import BandIndex
from tunewise.data.spill import Spill

SHINGLE = 5
LONG_TEXT = 4096  # shingles kept per row for exact verification; longer rows are verified by their signature
_POWERS = np.array([31**k for k in range(SHINGLE - 1, -1, -1)], dtype=np.uint32)
_MAX_PERM = 512
CHUNK = 2048  # shingles hashed per numpy call: × num_perm × 8 bytes = 1 MiB, stays in cache (32k: 2.4× slower)


def _params(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=_MAX_PERM, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd
    b = rng.integers(0, 2**63, size=_MAX_PERM, dtype=np.uint64)
    band = rng.integers(1, 2**63, size=_MAX_PERM, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    salt = rng.integers(0, 2**63, size=_MAX_PERM, dtype=np.uint64) * np.uint64(2)
    return a, b, band, salt


_A, _B, _BAND, _SALT = _params()


def shingle_hashes(text: str) -> np.ndarray:
    """Sorted unique 32-bit hashes of the character 5-grams (a polynomial hash over code points, vectorised:
    a Python loop over shingles would cost more than the MinHash itself)."""
    cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    if len(cp) < SHINGLE:
        cp = np.concatenate([cp, np.zeros(SHINGLE - len(cp), dtype=np.uint32)])
    n = len(cp) - SHINGLE + 1
    h = cp[:n] * _POWERS[0]
    for k in range(1, SHINGLE):
        h = h + cp[k:k + n] * _POWERS[k]
    return np.unique(h)


def shingle_batch(texts: list[str]) -> list[np.ndarray]:
    """`shingle_hashes` of many texts with a constant number of numpy calls: the polynomial hash over all texts
    end to end, windows that cross two texts dropped, then one sort of (text number, hash) pairs: numpy calls
    per text cost more in overhead than their hashing (docs/data_doctor.md, "Speed work")."""
    if not texts:
        return []
    pad = b"\0\0\0\0"
    enc = [t.encode("utf-32-le") for t in texts]
    enc = [e + pad * (SHINGLE - len(e) // 4) if len(e) < 4 * SHINGLE else e for e in enc]
    cp = np.frombuffer(b"".join(enc), dtype=np.uint32)
    lengths = np.fromiter((len(e) // 4 for e in enc), dtype=np.int64, count=len(enc))
    n = len(cp) - SHINGLE + 1
    h = cp[:n] * _POWERS[0]
    for k in range(1, SHINGLE):
        h = h + cp[k:k + n] * _POWERS[k]
    row = np.repeat(np.arange(len(enc), dtype=np.uint64), lengths)[:n]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    valid = np.arange(n) - starts[row.astype(np.int64)] <= (lengths - SHINGLE)[row.astype(np.int64)]
    pairs = _sorted_unique((row[valid] << np.uint64(32)) | h[valid].astype(np.uint64))
    bounds = np.searchsorted(pairs >> np.uint64(32), np.arange(len(enc) + 1, dtype=np.uint64)).tolist()
    values = (pairs & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return [values[bounds[i]:bounds[i + 1]] for i in range(len(enc))]


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique by sort + neighbour compare: numpy 2's np.unique takes a hash-table path first, slower on
    these arrays (docs/data_doctor.md, "Speed work")."""
    x.sort()
    keep = np.empty(x.size, dtype=bool)
    keep[:1] = True
    np.not_equal(x[1:], x[:-1], out=keep[1:])
    return x[keep]


def signatures(shingle_sets: list[np.ndarray], num_perm: int) -> np.ndarray:
    """MinHash signatures (rows × num_perm, uint32) of many shingle sets, vectorised: each permutation is a
    multiply-shift hash (a·x + b mod 2^64, top 32 bits; Dietzfelbinger et al. 1997), minimised per row.
    Sets are hashed in groups of at most CHUNK shingles so the temporary matrix stays in cache."""
    out = np.empty((len(shingle_sets), num_perm), dtype=np.uint32)
    group: list[int] = []
    total = 0
    for i, s in enumerate(shingle_sets):
        if s.size > CHUNK:  # one long row: its own slices, minimum across them
            out[i] = _top(np.min([_hash(s[j:j + CHUNK], num_perm).min(axis=0)
                                  for j in range(0, s.size, CHUNK)], axis=0))
            continue
        if total + s.size > CHUNK:
            _group_min(shingle_sets, group, num_perm, out)
            group, total = [], 0
        group.append(i)
        total += s.size
    _group_min(shingle_sets, group, num_perm, out)
    return out


def _hash(x: np.ndarray, num_perm: int) -> np.ndarray:
    """a·x + b mod 2^64 for every shingle and permutation, in place. The top-32-bit shift comes after the
    minimum (`_top`): the shift is monotone, so min(h >> 32) == min(h) >> 32, and the big matrix is spared it."""
    with np.errstate(over="ignore"):
        h = np.multiply(x.astype(np.uint64)[:, None], _A[None, :num_perm])
        h += _B[None, :num_perm]
    return h


def _top(h: np.ndarray) -> np.ndarray:
    return (h >> np.uint64(32)).astype(np.uint32)


def _group_min(sets: list[np.ndarray], group: list[int], num_perm: int, out: np.ndarray) -> None:
    if not group:
        return
    sizes = np.fromiter((sets[i].size for i in group), dtype=np.int64, count=len(group))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    h = _hash(np.concatenate([sets[i] for i in group]), num_perm)
    out[group] = _top(np.minimum.reduceat(h, starts, axis=0))


def band_keys(sigs: np.ndarray, bands: tuple[int, int]) -> np.ndarray:
    """One 32-bit key per (row, band): the top half of a random linear combination of the band's values mod
    2^64, xor a per-band salt so all bands can share one table. Two rows share a key when their band is equal,
    or by accident: with n rows indexed, a row meets ~16·n/2^32 accidental candidates (0.01 at 200k rows),
    each rejected by the exact Jaccard check. 32 bits rather than 64 save 64 bytes of index per kept row."""
    b, r = bands
    part = sigs[:, : b * r].astype(np.uint64).reshape(len(sigs), b, r)
    with np.errstate(over="ignore"):
        keys = (part * _BAND[:r][None, None, :]).sum(axis=2, dtype=np.uint64) ^ _SALT[None, :b]
    return (keys >> np.uint64(32)).astype(np.uint32)


def banding(threshold: float, num_perm: int, recall: float = 0.999) -> tuple[int, int]:
    """(bands, rows per band): the most selective banding that still finds a pair at `threshold` with
    probability >= `recall`."""
    for r in range(num_perm // 2, 0, -1):
        b = num_perm // r
        if b >= 2 and 1 - (1 - threshold**r) ** b >= recall:
            return b, r
    return num_perm // 1, 1


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


@dataclass
class Match:
    kind: str  # "exact" or "near"
    rep: int  # id of the row already kept that this one duplicates
    similarity: float


@dataclass
class Probe:
    """What the deduper computed for a row (pure functions of its text, so batches can be computed ahead and
    in worker processes); `find` and `add` use it when the row's turn comes."""

    digest: bytes
    shingles: np.ndarray | None = None
    signature: np.ndarray | None = None  # uint32[num_perm]
    keys: np.ndarray | None = None  # uint32, one LSH key per band
    candidates: set[int] | None = None  # slots from the index's sorted part (`Deduper.lookup`)
    exact_candidates: set[int] | None = None  # the same for the digest
    key_list: list[int] | None = None  # `keys` as Python ints, for the index's dict part (set by lookup)
    head: int = field(init=False)  # the digest's first 64 bits: its key in the exact index
    tail: int = field(init=False)  # its last 64 bits: compared on a key match, so all 128 bits decide

    def __post_init__(self) -> None:
        self.head = int.from_bytes(self.digest[:8], "little")
        self.tail = int.from_bytes(self.digest[8:], "little")


@dataclass
class PackedProbes:
    """Probes of many rows as a few flat arrays: what worker processes send back. Pickling a numpy array per
    row and field costs more than computing it (docs/data_doctor.md, "Speed work")."""

    digests: list[bytes]
    shingles: np.ndarray  # all rows' shingles, concatenated
    offsets: np.ndarray
    signatures: np.ndarray
    keys: np.ndarray


def pack(probes: list[Probe]) -> PackedProbes | list[Probe]:
    if not probes or any(p.shingles is None for p in probes):
        return probes
    offsets = np.concatenate([[0], np.cumsum([p.shingles.size for p in probes])])
    return PackedProbes([p.digest for p in probes], np.concatenate([p.shingles for p in probes]), offsets,
                        np.stack([p.signature for p in probes]), np.stack([p.keys for p in probes]))


def unpack(packed: PackedProbes | list[Probe]) -> list[Probe]:
    if isinstance(packed, list):
        return packed
    o = packed.offsets.tolist()
    return [Probe(d, packed.shingles[o[i]:o[i + 1]], packed.signatures[i], packed.keys[i])
            for i, d in enumerate(packed.digests)]


class Deduper:
    """What stays in memory per indexed row: 16 band entries × 8 bytes, an exact-index entry (12 bytes) and
    the digest's tail (8), two row ids (16) and the shingle store's offset (8): 172 bytes, plus the last
    FLUSH rows' entries in dicts. The shingle sets themselves (~0.5 KiB a Banking77 row) are on disk, read back
    only for candidates."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 64, exact: bool = True, near: bool = True):
        self.threshold, self.use_exact, self.use_near, self.num_perm = threshold, exact, near, num_perm
        self.bands = banding(threshold, num_perm)
        self._index = BandIndex(np.uint32)
        self._kept = Spill()  # slot → uint32 shingles (short rows) or signature (long rows), on disk
        self._long: set[int] = set()  # slots of long rows (over LONG_TEXT shingles: rare)
        self._ids = array("q")  # slot → the caller's row id
        self._exact = BandIndex(np.uint64)  # digest head → exact slot
        self._tails = array("Q")  # exact slot → digest tail
        self._exact_ids = array("q")  # exact slot → the caller's row id

    def probes(self, texts: list[str]) -> list[Probe]:
        """Digests, shingles, signatures and band keys of a batch of texts, computed together."""
        out = [Probe(hashlib.blake2b(t.encode(), digest_size=16).digest()) for t in texts]
        if not self.use_near or not texts:
            return out
        shingles = shingle_batch(texts)
        sigs = signatures(shingles, self.num_perm)
        keys = band_keys(sigs, self.bands)
        for p, s, sig, k in zip(out, shingles, sigs, keys, strict=True):
            p.shingles, p.signature, p.keys = s, sig, k
        return out

    def lookup(self, probes: list[Probe]) -> None:
        """Candidates of a batch in the index's sorted part, in one vectorised call; rows added after this
        (earlier rows of the same batch) are still seen by `match`. Call before matching a batch."""
        if self._index.due():
            self._index.flush()
        if self._exact.due():
            self._exact.flush()
        if self.use_exact and probes:
            heads = np.array([[p.head] for p in probes], dtype=np.uint64)
            for p, found in zip(probes, self._exact.lookup(heads), strict=True):
                p.exact_candidates = found
        near = [p for p in probes if p.keys is not None]
        if near:
            keys = np.stack([p.keys for p in near])
            for p, found, key_list in zip(near, self._index.lookup(keys), keys.tolist(), strict=True):
                p.candidates, p.key_list = found, key_list

    def find(self, text: str) -> tuple[Match | None, Probe]:
        probe = self.probes([text])[0]
        self.lookup([probe])
        return self.match(probe), probe

    def match(self, probe: Probe) -> Match | None:
        """The best duplicate of a probed (and looked-up) row among the rows added so far, or None."""
        if self.use_exact:
            found = self._exact.recent([probe.head], probe.exact_candidates or set())
            same = [e for e in found if self._tails[e] == probe.tail]
            if same:  # the first row added with this digest, as a dict's setdefault would keep
                return Match("exact", self._exact_ids[min(same)], 1.0)
        if not self.use_near or probe.keys is None:
            return None
        best: Match | None = None
        for slot in self._index.recent(probe.key_list, probe.candidates or set()):
            if slot not in self._long and probe.shingles.size <= LONG_TEXT:
                sim = jaccard(probe.shingles, self._stored(slot))
            else:  # a long row on either side: the MinHash estimate (std <= 0.06 at 64 permutations)
                sim = float(np.mean(probe.signature == self._signature(slot)))
            if sim >= self.threshold and (best is None or sim > best.similarity):
                best = Match("near", self._ids[slot], sim)
        return best

    def _stored(self, slot: int) -> np.ndarray:
        return np.frombuffer(self._kept[slot], dtype=np.uint32)

    def _signature(self, slot: int) -> np.ndarray:
        if slot in self._long:
            return self._stored(slot)
        return signatures([self._stored(slot)], self.num_perm)[0]

    def add(self, row_id: int, probe: Probe) -> None:
        """Index a kept row so later rows are compared with it."""
        if self.use_exact:
            self._exact.add(len(self._tails), [probe.head])
            self._tails.append(probe.tail)
            self._exact_ids.append(row_id)
        if probe.keys is None:
            return
        slot = len(self._ids)
        self._ids.append(row_id)
        self._index.add(slot, probe.key_list)
        if probe.shingles.size > LONG_TEXT:
            self._kept.append(probe.signature.tobytes())
            self._long.add(slot)
        else:
            self._kept.append(probe.shingles.tobytes())
