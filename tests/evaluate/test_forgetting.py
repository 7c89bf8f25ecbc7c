import json

import pytest
import torch

from tunewise.config import ForgettingConfig
from tunewise.errors import DataError
from tunewise.evaluate.compare import paired_bootstrap
from tunewise.evaluate.forgetting import (
    MCQuestion,
    check_forgetting,
    drop_flagged,
    kl_per_prompt,
    load_mc,
    load_prompts,
    mc_choices,
    shipped,
)
from tunewise.models import load_model
from tunewise.testing import build_model, save_tiny_model

QUESTIONS = [("what is this", ["sport", "business", "tech"]), ("what is the topic", ["film", "music"]),
             ("the match team", ["won", "lost", "game"]), ("i love it", ["good", "bad"]),
             ("the bank", ["money", "profit", "account"]), ("hello", ["world", "star"])]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_shipped_sets_load():
    assert len(load_mc(shipped("general_mc.jsonl"))) >= 400
    assert len(load_prompts(shipped("general_prompts.jsonl"))) >= 20


def test_every_shipped_question_has_four_distinct_choices_its_answer_among_them_and_no_twin():
    rows = [json.loads(line) for line in shipped("general_mc.jsonl").read_text().splitlines()]
    assert all(len(r["choices"]) == 4 == len(set(r["choices"])) and r["answer"] in r["choices"] for r in rows)
    questions = [r["question"].strip().lower() for r in rows]
    assert len(set(questions)) == len(questions)
    assert sum(r["source"] == "written" for r in rows) >= 200  # the rest is generated, with computed answers


def test_the_shipped_set_is_what_the_build_script_makes():
    from tunewise.evaluate.general_mc_build import build, written_rows

    rows = [json.loads(line) for line in shipped("general_mc.jsonl").read_text().splitlines()]
    assert build(written_rows()) == rows


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


@pytest.fixture(scope="module")
def peaky_model_dir(tmp_path_factory):
    # Wider initial weights than the default 0.02: next-token distributions then depend on the input and are far
    # from uniform, so a change of the weights shows in the KL (at 0.02 every model is near uniform).
    return save_tiny_model(tmp_path_factory.mktemp("peaky"), seed=0, initializer_range=0.5)


@pytest.fixture
def small_sets(tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "what is this", "response": "a film"},
                                                 {"prompt": "hello", "response": "hello world . it was very nice"}])
    mc = write_jsonl(tmp_path / "mc.jsonl", [{"question": q, "choices": c, "answer": 0} for q, c in QUESTIONS])
    return ForgettingConfig(mc_path=mc, prompts_path=prompts)


def noisy_adapter(model_dir, std: float, seed: int = 0):
    """A PEFT model whose LoRA B matrices are random (std `std`), so the fine-tuned model differs from its base."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(load_model(model_dir, "cpu"), LoraConfig(r=4, target_modules="all-linear"))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model.eval()


def test_a_slightly_changed_model_is_measured_but_not_flagged(peaky_model_dir, tiny_tokenizer, small_sets):
    # B with std 0.01 moves the model a little (KL ~0.015 nats/token here), far under the default max_kl.
    result = check_forgetting(small_sets, noisy_adapter(peaky_model_dir, 0.01), tiny_tokenizer)
    assert 1e-4 < result.mean_kl < ForgettingConfig().max_kl and not result.flagged
    assert result.difference_ci[0] <= result.difference_ci[1] and result.questions == len(QUESTIONS)


def test_a_damaged_model_is_flagged_by_the_default_kl_gate(peaky_model_dir, tiny_tokenizer, small_sets):
    # B with std 1.0 wrecks the model (KL ~6 nats/token here): the default gate must say so.
    result = check_forgetting(small_sets, noisy_adapter(peaky_model_dir, 1.0), tiny_tokenizer)
    assert result.mean_kl > ForgettingConfig().max_kl and result.flagged
    assert any(r.startswith("KL divergence from the base model") for r in result.reasons)


def _paired(n: int, both: int, lost: int, gained: int) -> tuple[list[float], list[float]]:
    """(tuned, base) correctness on n questions: both right on `both`, base only on `lost`, tuned only on `gained`."""
    base = [1.0] * both + [1.0] * lost + [0.0] * gained
    tuned = [1.0] * both + [0.0] * lost + [1.0] * gained
    return tuned + [0.0] * (n - len(base)), base + [0.0] * (n - len(base))


def test_a_five_point_drop_on_400_questions_is_flagged_and_an_even_swap_is_not():
    tuned, base = _paired(400, 150, lost=30, gained=10)  # 5 points lost, 10 % of answers changed
    ci = paired_bootstrap(tuned, base)["ci"]
    assert ci[1] < 0 and drop_flagged((sum(base) - sum(tuned)) / 400, ci, 0.02)
    tuned, base = _paired(400, 150, lost=20, gained=20)
    assert not drop_flagged(0.0, paired_bootstrap(tuned, base)["ci"], 0.02)


@pytest.mark.parametrize("drop,ci,max_drop,flagged", [
    (0.05, (-0.08, -0.02), 0.02, True),
    (0.05, (-0.11, 0.01), 0.02, False),  # the CI reaches 0: could be noise
    (0.01, (-0.015, -0.005), 0.02, False),  # significant, but within the tolerance
    (-0.03, (0.01, 0.05), 0.0, False),  # an improvement
])
def test_the_drop_rule_needs_significance_and_size(drop, ci, max_drop, flagged):
    assert drop_flagged(drop, ci, max_drop) is flagged


def test_a_different_model_is_flagged(tmp_path, tiny_model_dir, tiny_tokenizer):
    base = load_model(tiny_model_dir, "cpu")
    other = build_model(len(tiny_tokenizer), seed=7).eval()
    # Answer key = the base model's own picks: base scores 100 %, a different model cannot match all of them.
    questions = [MCQuestion(f"{q} {i}", c, 0) for i in range(8) for q, c in QUESTIONS]
    picks = mc_choices(base, tiny_tokenizer, questions)
    path = write_jsonl(tmp_path / "mc.jsonl", [{"question": q.question, "choices": q.choices, "answer": a}
                                               for q, a in zip(questions, picks)])
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "what is this", "response": "a film"}])
    cfg = ForgettingConfig(mc_path=path, prompts_path=prompts, max_kl=1e-3)
    result = check_forgetting(cfg, other, tiny_tokenizer, base_model=base)
    assert result.base_accuracy == 1.0 and result.questions == 48
    assert result.tuned_accuracy < 0.9 and result.difference_ci[1] < 0
    assert result.flagged and len(result.reasons) == 2  # the accuracy drop and the KL above max_kl
    assert result.reasons[0].startswith("general multiple-choice accuracy fell 1.000 →")
    assert result.mean_kl > 1e-3


def test_kl_is_zero_for_the_same_model_and_positive_otherwise(tiny_model_dir, tiny_tokenizer):
    base = load_model(tiny_model_dir, "cpu")
    items = [("what is this", "a film"), ("hello", "hello world . it was very nice")]
    assert kl_per_prompt(base, base, tiny_tokenizer, items) == pytest.approx([0, 0], abs=1e-6)
    with torch.no_grad():
        other = build_model(len(tiny_tokenizer), seed=3).eval()
    assert all(k > 0 for k in kl_per_prompt(base, other, tiny_tokenizer, items))
