import pytest

from tests.evaluate.test_shots import bag_of_words
from tunewise.data import prepare
from tunewise.errors import ModelError
from tunewise.evaluate import compare_systems, evaluate, run_baselines, score_model
from tunewise.models import load_model, resolve_model
from tunewise.testing import tiny_config


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    folder = tmp_path_factory.mktemp("adapter")
    get_peft_model(load_model(tiny_model_dir, "cpu"), LoraConfig(r=4, target_modules="all-linear")).save_pretrained(
        folder)
    return folder


@pytest.fixture(scope="module")
def trained_adapter(tmp_path_factory, tiny_model_dir):
    """An adapter with random non-zero B: a fine-tuned model that differs from its base."""
    from tests.fixtures.runs import tiny_adapter

    return tiny_adapter(tiny_model_dir, tmp_path_factory.mktemp("trained") / "adapter", seed=1)


def test_classification_generate_mode_with_similar_shots(tmp_path, tiny_model_dir, trained_adapter, monkeypatch):
    monkeypatch.setattr("tunewise.evaluate.shots.minilm_embedder", lambda: bag_of_words)
    cfg = tiny_config(tmp_path, tiny_model_dir, few_shot_selection="similar")
    data, base = prepare(cfg), resolve_model(cfg.model.base)
    baselines = run_baselines(cfg, data, base)
    assert set(baselines) == {"zero_shot", "few_shot", "classical"}
    assert baselines["few_shot"].extra == {"classification_mode": "generate", "k": 2, "selection": "similar"}
    zero, few = baselines["zero_shot"].inference, baselines["few_shot"].inference
    assert few.prompt_tokens_per_request > zero.prompt_tokens_per_request  # the few-shot price shows
    assert zero.generated_tokens_per_request > 0 and zero.dollars_per_1k_requests > 0

    result = evaluate(cfg, data, base, trained_adapter, baselines)
    m = result.metrics_json()
    assert set(m["test"]) == {"zero_shot", "few_shot", "classical", "fine_tuned"}
    for name, values in m["test"].items():
        assert set(values) == {"accuracy", "macro_f1", "micro_f1", "invalid_rate"}
        assert set(m["ci"][name]) == set(values)
        assert all(lo <= values[k] + 1e-9 and values[k] <= hi + 1e-9 for k, (lo, hi) in m["ci"][name].items())
        assert m["inference"][name]["dollars_per_1k_requests"] is not None
        assert len(m["confusion"][name]["matrix"]) == len(data.labels)
        assert set(m["per_class"][name]) == set(data.labels)
    assert {(c["b"], c["metric"]) for c in m["comparisons"]} == {
        (b, k) for b in ("zero_shot", "few_shot", "classical") for k in ("accuracy", "macro_f1")}
    assert m["forgetting"]["questions"] >= 400 and m["forgetting"]["mean_kl"] > 1e-4  # the adapter moved it
    assert m["verdict"]["metric"] == data.card.labels["recommended_metric"] == "accuracy"
    decisive = next(c for c in m["comparisons"] if c["b"] == m["verdict"]["best_baseline"]
                    and c["metric"] == "accuracy")
    assert m["verdict"]["ship"] == (decisive["ci"][0] > 0 and not m["forgetting"]["flagged"])


def test_score_mode_and_paired_comparison_of_two_adapters(tmp_path, tiny_model_dir, adapter):
    cfg = tiny_config(tmp_path, tiny_model_dir, classification_mode="score")
    data, base = prepare(cfg), resolve_model(cfg.model.base)
    a = score_model(cfg, data, base, adapter)
    b = score_model(cfg, data, base, adapter, name="candidate")
    assert a.metrics["invalid_rate"] == 0.0  # scoring always answers with a label
    assert set(a.predictions) <= set(data.labels)
    assert a.inference.generated_tokens_per_request == 0
    assert len(a.example_scores()) == len(data.test)
    same = compare_systems(b, a, "accuracy")
    assert same.difference == 0 and same.p_value == 1.0


def test_generation_metrics_and_perplexity(tmp_path, tiny_model_dir, adapter):
    cfg = tiny_config(tmp_path, tiny_model_dir, "generation", forgetting={"enabled": False})
    data, base = prepare(cfg), resolve_model(cfg.model.base)
    result = evaluate(cfg, data, base, adapter, run_baselines(cfg, data, base))
    m = result.metrics_json()
    assert set(m["test"]) == {"zero_shot", "few_shot", "classical", "fine_tuned"}
    assert m["inference"]["few_shot"]["selection"] == "tfidf"  # auto picks TF-IDF neighbours for generation
    expected = {"rouge1", "rouge2", "rouge_l", "bleu", "chrf", "exact_match", "perplexity"}
    for name in m["test"]:
        # The retrieval baseline is no language model: it has no perplexity.
        assert set(m["test"][name]) == expected - ({"perplexity"} if name == "classical" else set())
        assert set(m["ci"][name]) == set(m["test"][name])
        if name != "classical":
            assert m["test"][name]["perplexity"] > 1
    # An untrained LoRA adapter is the base model: same answers, same perplexity as zero-shot.
    assert m["test"]["fine_tuned"]["perplexity"] == pytest.approx(m["test"]["zero_shot"]["perplexity"], rel=1e-4)
    assert m["forgetting"] is None and "not checked" in m["verdict"]["text"]


def test_a_full_fine_tuned_model_is_evaluated_against_its_base(tmp_path, tiny_model_dir, tiny_tokenizer):
    # Full fine-tuning leaves a model folder, not an adapter: forgetting then compares with the base loaded
    # beside it. A different random model stands in for the fine-tuned one, so the KL must be positive.
    from tunewise.evaluate import load_fine_tuned
    from tunewise.testing import build_model

    folder = tmp_path / "model"
    build_model(len(tiny_tokenizer), seed=5).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    cfg = tiny_config(tmp_path, tiny_model_dir, classical=False, few_shot_k=0)
    data, base = prepare(cfg), resolve_model(cfg.model.base)
    tuned = load_fine_tuned(base, folder)
    assert not hasattr(tuned, "disable_adapter")
    result = evaluate(cfg, data, base, folder, run_baselines(cfg, data, base), tuned,
                      load_model(tiny_model_dir, "cpu"))
    assert set(result.systems) == {"zero_shot", "fine_tuned"}
    assert result.forgetting.mean_kl > 0.001
    with pytest.raises(ModelError, match="neither a PEFT adapter"):
        load_fine_tuned(base, tmp_path)
