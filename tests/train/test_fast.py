"""The fast path computes the same loss and gradients as plain transformers + PEFT (float32, tiny Llama)."""

import copy
import weakref

import pytest
import torch

from tunewise.config import FastConfig, LoraConfig, TrainConfig
from tunewise.testing import build_model
from tunewise.train.fast import apply_fast_path, decide
from tunewise.train.fast.loss import causal_lm_loss
from tunewise.train.lora import apply_lora
from tunewise.train.tokenize import IGNORE, PadCollator, packed_collator

VOCAB = 97
TOL = 1e-3


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _batch(seed: int = 0, rows: int = 3, width: int = 14) -> dict:
    """Right-padded rows of different lengths, labels on the answer part only (completion-only training)."""
    g = torch.Generator().manual_seed(seed)
    feats = []
    for n, prompt in zip((width, width - 4, width - 7)[:rows], (5, 3, 2)):
        ids = torch.randint(4, VOCAB, (n,), generator=g).tolist()
        feats.append({"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]})
    return feats


def _lora_model(dropout: float = 0.0, seed: int = 0):
    model = apply_lora(build_model(VOCAB, seed=seed), LoraConfig(r=4, alpha=8, dropout=dropout))
    g = torch.Generator().manual_seed(seed + 1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero, which would make every A gradient zero: test real ones
            p.data = torch.randn(p.shape, generator=g) * 0.1
    return model


def _loss_and_grads(model, batch: dict, seed: int = 0) -> tuple[torch.Tensor, dict]:
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout masks on both paths
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _fast(model, gc: bool = False, **fast):
    train = TrainConfig(fast={"enabled": True, "loss_chunk_tokens": 5, **fast}, gradient_checkpointing=gc)
    return apply_fast_path(model, train, "cpu", log=False)


def _assert_same(plain, fast):
    (loss_p, grads_p), (loss_f, grads_f) = plain, fast
    assert abs(loss_f.item() - loss_p.item()) / abs(loss_p.item()) < TOL
    assert grads_p.keys() == grads_f.keys() and grads_p
    worst = max(grads_p, key=lambda n: _rel(grads_f[n], grads_p[n]))
    assert _rel(grads_f[worst], grads_p[worst]) < TOL, worst
    assert all(g.abs().sum() > 0 for g in grads_p.values())  # every compared gradient is a real one


def _assert_same_outputs(plain, fast, batch: dict):
    """In eval mode without gradients: the same logits and the same greedy generation."""
    for model in (plain, fast):
        model.eval()
    with torch.no_grad():
        assert torch.allclose(plain(**batch).logits, fast(**batch).logits, atol=1e-5)
        prompt = batch["input_ids"][:1, :5]
        kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=3)
        assert torch.equal(plain.generate(input_ids=prompt, **kw), fast.generate(input_ids=prompt, **kw))


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_lora_fast_path_matches_plain_with_padding_and_ignored_labels(dropout):
    plain = _lora_model(dropout)
    fast = copy.deepcopy(plain)
    report = _fast(fast)
    assert report.loss == "chunked" and report.fused_lora_layers == 2 * 7  # 2 layers × q,k,v,o,gate,up,down
    batch = PadCollator(pad_id=3)(_batch())
    _assert_same(_loss_and_grads(plain, batch), _loss_and_grads(fast, batch))


def test_adapters_reloaded_as_new_tensors_are_the_ones_trained():
    """load_state_dict(assign=True) (PEFT's low_cpu_mem_usage loading) puts new Parameters in the LoRA layers: the
    fused layers' cached plans must follow them, or they train the old tensors and leave the new ones without
    gradients."""
    plain = _lora_model()
    fast = copy.deepcopy(plain)
    _fast(fast)
    batch = PadCollator(pad_id=3)(_batch())
    _assert_same(_loss_and_grads(plain, batch), _loss_and_grads(fast, batch))
    state = {k: v.clone() * 0.5 if "lora_B" in k else v.clone() for k, v in plain.state_dict().items()}
    for model in (plain, fast):
        model.load_state_dict(state, assign=True)
    _assert_same(_loss_and_grads(plain, batch), _loss_and_grads(fast, batch))


def test_full_finetuning_fast_path_matches_plain_for_every_parameter():
    plain = build_model(VOCAB, seed=2)  # tied embeddings: the LM-head gradient lands on the embedding too
    fast = copy.deepcopy(plain)
    _fast(fast)
    batch = PadCollator(pad_id=3)(_batch(seed=5))
    p, f = _loss_and_grads(plain, batch), _loss_and_grads(fast, batch)
    assert len(p[1]) == sum(1 for _ in plain.parameters())
    _assert_same(p, f)


def test_packed_batch_gives_the_padded_batch_loss_and_gradients():
    plain = _lora_model()
    fast = copy.deepcopy(plain)
    _fast(fast)
    feats = _batch(seed=7)
    padded = _loss_and_grads(plain, PadCollator(pad_id=3)(feats))
    packed_batch = packed_collator()(feats)
    assert packed_batch["input_ids"].shape[0] == 1  # one row, positions restarting per example
    _assert_same(padded, _loss_and_grads(fast, packed_batch))


def test_selective_checkpointing_keeps_the_gradients():
    plain = _lora_model()
    fast = copy.deepcopy(plain)
    report = _fast(fast, gc=True, checkpoint_layers=0.5)
    assert report.checkpointed_layers == 1
    layers = fast.get_base_model().model.layers
    assert [layer.gradient_checkpointing for layer in layers] == [False, True]
    batch = PadCollator(pad_id=3)(_batch(seed=3))
    _assert_same(_loss_and_grads(plain, batch), _loss_and_grads(fast, batch))


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_elementwise_recompute_gives_the_same_gradients_from_recipes(dropout, monkeypatch):
    """fast.recompute_elementwise: the SwiGLU product and the norm outputs saved by the LoRA layers are
    recomputed in backward (counted here), and loss and every LoRA gradient stay those of the plain path.
    One layer is checkpointed: it keeps its own hooks and recomputes nothing extra. With LoRA dropout the
    adapters keep their inputs (and masks) too, so the same recipes stand for them."""
    import tunewise.train.fast.recompute as rc

    calls = {"silu_mul": 0, "norm_recipes": 0, "norms_recomputed": 0}
    silu_mul, recipe_for, norm_value = rc._silu_mul, rc._recipe_for, rc._norm_value

    def counting_silu_mul(*args):
        calls["silu_mul"] += 1
        return silu_mul(*args)

    def counting_recipe_for(*args):
        ctx = recipe_for(*args)
        calls["norm_recipes"] += isinstance(ctx, rc.RecomputeSaved)
        return ctx

    def counting_norm_value(*args):
        calls["norms_recomputed"] += 1
        return norm_value(*args)

    monkeypatch.setattr(rc, "_silu_mul", counting_silu_mul)
    monkeypatch.setattr(rc, "_recipe_for", counting_recipe_for)
    monkeypatch.setattr(rc, "_norm_value", counting_norm_value)
    plain = _lora_model(dropout)
    fast = copy.deepcopy(plain)
    report = _fast(fast, gc=True, checkpoint_layers=0.5, recompute_elementwise=True)
    assert report.recompute_layers == 2 and "elementwise recompute in 2 layers" in report.describe()
    batch = PadCollator(pad_id=3)(_batch(seed=4))
    _assert_same(_loss_and_grads(plain, batch), _loss_and_grads(fast, batch))
    # layer 0 (not checkpointed): forward + recompute of its SwiGLU product and both norm outputs;
    # layer 1 (checkpointed): forward + checkpoint's rerun.
    assert calls == {"silu_mul": 4, "norm_recipes": 2, "norms_recomputed": 2}
    fast.eval()
    with torch.no_grad():
        fast(**batch)  # evaluation: no recipes, no recompute
    assert calls == {"silu_mul": 6, "norm_recipes": 2, "norms_recomputed": 2}


def test_recipe_hooks_recompute_views_of_the_target_only():
    x = torch.randn(4, 6, requires_grad=True)
    w = torch.randn(6, 3, requires_grad=True)
    h = torch.tanh(x)
    made = []

    def remake():
        made.append(1)
        return torch.tanh(x)

    with rc_context(h, remake):
        y = (h.reshape(2, 12).reshape(4, 6) @ w).sum()
    alive = weakref.ref(h)
    del h
    assert alive() is None  # the graph keeps a recipe, not the tensor (else nothing is saved)
    y.backward()
    assert made == [1]
    assert torch.allclose(w.grad, torch.tanh(x).detach().sum(0)[:, None].expand(6, 3))


def rc_context(target, fn):
    from tunewise.train.fast.recompute import RecomputeSaved

    return RecomputeSaved(target, fn)


def test_each_component_can_be_switched_off():
    model = _lora_model()
    report = _fast(model, loss="off", fused_lora=False)
    assert (report.loss, report.fused_lora_layers, report.kernels) == ("plain", 0, False)
    assert "forward" not in vars(model.get_base_model())  # the model's own forward, untouched


def test_evaluation_still_returns_logits():
    model = _lora_model()
    _fast(model)
    model.eval()
    out = model(**PadCollator(pad_id=3)(_batch()))
    assert out.logits is not None and out.loss is not None


def test_chunked_loss_matches_cross_entropy_in_float64_with_accumulation_normaliser():
    g = torch.Generator().manual_seed(11)
    hidden = torch.randn(2, 9, 8, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(33, 8, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.randint(0, 33, (2, 9), generator=g)
    labels[0, :4] = IGNORE
    logits = hidden @ weight.t()
    ref = (
        torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, 33), labels[:, 1:].reshape(-1), ignore_index=IGNORE, reduction="sum"
        )
        / 40
    )
    got = causal_lm_loss(hidden, weight, labels, num_items_in_batch=torch.tensor(40), chunk_tokens=3)
    assert abs(got.item() - ref.item()) < 1e-6
    for a, b in zip(torch.autograd.grad(got, (hidden, weight)), torch.autograd.grad(ref, (hidden, weight))):
        assert _rel(a, b) < 1e-6


def test_auto_runs_the_plain_path_on_cpu_and_on_unsupported_models():
    assert decide(FastConfig(), "cpu", "llama") == (False, "auto and the device is cpu, not CUDA")
    on, why = decide(FastConfig(enabled=True), "cpu", "gpt2")
    assert not on and "gpt2" in why
    assert decide(FastConfig(), "cuda", "llama")[0] and decide(FastConfig(enabled=True), "cpu", "qwen2")[0]
    assert not decide(FastConfig(enabled=False), "cuda", "llama")[0]


def test_training_through_the_trainer_gives_the_plain_loss_curve(tmp_path, tiny_base, capsys):
    import gc

    from transformers import TrainerCallback

    from tests.train.conftest import tiny_config, tiny_data
    from tunewise.train import train

    frozen = {}

    class FreezeWatch(TrainerCallback):  # fast.freeze_gc: frozen while training, undone after
        def on_step_end(self, args, state, control, **kwargs):
            frozen.setdefault(fast, set()).add(gc.get_freeze_count() > 0)

    runs = {}
    for fast in (False, True):
        cfg = tiny_config(
            tmp_path / str(fast),
            fast={"enabled": fast, "checkpoint_layers": 0.5},
            gradient_checkpointing=True,
            lora={"dropout": 0.0},
        )
        runs[fast] = train(cfg, tiny_data(), tiny_base, callbacks=[FreezeWatch()])
        assert gc.get_freeze_count() == 0
    assert frozen == {False: {False}, True: {True}}
    log = capsys.readouterr().err
    assert "tunewise: plain path (train.fast.enabled is false)" in log
    assert "tunewise: fast path (on by train.fast.enabled): loss chunked" in log
    assert runs[True].fast_path["checkpointed_layers"] == 1 and not runs[False].fast_path["enabled"]
    layers = runs[True].model.get_base_model().model.layers
    assert [layer.gradient_checkpointing for layer in layers] == [False, True]  # the Trainer left it as set
    plain, fast = ([loss for _, loss in r.train_loss] for r in (runs[False], runs[True]))
    assert len(plain) == len(fast) == 6
    assert max(abs(a - b) / a for a, b in zip(plain, fast)) < TOL


def test_micro_batches_give_the_whole_batch_loss_curve_with_more_accumulation(tmp_path, tiny_base, capsys):
    """train.fast.micro_batch_size: batch 4 as 4 micro-batches of 1, no recompute: the same examples per
    optimizer step, so the same loss curve (the Trainer normalises by the whole step's label count)."""
    from tests.train.conftest import tiny_config, tiny_data
    from tunewise.train import train

    runs = {}
    for micro in (None, 1):
        cfg = tiny_config(tmp_path / str(micro), fast={"enabled": True, "micro_batch_size": micro,
                                                        "checkpoint_layers": 0.0},
                          gradient_checkpointing=True, lora={"dropout": 0.0})
        runs[micro] = train(cfg, tiny_data(), tiny_base)
    assert "micro-batch 1" in capsys.readouterr().err
    assert runs[1].fast_path["micro_batch_size"] == 1 and runs[None].fast_path["micro_batch_size"] is None
    whole, micro = ([loss for _, loss in r.train_loss] for r in (runs[None], runs[1]))
    assert len(whole) == len(micro) == 6  # 24 examples / 4 per optimizer step, in both
    assert max(abs(a - b) / a for a, b in zip(whole, micro)) < TOL


def test_micro_batch_must_divide_the_batch():
    from tunewise.errors import ConfigError
    from tunewise.train.fast import micro_batch

    assert micro_batch(FastConfig(micro_batch_size=2), 8) == 2
    assert micro_batch(FastConfig(micro_batch_size=8), 8) is None and micro_batch(FastConfig(), 8) is None
    with pytest.raises(ConfigError, match="micro_batch_size=3 does not divide train.batch_size=8"):
        micro_batch(FastConfig(micro_batch_size=3), 8)


def test_bf16_autocast_fast_path_is_as_close_to_float32_as_plain():
    """The GPU setting (bf16 base, fp32 adapters, autocast) on the CPU: no tolerance exists between two bf16
    paths, so both are measured against the float32 model and the fast one must be no further off."""
    ref = _lora_model()
    plain = copy.deepcopy(ref)
    plain.get_base_model().to(torch.bfloat16)
    for name, p in plain.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
    fast = copy.deepcopy(plain)
    _fast(fast)
    batch = PadCollator(pad_id=3)(_batch(seed=9))
    want = _loss_and_grads(ref, batch)
    errors = {}
    for name, model in (("plain", plain), ("fast", fast)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, grads = _loss_and_grads(model, batch)
        errors[name] = (abs(loss.item() - want[0].item()) / want[0].item(),
                        max(_rel(grads[n].float(), want[1][n]) for n in want[1]))
    assert errors["fast"][0] < 1e-3 and errors["fast"][1] < 1.5 * errors["plain"][1] + 1e-3, errors


def test_the_gc_is_unfrozen_when_training_stops_on_an_error(tmp_path, tiny_base):
    import gc

    from transformers import TrainerCallback

    from tests.train.conftest import tiny_config, tiny_data
    from tunewise.train import train

    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            assert gc.get_freeze_count() > 0  # frozen while training
            raise RuntimeError("stop here")

    cfg = tiny_config(tmp_path, fast={"enabled": True}, lora={"dropout": 0.0})
    with pytest.raises(RuntimeError, match="stop here"):
        train(cfg, tiny_data(), tiny_base, callbacks=[Boom()])
    assert gc.get_freeze_count() == 0
