import pytest
import torch

from tests.fixtures.runs import fake_run, registered_pickled_adapter
from tunewise.config import RegistryConfig, TaskConfig
from tunewise.data.encode import encode_prompt
from tunewise.data.records import classification_record
from tunewise.registry import Registry
from tunewise.serve.engine import ModelPool, chat_to_prompt

TASK = TaskConfig(instruction="Classify the text.")
LABELS = ["positive", "negative"]


@pytest.mark.parametrize("list_labels", [False, True])
def test_served_prompt_is_the_training_prompt(tiny_tokenizer, list_labels):
    from tunewise.config import DataConfig, RunConfig
    from tunewise.train import encode_split

    task = TASK.model_copy(update={"list_labels_after_tuning": list_labels})
    record = classification_record("i love this movie", "positive")
    cfg = RunConfig(task=task, data=DataConfig(builtin="bbc_news"))
    [trained], _ = encode_split([record], cfg, LABELS, tiny_tokenizer)
    served = encode_prompt(tiny_tokenizer, chat_to_prompt([{"role": "user", "content": "i love this movie"}],
                                                          task, LABELS))
    assert trained.input_ids[: len(served)] == served and trained.labels[len(served) - 1] == -100
    assert trained.labels[len(served)] != -100  # the answer starts right where the served prompt ends


def test_adapters_share_one_base_and_match_standalone_peft(tmp_path, tiny_model_dir, tiny_adapters, tiny_tokenizer):
    from peft import PeftModel

    from tunewise.models import load_model

    reg = Registry(RegistryConfig(workspace=tmp_path / "ws"))
    recs = [reg.register_run(fake_run(tmp_path, n, [True] * 40, adapter=tiny_adapters[n],
                                      base_path=str(tiny_model_dir))) for n in ("clf", "other")]
    pool = ModelPool(max_adapters=2)
    msgs = [{"role": "user", "content": "the bank profit"}]
    served = [pool.prepare(r, TASK, LABELS) for r in recs]
    assert len(pool.bases) == 1 and pool.loaded() == ["model-1", "model-2"]
    for s, name in zip(served, ("clf", "other")):
        got = pool.complete(s, msgs, max_tokens=6)
        ref = PeftModel.from_pretrained(load_model(tiny_model_dir, "cpu"), tiny_adapters[name]).eval()
        ids = torch.tensor([encode_prompt(tiny_tokenizer, chat_to_prompt(msgs, TASK, LABELS))])
        with torch.no_grad():
            out = ref.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                               do_sample=False, eos_token_id=[tiny_tokenizer.eos_token_id],
                               pad_token_id=tiny_tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
        n = next((i + 1 for i, t in enumerate(out) if t == tiny_tokenizer.eos_token_id), len(out))
        assert got.text == tiny_tokenizer.decode(out[:n], skip_special_tokens=True).strip()
        assert got.completion_tokens == n and got.prompt_tokens == ids.shape[1]


def test_least_recently_used_adapter_is_evicted(tmp_path, tiny_model_dir, tiny_adapters):
    reg = Registry(RegistryConfig(workspace=tmp_path / "ws"))
    recs = [reg.register_run(fake_run(tmp_path, n, [True] * 40, adapter=tiny_adapters[n],
                                      base_path=str(tiny_model_dir))) for n in ("clf", "other")]
    pool = ModelPool(max_adapters=1)
    pool.prepare(recs[0], TASK, LABELS)
    s = pool.prepare(recs[1], TASK, LABELS)
    assert pool.loaded() == ["model-2"] and list(pool.bases.values())[0][0].peft_config.keys() == {"model-2"}
    assert pool.complete(s, [{"role": "user", "content": "hello"}], 3).completion_tokens >= 1


def test_a_request_for_a_loaded_adapter_queues_while_a_batch_runs(tmp_path, tiny_model_dir, tiny_adapters):
    import threading

    reg = Registry(RegistryConfig(workspace=tmp_path / "ws"))
    rec = reg.register_run(fake_run(tmp_path, "clf", [True] * 40, adapter=tiny_adapters["clf"],
                                    base_path=str(tiny_model_dir)))
    pool = ModelPool()
    pool.prepare(rec, TASK, LABELS)
    done = threading.Event()
    with pool.lock:  # what a running batch holds
        threading.Thread(target=lambda: (pool.prepare(rec, TASK, LABELS), done.set()), daemon=True).start()
        assert done.wait(10)  # not blocked until the batch ends: it can join the next batch's queue


def test_an_adapter_whose_weights_became_a_pickle_is_refused(tmp_path, tiny_model_dir, tiny_adapters):
    from tunewise.errors import ModelError

    _, rec = registered_pickled_adapter(tmp_path, tiny_model_dir, tiny_adapters["clf"])
    with pytest.raises(ModelError, match="only adapter_model.bin; tunewise loads weights from safetensors only"):
        ModelPool().prepare(rec, TASK, LABELS)
