"""The feedback gate must judge a retrained model on corrections it did not train on: a model that only
memorised its training corrections passes on those and must fail on the held-out ones."""

from tests.monitor.test_feedback import LABELS, corrections, text
from tunewise.monitor.feedback import split_corrections
from tunewise.registry.gate import feedback_gate


def production(rows):
    """Production got every correction wrong: that is why it was corrected."""
    return [LABELS[1 - LABELS.index(r["label"])] for r in rows]


def score(answers, rows) -> list[float]:
    return [float(a == r["label"]) for a, r in zip(answers, rows)]


def test_a_candidate_that_memorised_its_training_corrections_fails_on_held_out_ones():
    split = split_corrections(corrections(40), 0.3, 5, seed=0)
    memory = {text(r): r["label"] for r in split.train}

    def memoriser(rows):  # recites what it trained on, answers like production otherwise
        return [memory.get(text(r), a) for r, a in zip(rows, production(rows))]

    on_trained = feedback_gate(score(memoriser(split.train), split.train),
                               score(production(split.train), split.train), len(split.train), 0.05)
    assert on_trained.passed and on_trained.candidate == 1.0  # what scoring the training corrections would say
    held = feedback_gate(score(memoriser(split.held_out), split.held_out),
                         score(production(split.held_out), split.held_out), len(split.train), 0.05)
    assert not held.passed and held.candidate == held.production == 0.0 and held.n == 12


def test_a_candidate_that_learnt_the_rule_passes_on_held_out_ones():
    split = split_corrections(corrections(40), 0.3, 5, seed=0)
    right = [r["label"] for r in split.held_out]
    gate = feedback_gate(score(right, split.held_out), score(production(split.held_out), split.held_out),
                         len(split.train), 0.05)
    assert gate.passed and gate.difference == 1.0 and gate.p_value == 0.0
    assert "on 12 held-out feedback corrections (not trained on; 28 were)" in gate.summary()


def test_no_worse_is_not_enough():
    # Production is right on half, the candidate on the same half: equal, so not promoted.
    gate = feedback_gate([1.0, 0.0] * 6, [1.0, 0.0] * 6, 28, 0.05)
    assert not gate.passed and gate.difference == 0.0
