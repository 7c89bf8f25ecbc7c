from tunewise.data.clusters import MAX_MEMBERS, ClusterTable
from tunewise.data.spill import JsonSpill


def _where(n: int) -> JsonSpill:
    where = JsonSpill()
    for i in range(n):
        where.append([f"f{i}.jsonl", i + 1, None, f"text {i}"])
    return where


def test_largest_clusters_in_size_order_ties_in_the_order_they_began():
    table = ClusterTable(_where(6))
    for rep, line in [(4, 10), (1, 11), (4, 12), (2, 13), (1, 14), (5, 15)]:
        table.add(rep, {"file": "dup.jsonl", "line": line})
    assert len(table) == 4
    top = table.largest(3)
    assert [c.representative["line"] for c in top] == [5, 2, 3]  # rows 4, 1 (size 3, 4 began first), 2
    assert [c.size for c in top] == [3, 3, 2]
    assert top[0].representative == {"file": "f4.jsonl", "line": 5, "text": "text 4"}
    assert [m["line"] for m in top[0].members] == [10, 12]


def test_every_member_is_counted_and_the_first_ones_listed():
    table = ClusterTable(_where(1))
    for line in range(25):
        table.add(0, {"line": line})
    (c,) = table.largest(50)
    assert c.size == 26
    assert [m["line"] for m in c.members] == list(range(MAX_MEMBERS))
