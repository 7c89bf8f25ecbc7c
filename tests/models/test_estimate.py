"""The estimator: exact parameter counts for known shapes, and activation memory against autograd's own count."""

import json

import pytest
import torch

from tunewise.models.estimate import (
    ModelShape,
    activation_bytes,
    estimate,
    read_shape,
    saved_activation_bytes,
    trainable_params,
)

LLAMA3_8B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
             "tie_word_embeddings": False}


def test_llama3_8b_parameter_counts_match_the_published_numbers():
    shape = ModelShape.from_config(LLAMA3_8B)
    assert shape.total_params == 8_030_261_248  # Meta-Llama-3-8B's model card / safetensors index
    # peft's print_trainable_parameters for r=16 on all linear layers of Llama-3-8B
    assert trainable_params(shape, "lora", 16) == 41_943_040
    assert trainable_params(shape, "lora", 16, ["q_proj", "v_proj"]) == 32 * 16 * (4096 + 4096 + 4096 + 1024)


def test_parameter_count_matches_a_real_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert read_shape(tiny_model_dir).total_params == sum(p.numel() for p in model.parameters())


def test_qlora_needs_less_memory_than_lora_and_full_more_than_both():
    shape = ModelShape.from_config(LLAMA3_8B)
    kw = {"batch_size": 4, "seq_len": 1024, "tokens_per_epoch": 10**6, "epochs": 2}
    lora, qlora, full = (estimate(shape, m, **kw) for m in ("lora", "qlora", "full"))
    assert qlora.weights_gib < lora.weights_gib / 2 < full.peak_memory_gib
    assert 14.5 < lora.weights_gib < 15.5  # 8.03e9 bf16 weights = 14.96 GiB, plus the adapter
    assert full.optimizer_gib == pytest.approx(2 * full.weights_gib)
    # At 4x1024 tokens the step is compute-bound (at 1x1024 a LoRA step is launch-bound and can be the slower)
    assert full.hours > lora.hours and lora.cost_usd == pytest.approx(lora.hours * 2.99, rel=0.01)
    assert set(lora.short_json()) == {"peak_memory_gib", "hours", "cost_usd", "trainable_params"}
    assert not estimate(shape, "full", **kw, device="L4").fits


def test_fsdp_shards_weights_grads_and_optimizer_per_device_but_not_activations():
    shape = ModelShape.from_config(LLAMA3_8B)
    kw = {"batch_size": 2, "seq_len": 1024, "tokens_per_epoch": 10**6, "epochs": 1, "gpus": 2}
    ddp, fsdp = estimate(shape, "full", **kw), estimate(shape, "full", **kw, shards=2)
    for part in ("weights_gib", "grads_gib", "optimizer_gib"):
        assert getattr(fsdp, part) == pytest.approx(getattr(ddp, part) / 2)
    assert fsdp.activations_gib == ddp.activations_gib  # batch_size is per device either way
    assert fsdp.hours == ddp.hours
    assert fsdp.hours == pytest.approx(estimate(shape, "full", **{**kw, "gpus": 1}).hours / 2)


@pytest.mark.parametrize("method,bf16,dropout", [("lora", True, 0.05), ("lora", False, 0.0), ("full", True, 0.0),
                                                 ("lora", True, 0.0), ("full", False, 0.0),
                                                 ("lora", False, 0.1)])
def test_activation_model_matches_autograd_on_an_unseen_shape(method, bf16, dropout):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    # Not one of the shapes the coefficients were fitted on (h 256-512, i 688-1376, 6-16 heads, 2-3 layers).
    cfg = {"hidden_size": 320, "intermediate_size": 864, "num_hidden_layers": 4, "num_attention_heads": 10,
           "num_key_value_heads": 5, "vocab_size": 700, "tie_word_embeddings": False}
    torch.manual_seed(0)
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = LlamaForCausalLM(LlamaConfig(**cfg, attn_implementation="sdpa")).to(dtype)
    if method == "lora":
        model = get_peft_model(model, LoraConfig(r=8, lora_dropout=dropout, target_modules="all-linear"))
    model.train()
    seq = 96
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        measured = saved_activation_bytes(model, torch.randint(0, 700, (1, seq)))
    predicted = activation_bytes(ModelShape.from_config(cfg), method, seq, seq, bf16=bf16, dropout=dropout,
                                 gradient_checkpointing=False, attention_scores=False)
    assert predicted == pytest.approx(measured, rel=0.15)


