from collections import Counter

from tunewise.config import DedupConfig
from tunewise.data.records import classification_record
from tunewise.data.split import remove_leaks, split_records


def _records(n=200):
    return [
        classification_record(
            f"row {i} about topic {i % 4} with words {i * 7}", f"c{i % 4}", {"user": f"u{i // 5}"}
        )
        for i in range(n)
    ]


def test_splits_are_deterministic_and_stratified():
    a = split_records(_records(), 0.1, 0.2, seed=1)
    b = split_records(_records(), 0.1, 0.2, seed=1)
    assert [[r.input_text for r in s] for s in a] == [[r.input_text for r in s] for s in b]
    train, val, test = a
    assert (len(train), len(val), len(test)) == (140, 20, 40)
    assert Counter(r.label for r in test) == {"c0": 10, "c1": 10, "c2": 10, "c3": 10}


def test_group_aware_split_keeps_each_group_in_one_split():
    train, val, test = split_records(_records(), 0.1, 0.2, seed=1, group_column="user")
    sides = [{r.meta["user"] for r in s} for s in (train, val, test)]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert len(train) + len(val) + len(test) == 200 and len(test) > 0 and len(val) > 0


def test_leaks_across_splits_are_removed_from_val_and_test():
    train = _records(20)
    val = [
        classification_record("row 3 about topic 3 with words 21", "c3"),  # exact copy of a train row
        classification_record("a genuinely new validation row", "c1"),
    ]
    test = [
        classification_record("row 5 about topic 1 with words 35 ", "c2"),  # same input, other label
        classification_record("a genuinely new validation row!", "c1"),  # near copy of a val row
        classification_record("something else entirely for test", "c0"),
    ]
    val, test, report = remove_leaks(train, val, test, DedupConfig(), classification=True)
    assert [r.input_text for r in val] == ["a genuinely new validation row"]
    assert [r.input_text for r in test] == ["something else entirely for test"]
    assert report.removed == {"val": 1, "test": 2} and report.exact == 2 and report.near == 1
