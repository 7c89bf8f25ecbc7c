"""The training stage on the tiny model: methods, guards, early stopping, logging, replay."""

import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from tests.train.conftest import tiny_config, tiny_data
from tunewise.errors import ConfigError
from tunewise.models.estimate import read_shape, trainable_params
from tunewise.train import TrainError, load_trained, runtime, train


class PoisonAt(TrainerCallback):
    """Turns the model's output into NaN from optimizer step `step` on (a stand-in for a diverging run)."""

    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.step:
            model.get_output_embeddings().register_forward_hook(lambda m, i, o: o * float("nan"))


def test_nan_loss_stops_at_once_with_step_and_last_good_checkpoint(tmp_path, tiny_base):
    cfg = tiny_config(tmp_path, save_steps=2)
    with pytest.raises(TrainError) as err:
        train(cfg, tiny_data(), tiny_base, callbacks=[PoisonAt(4)])
    msg = str(err.value)
    assert "loss became nan at step 4" in msg and "checkpoint-2" in msg and "learning_rate" in msg
    ckpt = load_file(cfg.run_dir / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors")
    assert all(torch.isfinite(t).all() for t in ckpt.values())
    assert not (cfg.run_dir / "checkpoints" / "checkpoint-4").exists()


def test_early_stopping_keeps_and_loads_the_best_checkpoint(tmp_path, tiny_base):
    # A learning rate this high makes the val loss rise after the first evaluation.
    cfg = tiny_config(tmp_path, epochs=6, eval_steps=2, learning_rate=0.5, early_stopping={"patience": 1})
    result = train(cfg, tiny_data(), tiny_base)
    assert result.stopped_early
    losses = [v for _, v in result.val_loss]
    assert losses.index(min(losses)) < len(losses) - 1  # stopped after val loss stopped improving
    assert result.best_checkpoint.endswith(f"checkpoint-{2 * (losses.index(min(losses)) + 1)}")
    saved = load_file(result.weights_dir / "adapter_model.safetensors")
    best = load_file(f"{result.best_checkpoint}/adapter_model.safetensors")
    assert all(torch.equal(saved[k], best[k]) for k in best)


def test_full_fine_tuning_writes_a_model_folder_that_load_trained_finds(tmp_path, tiny_base):
    cfg = tiny_config(tmp_path, method="full")
    result = train(cfg, tiny_data(), tiny_base)
    assert result.weights_dir == cfg.run_dir / "model"
    assert result.trainable_params == result.total_params
    assert list((cfg.run_dir / "model").glob("*.safetensors"))
    model = load_trained(cfg.run_dir, tiny_base.path)
    for (name, a), b in zip(model.state_dict().items(), result.model.state_dict().values()):
        assert torch.allclose(a, b), name


def test_dora_trains_and_its_parameter_count_matches_the_estimator(tmp_path, tiny_base):
    cfg = tiny_config(tmp_path, method="dora", lora={"r": 4})
    result = train(cfg, tiny_data(), tiny_base)
    assert result.trainable_params == trainable_params(read_shape(tiny_base.path), "dora", 4)
    assert any("lora_magnitude_vector" in k for k in load_file(result.weights_dir / "adapter_model.safetensors"))
    model = load_trained(cfg.run_dir, tiny_base.path)
    assert model.peft_config["default"].use_dora


def test_qlora_on_cpu_is_a_clear_error(tmp_path, tiny_base):
    with pytest.raises(ConfigError, match="qlora needs a CUDA GPU"):
        train(tiny_config(tmp_path, method="qlora"), tiny_data(), tiny_base)


def test_refuses_a_run_that_does_not_fit_unless_forced(tmp_path, tiny_base, monkeypatch):
    monkeypatch.setattr(runtime, "device_memory_gib", lambda device: 1e-6)
    monkeypatch.setattr("tunewise.train.device_memory_gib", lambda device: 1e-6)
    with pytest.raises(TrainError, match="will not fit: estimated peak .* GiB = weights .*--force"):
        train(tiny_config(tmp_path), tiny_data(), tiny_base)
    assert train(tiny_config(tmp_path), tiny_data(), tiny_base, force=True).examples == 24


def test_tensorboard_events_replay_and_token_count(tmp_path, tiny_base):
    cfg = tiny_config(tmp_path, report_to=["tensorboard"], replay={"fraction": 0.25})
    result = train(cfg, tiny_data(), tiny_base)
    assert result.replay_examples == 8 and result.examples == 32  # 24 task rows are 75 % of the set
    assert list((cfg.run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert result.tokens_seen == result.estimate["tokens_per_epoch"]
    assert all(math.isfinite(v) for _, v in result.train_loss)


def test_label_smoothing_and_neftune_change_the_training_loss(tmp_path, tiny_base):
    def first_loss(**train_kw):
        cfg = tiny_config(tmp_path / str(len(train_kw)) / "_".join(train_kw), learning_rate=1e-9, **train_kw)
        return train(cfg, tiny_data(), tiny_base).train_loss[0][1]

    plain = first_loss()
    # The smoothed loss adds eps * (mean -log p over the vocabulary), larger than the answer NLL for a
    # near-uniform tiny model's wrong tokens; NEFTune's embedding noise changes the logits themselves.
    assert first_loss(label_smoothing=0.1) != pytest.approx(plain, rel=1e-4)
    assert first_loss(neftune_alpha=5.0) != pytest.approx(plain, rel=1e-4)
    assert first_loss() == pytest.approx(plain, rel=1e-5)  # the test itself is deterministic


def test_mlflow_run_logs_the_training_loss_when_installed(tmp_path, tiny_base, monkeypatch):
    mlflow = pytest.importorskip("mlflow")  # in the dev extra, so CI runs this
    # train() points MLflow at this run's store through the environment; put the variables back afterwards.
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.setenv(name, "unset")
        monkeypatch.delenv(name)
    cfg = tiny_config(tmp_path, report_to=["mlflow"])
    result = train(cfg, tiny_data(), tiny_base)
    uri = f"sqlite:///{(cfg.run_dir / 'mlflow.db').resolve()}"
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(cfg.name).experiment_id])
    assert len(runs) == 1
    logged = [m.value for m in client.get_metric_history(runs[0].info.run_id, "loss")]
    assert logged and logged[0] == pytest.approx(result.train_loss[0][1], rel=1e-4)


def _generation_setup(tmp_path, epochs=6, **early_stopping):
    from tunewise.config import parse_config
    from tunewise.data import PreparedData
    from tunewise.data.records import Record

    def rec(prompt, answer):
        return Record([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}])

    words = "the match team won lost game market shares profit bank".split()
    train_rows = [rec(f"{words[i % 10]} {words[(i * 3) % 10]}", f"{words[(i + 1) % 10]} world") for i in range(24)]
    # 4 distinct val inputs, two answers each: the metric sees one answer per input, scored against both.
    val_rows = [rec(f"hello {w}", f"{w} {a}") for w in words[:4] for a in ("world", "hello")]
    cfg = parse_config({"name": "g", "output_dir": str(tmp_path / "runs"), "data": {"builtin": "bbc_news"},
                        "task": {"type": "generation", "instruction": "answer ."}, "model": {"max_length": 64},
                        "eval": {"max_new_tokens": 3},
                        "train": {"batch_size": 4, "epochs": epochs, "eval_steps": 2, "logging_steps": 1,
                                  "learning_rate": 1e-3, "report_to": [], "early_stopping": early_stopping}})
    return cfg, PreparedData(train_rows, val_rows, [], None, "hash")


