"""Scoring one LLM system: perplexity over every reference of a multi-reference test example."""

import pytest

from tunewise.config import parse_config
from tunewise.evaluate.score import answer_nll
from tunewise.evaluate.systems import reference_nll
from tunewise.models import load_model

PROMPTS = [[{"role": "user", "content": "hello " + "the match team won " * k}] for k in (1, 3)]
REFERENCES = [["the team won", "the match", "i love it"], ["hello world"]]


def test_reference_nll_sums_every_reference_with_the_prompt_run_once(tiny_model_dir, tiny_tokenizer):
    model = load_model(tiny_model_dir, "cpu")
    cfg = parse_config({"data": {"builtin": "bbc_news"}, "task": {"type": "generation"},
                        "eval": {"score_tokens_per_batch": 16, "batch_size": 2}})
    nll, tokens = reference_nll(cfg, model, tiny_tokenizer, PROMPTS, REFERENCES)
    flat = [(i, r) for i, refs in enumerate(REFERENCES) for r in refs]
    one_by_one, counts = answer_nll(model, tiny_tokenizer, [PROMPTS[i] for i, _ in flat], [r for _, r in flat])
    for i in range(len(PROMPTS)):
        assert nll[i] == pytest.approx(sum(n for (j, _), n in zip(flat, one_by_one) if j == i), rel=1e-4)
        assert tokens[i] == sum(c for (j, _), c in zip(flat, counts) if j == i)
