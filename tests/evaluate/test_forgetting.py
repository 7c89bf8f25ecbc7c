import json

import pytest
import torch

from tunewise.config import ForgettingConfig
from tunewise.errors import DataError
from tunewise.evaluate.forgetting import (
    MCQuestion,
    _shipped,
    check_forgetting,
    kl_per_prompt,
    load_mc,
    load_prompts,
    mc_choices,
)
from tunewise.models import load_model
from tunewise.testing import build_model

QUESTIONS = [("what is this", ["sport", "business", "tech"]), ("what is the topic", ["film", "music"]),
             ("the match team", ["won", "lost", "game"]), ("i love it", ["good", "bad"]),
             ("the bank", ["money", "profit", "account"]), ("hello", ["world", "star"])]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_shipped_sets_load():
    assert len(load_mc(_shipped("general_mc.jsonl"))) >= 40
    assert len(load_prompts(_shipped("general_prompts.jsonl"))) >= 20


@pytest.mark.parametrize("row,message", [
    ({"choices": ["a", "b"], "answer": 0}, "question: expected non-empty text"),
    ({"question": "q", "choices": ["a"], "answer": 0}, "choices: expected a list of at least two"),
    ({"question": "q", "choices": ["a", "b"], "answer": 2}, "answer: must be one of the choices"),
    ({"question": "q", "choices": ["a", "b"], "answer": "c"}, "answer: must be one of the choices"),
])
def test_bad_mc_rows_name_file_line_and_field(tmp_path, row, message):
    path = write_jsonl(tmp_path / "mc.jsonl", [{"question": "ok", "choices": ["a", "b"], "answer": "a"}, row])
    with pytest.raises(DataError, match=rf"mc.jsonl:2: {message}"):
        load_mc(path)


def test_answer_as_text_or_index(tmp_path):
    path = write_jsonl(tmp_path / "mc.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": "b"},
                                               {"question": "q", "choices": ["a", "b"], "answer": 0}])
    assert [q.answer for q in load_mc(path)] == [1, 0]


@pytest.fixture
def peft_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(load_model(tiny_model_dir, "cpu"), LoraConfig(r=4, target_modules="all-linear"))


def test_untouched_adapter_forgets_nothing(peft_model, tiny_tokenizer):
    # LoRA's B matrices start at zero: the "fine-tuned" model is exactly its base.
    result = check_forgetting(ForgettingConfig(), peft_model, tiny_tokenizer)
    assert result.base_accuracy == result.tuned_accuracy
    assert result.mean_kl == pytest.approx(0, abs=1e-6)
    assert not result.flagged and result.questions >= 40


def test_a_different_model_is_flagged(tmp_path, tiny_model_dir, tiny_tokenizer):
    base = load_model(tiny_model_dir, "cpu")
    other = build_model(len(tiny_tokenizer), seed=7).eval()
    # Answer key = the base model's own picks: base scores 100 %, a different model cannot match all of them.
    questions = [MCQuestion(q, c, 0) for q, c in QUESTIONS]
    picks = mc_choices(base, tiny_tokenizer, questions)
    path = write_jsonl(tmp_path / "mc.jsonl", [{"question": q.question, "choices": q.choices, "answer": a}
                                               for q, a in zip(questions, picks)])
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "what is this", "response": "a film"}])
    cfg = ForgettingConfig(mc_path=path, prompts_path=prompts, max_kl=1e-3)
    result = check_forgetting(cfg, other, tiny_tokenizer, base_model=base)
    assert result.base_accuracy == 1.0
    assert result.tuned_accuracy < 1.0 and result.relative_drop > 0.05
    assert result.flagged and len(result.reasons) == 2  # the accuracy drop and the KL above max_kl
    assert result.mean_kl > 1e-3


def test_kl_is_zero_for_the_same_model_and_positive_otherwise(tiny_model_dir, tiny_tokenizer):
    base = load_model(tiny_model_dir, "cpu")
    items = [("what is this", "a film"), ("hello", "hello world . it was very nice")]
    assert kl_per_prompt(base, base, tiny_tokenizer, items) == pytest.approx([0, 0], abs=1e-6)
    with torch.no_grad():
        other = build_model(len(tiny_tokenizer), seed=3).eval()
    assert all(k > 0 for k in kl_per_prompt(base, other, tiny_tokenizer, items))