def test_early_stopping_on_a_generated_answer_metric(tmp_path, tiny_base):
    from tests.metrics import user_metrics

    user_metrics.CALLS.clear()
    cfg, data = _generation_setup(tmp_path, patience=1, metric="tests.metrics.user_metrics:falling", max_generate=3)
    result = train(cfg, data, tiny_base)
    # The metric only falls (1, 1/2): the first evaluation stays best and patience 1 stops at the second.
    assert result.stopped_early and result.best_checkpoint.endswith("checkpoint-2")
    assert len(user_metrics.CALLS) == 2
    predictions, references = user_metrics.CALLS[0]
    assert len(predictions) == 3 and references == ["the world", "match world", "team world"]
    log = [h["eval_tests.metrics.user_metrics.falling"] for h in result_log(cfg) if "eval_loss" in h]
    assert log == [1.0, 0.5]


def test_rouge_l_of_generated_val_answers_picks_the_best_checkpoint(tmp_path, tiny_base):
    cfg, data = _generation_setup(tmp_path, epochs=1, metric="rouge_l")
    train(cfg, data, tiny_base)
    values = [h["eval_rouge_l"] for h in result_log(cfg) if "eval_loss" in h]
    assert len(values) == 3 and all(0.0 <= v <= 1.0 for v in values)
    from tunewise.train.trainer import training_args

    args = training_args(cfg, tmp_path / "a", "cpu", False, True)
    assert (args.metric_for_best_model, args.greater_is_better) == ("eval_rouge_l", True)
    ser, _ = _generation_setup(tmp_path, metric="slot_error_rate")
    assert training_args(ser, tmp_path / "b", "cpu", False, True).greater_is_better is False


def result_log(cfg) -> list[dict]:
    import json

    return json.loads((cfg.run_dir / "train_log.json").read_text())


