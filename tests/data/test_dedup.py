import numpy as np

from tunewise.data.dedup import Deduper, banding, jaccard, shingle_hashes


def exact_jaccard(a: str, b: str) -> float:
    x = {a[i : i + 5] for i in range(len(a) - 4)}
    y = {b[i : i + 5] for i in range(len(b) - 4)}
    return len(x & y) / len(x | y)


def test_shingle_jaccard_matches_a_plain_set_computation():
    a, b = "i am still waiting on my new card", "i am still waiting on my new card please"
    assert abs(jaccard(shingle_hashes(a), shingle_hashes(b)) - exact_jaccard(a, b)) < 1e-9


def test_banding_finds_pairs_at_the_threshold_with_high_recall():
    b, r = banding(0.8, 64)
    assert b * r <= 64 and 1 - (1 - 0.8**r) ** b >= 0.999


def test_exact_and_near_duplicates_are_found_and_distinct_rows_are_not():
    d = Deduper(threshold=0.8, num_perm=64)
    rows = [
        "how do i top up my card with a bank transfer",  # 0 kept
        "how do i top up my card with a bank transfer",  # exact of 0
        "how do i top up my card with a bank transfer please",  # near of 0
        "what is the exchange rate for euros today",
    ]  # distinct
    found = []
    for i, text in enumerate(rows):
        match, probe = d.find(text)
        found.append(None if match is None else (match.kind, match.rep))
        if match is None:
            d.add(i, probe)
    assert found == [None, ("exact", 0), ("near", 0), None]
    assert exact_jaccard(rows[0], rows[2]) >= 0.8


def test_pairs_below_the_threshold_are_not_merged():
    d = Deduper(threshold=0.8, num_perm=64)
    a, b = "my card payment was declined at the shop", "my card payment was declined online yesterday"
    assert exact_jaccard(a, b) < 0.8
    _, probe = d.find(a)
    d.add(0, probe)
    assert d.find(b)[0] is None


def test_short_texts_hash_without_error():
    assert shingle_hashes("hi").size == 1
    assert isinstance(shingle_hashes("hello world"), np.ndarray)


def test_batched_signatures_equal_one_at_a_time_and_long_rows_are_chunked():
    from tunewise.data import dedup

    sets = [shingle_hashes(t) for t in ("short one", "another short text here", "x" * 3 + "abcdefghij" * 9000)]
    together = dedup.signatures(sets, 64)
    alone = np.stack([dedup.signatures([s], 64)[0] for s in sets])
    assert (together == alone).all()
    big = np.arange(dedup.CHUNK * 2 + 7, dtype=np.uint32)
    whole = dedup._top(dedup._hash(big, 64).min(axis=0))
    assert (dedup.signatures([big], 64)[0] == whole).all()


def test_minhash_estimate_tracks_the_true_jaccard():
    a = shingle_hashes("how do i top up my card with a bank transfer from my other account")
    b = shingle_hashes("how do i top up my card with a bank transfer from my savings account")
    from tunewise.data.dedup import signatures

    sa, sb = signatures([a, b], 256)
    assert abs(float(np.mean(sa == sb)) - jaccard(a, b)) < 0.1


def test_results_are_the_same_across_index_flushes(monkeypatch):
    import random

    from tunewise.data import band_index

    rnd = random.Random(3)
    vocab = ["card", "declined", "shop", "top", "up", "bank", "transfer", "exchange", "rate", "euros", "lost",
             "yesterday", "evening", "refund", "pending", "atm", "cash", "limit", "pin", "account"]
    rows = [" ".join(rnd.choice(vocab) for _ in range(10)) for _ in range(24)]
    rows += [r + "!" for r in rows[:12]] + rows[12:18]  # 12 near duplicates, 6 exact ones
    def run(flush: int) -> list:
        monkeypatch.setattr(band_index, "FLUSH", flush)
        d, found = Deduper(), []
        for start in range(0, len(rows), 5):  # batches, as the scanner calls it
            probes = d.probes(rows[start:start + 5])
            d.lookup(probes)
            for i, p in enumerate(probes, start):
                m = d.match(p)
                found.append(None if m is None else (m.kind, m.rep))
                if m is None:
                    d.add(i, p)
        return found

    unflushed, flushed = run(10**9), run(3)
    assert flushed == unflushed
    assert sum(f is not None and f[0] == "near" for f in flushed) == 12
    assert sum(f is not None and f[0] == "exact" for f in flushed) == 6
    assert flushed[:24] == [None] * 24


def test_batched_shingles_equal_one_text_at_a_time():
    from tunewise.data.dedup import shingle_batch

    texts = ["", "hi", "abcd", "abcde", "hello world", "naïve café 😀 emoji", "x" * 50, "short", "a\nb\tc d"]
    for got, text in zip(shingle_batch(texts), texts, strict=True):
        assert (got == shingle_hashes(text)).all() and got.dtype == np.uint32
    assert shingle_batch([]) == []


def test_memory_per_indexed_row_is_small_and_shingles_stay_on_disk(monkeypatch):
    """The deduper keeps ~172 bytes a row in memory (index entries, ids, offsets; 177 measured); the shingle
    sets (~4 bytes per character) are on disk. With FLUSH small, the dict part is flushed often and does not
    blur the measurement; the spill's write buffer (1 MiB) likewise."""
    import gc
    import random
    import tracemalloc

    from tunewise.data import band_index, spill

    monkeypatch.setattr(band_index, "FLUSH", 256)
    monkeypatch.setattr(spill, "BUFFER", 4096)
    rnd = random.Random(5)
    words = [f"w{i}" for i in range(2000)]
    texts = [" ".join(rnd.choice(words) for _ in range(40)) for _ in range(3000)]  # ~200 chars a row
    d = Deduper()

    def index(rows: list[str], start: int) -> None:
        for i in range(0, len(rows), 500):
            probes = d.probes(rows[i:i + 500])
            d.lookup(probes)
            for j, p in enumerate(probes, start + i):
                if d.match(p) is None:
                    d.add(j, p)

    def flush() -> None:  # the dict part out of the way: what remains is what every row leaves behind
        d._index.flush()
        d._exact.flush()
        gc.collect()

    tracemalloc.start()  # before the first row: only what is allocated while tracing is counted
    try:
        index(texts[:1000], 0)
        flush()
        before = tracemalloc.get_traced_memory()[0]
        index(texts[1000:], 1000)
        flush()
        per_row = (tracemalloc.get_traced_memory()[0] - before) / 2000
    finally:
        tracemalloc.stop()
    assert len(d._ids) == 3000
    assert per_row < 200, per_row  # in-memory shingles alone would be ~800 bytes a row here
