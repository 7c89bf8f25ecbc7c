"""Records: several rows answering one input become one multi-reference test example."""

from tunewise.data.records import Record, group_references


def _row(prompt: str, answer: str, **meta) -> Record:
    return Record([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}], meta=meta)


def test_rows_with_the_same_prompt_are_grouped_in_first_seen_order():
    rows = [_row("mr a", "ref 1", line=2), _row("mr b", "ref 3"), _row("mr a", "ref 2", leaked_from_train=True),
            _row("mr a", "ref 1")]
    a, b = group_references(rows)
    assert (a.input_text, a.answer, a.references) == ("mr a", "ref 1", ["ref 1", "ref 2"])
    assert a.meta == {"line": 2, "rows": 3, "leaked_from_train": True}
    assert b.references == ["ref 3"] and b.all_references == ["ref 3"]
    assert a.to_json()["references"] == ["ref 1", "ref 2"] and "references" not in rows[1].to_json()
    assert rows[0].references is None  # the rows themselves are left alone


def test_a_different_system_turn_is_a_different_input():
    sys_row = Record([{"role": "system", "content": "be brief"}, *_row("mr a", "x").messages])
    assert len(group_references([sys_row, _row("mr a", "y")])) == 2
