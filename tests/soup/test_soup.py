"""tunewise.soup.make_soup: greedy selection on the validation split, LoRA merging, the split check."""

import json
import random
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.fixtures.runs import tiny_adapter
from tunewise.config import parse_config
from tunewise.data import PreparedData
from tunewise.data.records import classification_record
from tunewise.errors import ConfigError
from tunewise.models import ResolvedModel
from tunewise.soup import make_soup
from tunewise.testing import save_tiny_model, topic_records

TOPICS = {"sport": "the team won the match game", "business": "the bank profit and market shares",
          "politics": "the minister and the election vote party", "tech": "a phone with new computer software"}


def _rows(n, seed):
    return topic_records(n, random.Random(seed), TOPICS, sorted(TOPICS))


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return parse_config({"name": "s", "output_dir": str(tmp_path_factory.mktemp("runs")),
                         "data": {"builtin": "bbc_news"}, "task": {"instruction": "classify the text ."},
                         "eval": {"classification_mode": "score", "batch_size": 8}})


@pytest.fixture(scope="module")
def data():
    return PreparedData(_rows(8, 0), _rows(24, 1), _rows(4, 2), sorted(TOPICS), "hash")


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    # Wider initial weights than the default 0.02: predictions then vary with the input (at 0.02 every
    # example gets the same label), so the validation score can tell models apart.
    return save_tiny_model(tmp_path_factory.mktemp("good"), seed=0, initializer_range=0.5)


def _relabelled_as(cfg, data, folder) -> PreparedData:
    """`data` whose validation labels are the model in `folder`'s own label-scoring predictions: that model
    scores 1.0 on validation, and a soup that changes its predictions scores less."""
    from tunewise.data.prompt import fine_tuned_labels
    from tunewise.evaluate.systems import score_llm
    from tunewise.models import load_model, load_tokenizer

    val = PreparedData(data.train, data.val, data.val, data.labels, "hash")
    preds = score_llm("probe", cfg, val, load_model(folder, "cpu"), load_tokenizer(folder),
                      prompt_labels=fine_tuned_labels(cfg.task, data.labels)).predictions
    assert len(set(preds)) > 1  # else "1.0 on validation" would say little
    relabelled = [classification_record(r.input_text, p) for r, p in zip(data.val, preds)]
    return PreparedData(data.train, relabelled, data.test, data.labels, "hash")


def test_greedy_soup_keeps_the_best_first_and_drops_an_ingredient_that_hurts(cfg, data, good, tmp_path):
    data = _relabelled_as(cfg, data, good)
    twin = shutil.copytree(good, tmp_path / "twin")  # averaging it in changes nothing: kept (score equal)
    noisy = shutil.copytree(good, tmp_path / "noisy")
    gen = torch.Generator().manual_seed(1)
    weights = {k: v + 3 * v.std() * torch.randn(v.shape, generator=gen) for k, v in
               load_file(str(good / "model.safetensors")).items()}
    save_file(weights, str(noisy / "model.safetensors"), metadata={"format": "pt"})
    base = ResolvedModel("tiny", good, "sha")
    out = tmp_path / "soup"
    result = make_soup(cfg, data, base, [noisy, good, twin], out, greedy=True)

    record = json.loads((out / "soup.json").read_text())
    assert record["method"] == "greedy" and record["metric"] == "accuracy" and record["val_examples"] == 24
    scores = {i["path"]: i for i in record["ingredients"]}
    assert scores[str(good)]["val_score"] == 1.0 and scores[str(twin)]["val_score"] == 1.0
    assert scores[str(noisy)]["val_score"] < 1.0
    assert record["kept"] == [str(good), str(twin)]  # the best first, though given second
    assert scores[str(twin)]["soup_val_score"] == 1.0 and scores[str(twin)]["kept"]
    assert scores[str(noisy)]["soup_val_score"] < 1.0 and not scores[str(noisy)]["kept"]
    assert scores[str(good)]["soup_val_score"] is None  # the first is not a candidate
    assert record["val_score"] == result.val_score == 1.0
    soup, orig = load_file(str(out / "model.safetensors")), load_file(str(good / "model.safetensors"))
    assert all(torch.equal(soup[k], orig[k]) for k in orig)  # (good + twin) / 2 == good


