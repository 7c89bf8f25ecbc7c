import random

from tunewise.data import spill
from tunewise.data.spill import JsonSpill, Spill


def test_records_read_back_from_the_buffer_the_file_and_across_the_boundary(monkeypatch):
    monkeypatch.setattr(spill, "BUFFER", 64)  # many writes, and records split between file and buffer
    rnd = random.Random(0)
    records = [bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 40))) for _ in range(300)]
    s = Spill()
    for i, r in enumerate(records):
        s.append(r)
        j = rnd.randrange(i + 1)
        assert s[j] == records[j]  # reads interleaved with writes
    assert len(s) == 300
    assert [s[i] for i in range(300)] == records
    assert list(s) == records
    s.append(b"after iterating")
    assert s[300] == b"after iterating" and s[0] == records[0]


def test_iteration_reads_records_longer_than_the_buffer(monkeypatch):
    monkeypatch.setattr(spill, "BUFFER", 16)
    s = Spill()
    records = [b"x" * 100, b"", b"abc", b"y" * 37]
    for r in records:
        s.append(r)
    assert list(s) == records


def test_json_values_round_trip():
    s = JsonSpill()
    values = [["a.jsonl", 3, "card_arrival", "naïve café 😀"], {"file": "b", "similarity": 0.857}, None]
    for v in values:
        s.append(v)
    assert [s.get(i) for i in range(3)] == values
    assert list(s.values()) == values
