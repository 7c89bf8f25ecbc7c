import pytest
import torch

from tunewise.data.encode import encode_prompt
from tunewise.evaluate.score import _groups, answer_ids, answer_nll, score_continuations, score_labels
from tunewise.models import load_model

PROMPTS = [[{"role": "user", "content": "classify the text . " + "the match team won " * k}] for k in (1, 4, 2)]
LABELS = ["sport", "business", "card arrival", "card"]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir, "cpu")


def naive_logprob(model, prompt: list[int], cont: list[int]) -> float:
    """Reference: the whole prompt + continuation in one unpadded sequence, no cache."""
    with torch.no_grad():
        lp = model(torch.tensor([prompt + cont])).logits.log_softmax(-1)[0]
    return sum(lp[len(prompt) - 1 + j, cont[j]].item() for j in range(len(cont)))


def test_answer_ids_end_with_end_of_turn(tiny_tokenizer):
    ids = answer_ids(tiny_tokenizer, PROMPTS[0], "card arrival")
    assert ids[-1] == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tiny_tokenizer.decode(ids[:-1]) == "card arrival"


@pytest.mark.parametrize("max_tokens,max_examples", [(8, 1), (100, 3), (10_000, 16)])
def test_shared_prompt_scoring_equals_full_sequence_scoring(model, tiny_tokenizer, max_tokens, max_examples):
    # One example alone, several left-padded in a batch with per-example continuation sets: all must agree
    # with scoring each full sequence separately.
    prompts = [encode_prompt(tiny_tokenizer, p) for p in PROMPTS]
    conts = [[answer_ids(tiny_tokenizer, p, lab) for lab in LABELS[: 2 + i]] for i, p in enumerate(PROMPTS)]
    scored = score_continuations(model, prompts, conts, tiny_tokenizer.pad_token_id, max_tokens, max_examples)
    for i in range(len(prompts)):
        expected = [naive_logprob(model, prompts[i], c) for c in conts[i]]
        assert scored.logprobs[i] == pytest.approx(expected, abs=1e-4)
        assert scored.lengths[i] == [len(c) for c in conts[i]]


def test_groups_respect_the_token_budget():
    prompts = [[1] * 5] * 6
    conts = [[[1, 2, 3]] * 4] * 6  # 4 rows × 3 tokens = 12 per example
    groups = _groups(list(range(6)), prompts, conts, max_tokens=24, max_examples=16)
    assert groups == [[0, 1], [2, 3], [4, 5]]
    assert _groups(list(range(6)), prompts, conts, max_tokens=5, max_examples=16) == [[i] for i in range(6)]


def test_score_labels_picks_the_most_likely_label(model, tiny_tokenizer):
    best, scored = score_labels(model, tiny_tokenizer, PROMPTS, LABELS)
    for b, s in zip(best, scored.logprobs):
        assert b == LABELS[max(range(len(LABELS)), key=s.__getitem__)]
    assert scored.prompt_tokens == [len(encode_prompt(tiny_tokenizer, p)) for p in PROMPTS]


def test_answer_nll_is_minus_the_logprob(model, tiny_tokenizer):
    answers = ["the team won", "profit", "hello world"]
    nll, tokens = answer_nll(model, tiny_tokenizer, PROMPTS, answers)
    for p, a, v, n in zip(PROMPTS, answers, nll, tokens):
        ids = answer_ids(tiny_tokenizer, p, a)
        assert n == len(ids)
        assert v == pytest.approx(-naive_logprob(model, encode_prompt(tiny_tokenizer, p), ids), abs=1e-4)