def test_gemma2_trains_on_cpu_with_eager_attention_and_the_log_says_why(tmp_path, capsys):
    """auto asked transformers for SDPA, which it refuses for Gemma 2 (soft-capped attention logits); on CPU the
    run takes eager (FlexAttention has no backward there) and says so in one line."""
    from tunewise.models import ResolvedModel
    from tunewise.testing import build_family_model, build_tokenizer

    tok, folder = build_tokenizer(), tmp_path / "gemma2"
    build_family_model("gemma2", len(tok)).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    result = train(tiny_config(tmp_path), tiny_data(), ResolvedModel("gemma2", folder, "sha"))
    assert result.attn_implementation == "eager" and all(math.isfinite(v) for _, v in result.train_loss)
    assert ("tunewise train: attention eager (auto: transformers' Gemma2ForCausalLM cannot run SDPA, and "
            "FlexAttention has no backward on cpu)") in capsys.readouterr().out.splitlines()


def test_causal_padding_leaves_right_padding_masks_out_with_the_same_losses_and_token_count(tmp_path, tiny_base,
                                                                                           monkeypatch):
    """train.fast.causal_padding: right-padded training and evaluation batches reach the model without their
    mask; the training and validation losses and the non-padding tokens counted are the masked run's."""
    from tunewise.train.trainer import _Trainer

    masks = {False: [], True: []}
    compute_loss = _Trainer.compute_loss

    def spy(self, model, inputs, *args, **kwargs):
        masks[self.causal_padding].append("attention_mask" in inputs)
        return compute_loss(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(_Trainer, "compute_loss", spy)
    runs = {on: train(tiny_config(tmp_path / str(on), fast={"enabled": True, "causal_padding": on},
                                  lora={"dropout": 0.0}), tiny_data(), tiny_base) for on in (False, True)}
    assert masks[False] and all(masks[False])  # the masked run: every batch had its mask
    # the collator pads on the right: every batch, training and evaluation, went without its mask
    assert masks[True] and not any(masks[True])
    assert runs[True].fast_path["causal_padding"] and not runs[False].fast_path["causal_padding"]
    assert runs[True].tokens_seen == runs[False].tokens_seen
    for curve in ("train_loss", "val_loss"):
        off, on = ([v for _, v in getattr(runs[k], curve)] for k in (False, True))
        assert on == pytest.approx(off, rel=1e-5), curve


def test_step_bookkeeping_walks_no_module_tree_and_trains_as_transformers_own(tmp_path, tiny_base, monkeypatch):
    """Between optimizer steps the Trainer counts FLOPs, clips and zeroes gradients. tunewise's Trainer finds the
    parameter count and the trainable parameters once, clips over those alone and zeroes their gradients: the
    losses are those of transformers' own bookkeeping, which walks the whole module tree each step."""
    from accelerate import Accelerator
    from transformers import PreTrainedModel, Trainer

    from tunewise.train.trainer import _Trainer

    counts = {"num_parameters": 0}
    clipped = []
    num_parameters, clip = PreTrainedModel.num_parameters, Accelerator.clip_grad_norm_

    def counting(self, *args, **kwargs):
        counts["num_parameters"] += 1
        return num_parameters(self, *args, **kwargs)

    def recording(self, parameters, *args, **kwargs):
        parameters = list(parameters)
        clipped[-1].append(len(parameters))
        return clip(self, parameters, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "num_parameters", counting)
    monkeypatch.setattr(Accelerator, "clip_grad_norm_", recording)
    runs, calls = {}, {}
    for own in (False, True):
        with monkeypatch.context() as m:
            if not own:  # transformers' bookkeeping
                for name in ("floating_point_ops", "_clip_grad_norm", "create_optimizer"):
                    m.setattr(_Trainer, name, getattr(Trainer, name))
            counts["num_parameters"], clipped[:] = 0, [[]]
            runs[own] = train(tiny_config(tmp_path / str(own)), tiny_data(), tiny_base)
            calls[own] = (counts["num_parameters"], list(clipped[-1]))
    model = runs[True].model
    trainable = sum(p.requires_grad for p in model.parameters())
    steps = len(calls[False][1])
    assert steps > 2 and len(calls[True][1]) == steps
    assert set(calls[True][1]) == {trainable} and set(calls[False][1]) == {len(list(model.parameters()))}
    assert calls[True][0] <= calls[False][0] - (steps - 1)  # the count once, not at every micro-step
    for curve in ("train_loss", "val_loss"):
        theirs, ours = ([v for _, v in getattr(runs[k], curve)] for k in (False, True))
        assert ours == pytest.approx(theirs, rel=1e-6), curve
    assert "zero_grad" not in model.__dict__  # the trained model keeps Module.zero_grad, and no hold on the Trainer
