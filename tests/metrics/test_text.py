"""Multi-reference BLEU, chrF and ROUGE against the libraries' own multi-reference scoring."""

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from tunewise.metrics.text import reference_streams, resampled_text, text_examples

PREDS = ["The Eagle is a cheap French restaurant by the river.", "Blue Spice is a coffee shop in the centre.",
         "Aromi serves Italian food.", "hello world"]
REFS = [["The Eagle is a cheap French place by the riverside.", "Cheap French food at The Eagle, by the river."],
        ["Blue Spice is a coffee shop in the city centre.", "In the city centre there is a coffee shop, Blue Spice.",
         "Blue Spice: coffee shop, city centre."],
        ["Aromi is an Italian restaurant."],
        ["hello world", "hi world"]]
WHOLE = np.arange(len(PREDS))[None, :]


def test_streams_are_transposed_and_padded_with_none():
    assert reference_streams([["a", "b"], ["c"]]) == [["a", "c"], ["b", None]]


def test_multi_reference_bleu_and_chrf_equal_sacrebleus():
    # sacrebleu's own layout: one stream per reference position, None where an example has fewer.
    streams = [[r[j] if j < len(r) else None for r in REFS] for j in range(3)]
    got = resampled_text(text_examples(PREDS, REFS), WHOLE)
    assert got["bleu"][0] == pytest.approx(sacrebleu.corpus_bleu(PREDS, streams).score)
    assert got["chrf"][0] == pytest.approx(sacrebleu.corpus_chrf(PREDS, streams).score)
    # More references can only help: the first reference alone scores lower here.
    single = resampled_text(text_examples(PREDS, [r[0] for r in REFS]), WHOLE)
    assert single["bleu"][0] < got["bleu"][0]


def test_rouge_l_is_against_the_best_reference_and_exact_match_any():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    best = [max(scorer.score(r, p)["rougeL"].fmeasure for r in refs) for p, refs in zip(PREDS, REFS)]
    got = resampled_text(text_examples(PREDS, REFS), WHOLE)
    assert got["rouge_l"][0] == pytest.approx(np.mean(best))
    assert got["exact_match"][0] == pytest.approx(1 / 4)  # "hello world" matches its first reference


def test_resamples_equal_scoring_each_resample_from_scratch():
    ex = text_examples(PREDS, REFS)
    idx = np.array([[0, 0, 1, 3], [2, 1, 2, 2]])
    got = resampled_text(ex, idx)
    for r, row in enumerate(idx):
        p, refs = [PREDS[i] for i in row], [REFS[i] for i in row]
        assert got["bleu"][r] == pytest.approx(sacrebleu.corpus_bleu(p, reference_streams(refs)).score)
        assert got["chrf"][r] == pytest.approx(sacrebleu.corpus_chrf(p, reference_streams(refs)).score)