def test_estimate_reads_config_json_only(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_8B))  # no weights in the folder at all
    assert read_shape(tmp_path).layers == 32


def test_short_steps_take_the_launch_floor_and_long_ones_scale_with_tokens():
    shape = ModelShape.from_config(LLAMA3_8B)

    def step(seq, batch=1):
        return estimate(shape, "lora", batch_size=batch, seq_len=seq, tokens_per_epoch=batch * seq,
                        epochs=1).seconds_per_epoch

    assert step(512) == step(1024) == pytest.approx(224 * 1.05e-3)  # 7 adapted modules x 32 layers
    assert step(4096, batch=2) == pytest.approx(2 * step(4096))
    cpu = estimate(shape, "lora", batch_size=1, seq_len=512, tokens_per_epoch=512, epochs=1, device="CPU")
    assert cpu.seconds_per_epoch > 100 * step(512)  # no launch floor on CPU: arithmetic dominates


def test_a_large_eval_batch_sets_the_peak_through_its_logits():
    shape = ModelShape.from_config(LLAMA3_8B)
    kw = {"batch_size": 1, "seq_len": 128, "tokens_per_epoch": 10**5, "epochs": 1, "method": "lora"}
    train_only = estimate(shape, **kw)
    with_eval = estimate(shape, **kw, eval_batch_size=128)
    logits_gib = 128 * 128 * shape.vocab * 10 / 1024**3
    # Gradients are freed before evaluation, so the eval peak is weights + optimizer state + logits.
    assert with_eval.peak_memory_gib == pytest.approx(
        with_eval.weights_gib + with_eval.optimizer_gib + logits_gib) and logits_gib > train_only.activations_gib
    assert estimate(shape, **kw, eval_batch_size=1).activations_gib == train_only.activations_gib


def test_full_fine_tuning_counts_fp32_master_weights_as_training_keeps_them():
    shape = ModelShape.from_config(LLAMA3_8B)
    kw = {"batch_size": 1, "seq_len": 128, "tokens_per_epoch": 10**5, "epochs": 1}
    master, pure_bf16 = estimate(shape, "full", **kw), estimate(shape, "full", **kw, fp32_master=False)
    assert master.weights_gib == pytest.approx(2 * pure_bf16.weights_gib)
    assert master.optimizer_gib == pytest.approx(2 * master.weights_gib)  # AdamW: two fp32 states


def test_h200_is_estimated_by_its_full_name_with_its_memory_and_price():
    from tunewise.models.prices import DEFAULT_PRICES_PER_HOUR

    shape = ModelShape(2048, 8192, 16, 32, 8, 64, 128256, True, True)
    kw = dict(batch_size=4, seq_len=1024, tokens_per_epoch=10**6, epochs=1)
    est = estimate(shape, "lora", **kw, device="NVIDIA H200")
    assert est.device_memory_gib == pytest.approx(140.4)
    assert est.cost_usd == pytest.approx(est.hours * DEFAULT_PRICES_PER_HOUR["H200"])
    assert estimate(shape, "lora", **kw, device="H200", prices={"NVIDIA H200": 1.0}).cost_usd == \
        pytest.approx(est.hours)


