import random

import pytest

from tunewise.errors import DataError
from tunewise.monitor.feedback import split_corrections
from tunewise.testing import WORDS

LABELS = ["negative", "positive"]


def corrections(n: int, seed: int = 0) -> list[dict]:
    """n correction rows with distinct random inputs (far from each other), labels alternating."""
    rng = random.Random(seed)
    words = [w for w in WORDS if w.isalpha()]
    rows = []
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(10))
        label = LABELS[i % 2]
        rows.append({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": label}],
                     "label": label, "meta": {"feedback_id": i}})
    return rows


def test_held_out_corrections_are_disjoint_seeded_and_stratified():
    rows = corrections(40)
    split = split_corrections(rows, 0.3, 5, seed=3)
    assert len(split.held_out) == 12 and len(split.train) == 28 and split.dropped == 0
    ids = lambda rs: {r["meta"]["feedback_id"] for r in rs}  # noqa: E731
    assert not ids(split.train) & ids(split.held_out) and ids(split.train) | ids(split.held_out) == set(range(40))
    assert {r["label"] for r in split.held_out} == set(LABELS)
    assert split_corrections(rows, 0.3, 5, seed=3) == split
    assert ids(split_corrections(rows, 0.3, 5, seed=4).held_out) != ids(split.held_out)


def test_at_least_the_minimum_is_held_out_and_some_are_left_to_train_on():
    assert len(split_corrections(corrections(10), 0.3, 5, seed=0).held_out) == 5
    with pytest.raises(DataError, match="5 feedback corrections: too few to hold out 5"):
        split_corrections(corrections(5), 0.3, 5, seed=0)


def test_held_out_repeats_of_trained_corrections_are_dropped():
    rows = corrections(30)
    repeated = [{**r, "meta": {"feedback_id": 100 + i}} for i, r in enumerate(rows[:10])]  # sent twice
    split = split_corrections(rows + repeated, 0.3, 2, seed=0)
    held = [text(r) for r in split.held_out]
    assert split.dropped > 0 and len(held) + split.dropped == 12
    assert len(set(held)) == len(held) and not set(held) & {text(r) for r in split.train}
    with pytest.raises(DataError, match="differ from the trained ones"):
        split_corrections(rows + repeated, 0.3, 12, seed=0)


def text(row: dict) -> str:
    return row["messages"][0]["content"]