def _merged_weights(base_dir, adapter):
    from peft import PeftModel

    from tunewise.models import load_model

    merged = PeftModel.from_pretrained(load_model(base_dir, "cpu", torch.float32), str(adapter)).merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def test_lora_adapters_are_merged_before_averaging(cfg, data, good, tmp_path):
    adapters = [tiny_adapter(good, tmp_path / f"a{s}", seed=s) for s in (1, 2)]
    base = ResolvedModel("tiny", good, "sha")
    one = make_soup(cfg, data, base, adapters[:1], tmp_path / "one")
    soup = load_file(str(one.out / "model.safetensors"))
    merged = [_merged_weights(good, a) for a in adapters]
    assert all(torch.equal(soup[k], merged[0][k]) for k in soup)
    assert json.loads((one.out / "soup.json").read_text())["ingredients"][0]["kind"] == "adapter"

    two = load_file(str(make_soup(cfg, data, base, adapters, tmp_path / "two").out / "model.safetensors"))
    name = "model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(two[name], (merged[0][name] + merged[1][name]) / 2)


def test_an_ingredient_trained_on_validation_rows_is_refused(cfg, data, good, tmp_path):
    run = tmp_path / "runs" / "s1"
    shutil.copytree(good, run / "model")
    (run / "data").mkdir()
    rows = [*data.train, data.val[3]]  # its run carved another split: a val row was in its training split
    (run / "data" / "train.jsonl").write_text("".join(json.dumps(r.to_json()) + "\n" for r in rows))
    base = ResolvedModel("tiny", good, "sha")
    with pytest.raises(ConfigError, match=r"s1: its run trained on 1 rows .* data.split.seed"):
        make_soup(cfg, data, base, [good, run], tmp_path / "soup")
    (run / "data" / "train.jsonl").write_text("".join(json.dumps(r.to_json()) + "\n" for r in data.train))
    result = make_soup(cfg, data, base, [good, run], tmp_path / "soup")
    assert [i.held_out_rows_trained for i in result.ingredients] == [None, 0]


def test_out_must_not_be_an_ingredient_nor_a_full_folder(cfg, data, good, tmp_path):
    base = ResolvedModel("tiny", good, "sha")
    with pytest.raises(ConfigError, match="would overwrite the ingredient"):
        make_soup(cfg, data, base, [good], good, force=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ConfigError, match="--force"):
        make_soup(cfg, data, base, [good], tmp_path / "full")
    assert make_soup(cfg, data, base, [good], tmp_path / "full", force=True).out.joinpath("soup.json").is_file()
    assert not (tmp_path / "full" / "x").exists()


def test_a_generation_task_is_scored_by_its_main_metric(good, tmp_path):
    from tunewise.data.records import Record

    cfg = parse_config({"name": "g", "output_dir": str(tmp_path), "data": {"builtin": "bbc_news"},
                        "task": {"type": "generation"}, "eval": {"max_new_tokens": 3, "batch_size": 4}})
    rows = [Record([{"role": "user", "content": q}, {"role": "assistant", "content": a}])
            for q, a in (("hello", "hello world"), ("the match", "the team won"), ("what is this", "a film"))]
    data = PreparedData(rows, rows, rows, None, "hash")
    result = make_soup(cfg, data, ResolvedModel("tiny", good, "sha"), [good, good], tmp_path / "soup", greedy=True)
    # Two copies of one model: the soup is that model, so every score is the same ROUGE-L.
    assert result.metric == "rouge_l" and result.val_examples == 3 and 0.0 <= result.val_score <= 1.0
    assert [i.val_score for i in result.ingredients] == [result.val_score] * 2 and result.kept == [str(good)] * 2