# Peaks (torch.cuda.max_memory_allocated, GiB) of LoRA r=16 on all linear layers of the Llama-3-8B shape on an
# H100: bench/results/train_speed/*.jsonl (dropout 0 unless said; tokens per micro-step) and
# estimate_accuracy.json (dropout 0.05, no checkpointing). (path, tokens, checkpointed layers, recipes, dropout)
MEASURED_PEAKS = [
    ("plain", 8192, 32, False, 0.0, 29.36, "lora-2048x4-gc base, 2026-11-23s5_6-repeat"),
    ("plain", 4096, 0, False, 0.0, 47.98, "lora-2048x2 base, 2026-11-23s5_7-a-other-rows"),
    ("plain", 4096, 32, False, 0.0, 22.42, "lora-4096x1-gc base, 2026-11-23s5_7-b-other-rows"),
    ("plain", 4096, 0, False, 0.05, 52.7, "lora-2048x2 base --lora-dropout 0.05, train_speed.md"),
    ("plain", 512, 0, False, 0.05, 20.24, "Llama-3-8B lora 1x512, estimate_accuracy.json"),
    ("plain", 2048, 0, False, 0.05, 34.13, "Llama-3-8B lora 1x2048, estimate_accuracy.json"),
    ("plain", 4096, 0, False, 0.05, 52.69, "Llama-3-8B lora 1x4096, estimate_accuracy.json"),
    ("fast", 8192, 32, False, 0.0, 18.85, "lora-2048x4-gc tunewise, 2026-11-23s5_6-repeat"),
    ("fast", 4096, 0, False, 0.0, 32.99, "lora-2048x4-gc t-mb2 (micro-batch 2), 2026-11-23_4-lora-rows"),
    ("fast", 4096, 0, True, 0.0, 27.52, "lora-2048x4-gc t-mb2-rc (micro-batch 2), 2026-11-23s5_6-repeat"),
    ("fast", 4096, 0, False, 0.0, 32.74, "lora-2048x2 tunewise, 2026-11-23s5_7-a-other-rows"),
    ("fast", 4096, 32, False, 0.0, 17.21, "lora-4096x1-gc tunewise, 2026-11-23s5_7-b-other-rows"),
    ("fast", 4096, 24, False, 0.0, 21.22, "lora-4096x1-gc t-ckpt75, 2026-11-23_4-lora-rows"),
    ("fast", 4096, 18, True, 0.0, 21.83, "lora-4096x1-gc t-ckpt56-rc, 2026-11-23s5_7-b-other-rows"),
    ("fast", 128000, 32, False, 0.0, 66.64, "maxctx 128,000 tokens, 2026-11-23s5_8-qlora-maxctx"),
]


@pytest.mark.parametrize("path,tokens,ckpt,recipes,dropout,measured,source", MEASURED_PEAKS)
def test_lora_memory_model_predicts_the_measured_cuda_peaks(path, tokens, ckpt, recipes, dropout, measured, source):
    from tunewise.models.estimate import GIB, fixed_bytes, lora_activation_bytes

    shape = ModelShape.from_config(LLAMA3_8B)
    predicted = (fixed_bytes(shape, "lora", 16) + lora_activation_bytes(
        shape, tokens, fast=path == "fast", checkpointed=ckpt, recipes=recipes, dropout=dropout)) / GIB
    assert predicted == pytest.approx(measured, rel=0.03), source  # all within 1.2 % today


def test_the_estimate_of_plain_lora_is_the_counted_model_on_gpus():
    from tunewise.models.estimate import lora_activation_bytes

    shape = ModelShape.from_config(LLAMA3_8B)
    est = estimate(shape, "lora", batch_size=4, seq_len=2048, tokens_per_epoch=10**6, epochs=1, dropout=0.0,
                   gradient_checkpointing=True)
    acts = lora_activation_bytes(shape, 8192, fast=False, checkpointed=32) / 1024**3
    assert est.activations_gib == pytest.approx(acts) and est.peak_memory_gib == pytest.approx(29.36, rel=0.01)


# tokens/s of the same rows (H100): plain, and the fast path's (micro-batch, checkpointed, recipes, measured).
MEASURED_SPEEDS = [  # (seq, batch, gradient checkpointing, plain tok/s, [fast sides])
    (2048, 4, True, (7054, 7219), [(4, 32, False, (11089, 11155)), (2, 0, True, (14622, 14893)),
                                   (2, 0, False, (14755, 15076))]),
    (2048, 2, False, (9635, 9783), [(2, 0, False, (14650, 15053))]),
    (4096, 1, True, (6562, 6679), [(1, 32, False, (9875, 9959)), (1, 24, False, (10706, 10706)),
                                   (1, 18, True, (11446, 11528))]),
]


