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