@pytest.mark.parametrize("seq,batch,gc,plain,sides", MEASURED_SPEEDS)
def test_speed_models_predict_the_measured_tokens_per_second(seq, batch, gc, plain, sides):
    from tunewise.models.estimate import DEVICES, fast_lora_step_seconds, train_seconds

    shape, h100 = ModelShape.from_config(LLAMA3_8B), DEVICES["H100"]
    tokens = seq * batch
    got = tokens / train_seconds(shape, "lora", tokens, tokens, seq, gc, h100["peak_tflops"] * h100["mfu"],
                                 dropout=0.0)
    assert plain[0] * 0.9 < got < plain[1] * 1.1
    for micro, ckpt, recipes, (low, high) in sides:
        got = tokens / fast_lora_step_seconds(shape, seq_len=seq, micro_tokens=micro * seq,
                                              micro_steps=batch // micro, checkpointed=ckpt, recipes=recipes)
        assert low * 0.95 < got < high * 1.05, (micro, ckpt, recipes)


GEMMA2_9B = {"model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336, "num_hidden_layers": 42,
             "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 256000,
             "tie_word_embeddings": True}


@pytest.mark.parametrize("bf16", [False, True])
def test_eager_attention_scores_are_counted_as_autograd_saves_them(bf16):
    """Gemma 2's eager attention keeps 8 B per (batch × head × query × key) element and layer: fp32, tanh's and
    softmax's outputs (the cast to the query's dtype is a no-op); bf16 autocast, tanh's bf16 output, the fp32
    softmax and its bf16 cast. The seq² part of autograd's count is isolated over three sequence lengths and
    two batch sizes (everything else grows linearly with the tokens)."""
    from tunewise.models.estimate import EAGER_SCORE_BYTES
    from tunewise.testing import build_family_model

    model = build_family_model("gemma2", 97, attn_implementation="eager")
    model = model.to(torch.bfloat16 if bf16 else torch.float32).train()
    assert model.config._attn_implementation == "eager" and model.config.attention_dropout == 0.0
    shape = ModelShape.from_config(model.config.to_dict())
    assert shape.eager

    def measured(batch, seq):
        ids = torch.randint(0, 97, (batch, seq))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return saved_activation_bytes(model, batch={"input_ids": ids, "labels": ids})

    for batch in (1, 2):
        short, mid, long = (measured(batch, s) for s in (32, 64, 128))
        per_seq2 = ((long - mid) / 64 - (mid - short) / 32) / (128 - 32)  # second difference: bytes per seq²
        assert per_seq2 == EAGER_SCORE_BYTES * batch * shape.heads * shape.layers  # 64 B = 8 × 4 heads × 2 layers


def test_gemma2_9b_fast_path_with_every_layer_checkpointed_predicts_the_measured_h200_peak():
    """bench/results/train_speed.md: Gemma-2-9B 2048×4 with checkpointing on the fast path peaked at 25.2 GiB
    (eager attention; plain transformers + PEFT 47.7 GiB, which the model underestimates: the soft-capped
    logits' tanh and two more norms per layer are not counted, so a plan held under plain stays under it)."""
    from tunewise.models.estimate import GIB, fixed_bytes, lora_activation_bytes

    shape = ModelShape.from_config(GEMMA2_9B)
    fixed = fixed_bytes(shape, "lora", 16)
    fast = (fixed + lora_activation_bytes(shape, 8192, fast=True, checkpointed=42, seq_len=2048)) / GIB
    plain = (fixed + lora_activation_bytes(shape, 8192, fast=False, checkpointed=42, seq_len=2048)) / GIB
    assert fast == pytest.approx(25.2, rel=0.03) and fast < plain < 47.7
    with pytest.raises(ValueError, match="seq_len"):
        lora_activation_bytes(shape, 8192, fast=True)


@pytest.mark.parametrize("fast", [False, True])
def test_eager_scores_are_counted_only_where_the_model_runs_eager(fast):
    """eager=None is transformers' default (Gemma 2: eager); eager=False (FlexAttention, SDPA) counts no seq²
    term: the same tokens cost the same in one 8192-token sequence as in four of 2048."""
    from tunewise.models.estimate import GIB, lora_activation_bytes

    shape = ModelShape.from_config(GEMMA2_9B)

    def acts(seq, **kw):
        return lora_activation_bytes(shape, 8192, fast=fast, seq_len=seq, **kw)

    assert acts(2048) == acts(2048, eager=True) and acts(8192) == acts(8192, eager=True)
    assert acts(8192, eager=True) - acts(2048, eager=True) > 10 * GIB
    assert acts(8192, eager=False) == acts(2048, eager=False) < acts(2048)
    assert lora_activation_bytes(shape, 8192, fast=fast, eager=False) == acts(2048, eager=False)  # no seq_len needed
