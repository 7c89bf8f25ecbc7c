"""The decoder stack as one replayed graph (tunewise.train.fast.graphs) trains as the plain stack does: the same
loss and gradients with accumulation over micro-steps, the graph captured only for a repeated shape and dropped
for another, evaluation and generation eager. CUDA graphs need a GPU: here graphs.EagerReplay stands in for
CudaReplay behind the same replay contract (tests/train/test_fast_gpu.py runs the real capture)."""

import copy

import pytest
import torch

from tests.train.test_fast import VOCAB, _assert_same, _assert_same_outputs, _batch, _fast, _lora_model
from tunewise.config import LoraConfig, TrainConfig
from tunewise.testing import build_family_model
from tunewise.train.fast import apply_fast_path, graphs, graphs_off, hf_model_of
from tunewise.train.lora import apply_lora
from tunewise.train.tokenize import PadCollator


@pytest.fixture(autouse=True)
def _eager_replay(monkeypatch):
    monkeypatch.setattr(graphs, "REPLAY", [graphs.EagerReplay])


def _graphed(model, **fast) -> graphs.GraphedStack:
    _fast(model, **fast)
    return graphs.enable_graphs(hf_model_of(model))


def _accumulated(model, parts: list[dict]) -> tuple[torch.Tensor, dict]:
    """One optimizer step's loss and gradients over micro-batches, as the Trainer accumulates them."""
    model.train()
    model.zero_grad(set_to_none=True)
    total = 0.0
    for part in parts:
        loss = model(**part).loss / len(parts)
        loss.backward()
        total += loss.detach()
    return total, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _captured(batch: dict):
    """A plain model, its graphed copy and the copy's stack, after two micro-steps of `batch` (its shape captured)."""
    plain = _lora_model()
    fast = copy.deepcopy(plain)
    stack = _graphed(fast)
    for _ in range(2):
        _accumulated(fast, [batch])
    assert stack.captures == 1 and stack.replays == 1
    return plain, fast, stack


@pytest.mark.parametrize("gc", [False, True])
def test_replayed_stack_gives_plain_loss_and_gradients_over_accumulated_micro_steps(gc):
    plain = _lora_model()
    fast = copy.deepcopy(plain)
    stack = _graphed(fast, gc=gc, **({"checkpoint_layers": 0.5} if gc else {}))
    collate = PadCollator(pad_id=3)
    parts = [collate(_batch(seed=s)) for s in (0, 1)]  # same width, padded rows: a 4-D mask is a graph input
    opt_p = torch.optim.SGD([p for p in plain.parameters() if p.requires_grad], lr=0.5)
    opt_f = torch.optim.SGD([p for p in fast.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):  # the adapters change between steps: the replay must read them, not a capture-time copy
        _assert_same(_accumulated(plain, parts), _accumulated(fast, parts))
        opt_p.step()
        opt_f.step()
    assert stack.captures == 1 and stack.drops == 0
    assert stack.eager == 1 and stack.replays == 5  # the first micro-step ran eagerly; the second has its shape


def test_each_repeated_shape_keeps_its_own_graph_with_plain_gradients():
    """Shapes alternating as bucketed batches do: each is captured the second time it comes and replayed after,
    every micro-step's loss and gradients plain's (the graphs share their pool and their gradient buffers)."""
    plain = _lora_model()
    fast = copy.deepcopy(plain)
    stack = _graphed(fast)
    collate = PadCollator(pad_id=3)
    widths = [14, 12, 14, 12, 14, 12, 14]
    for step, width in enumerate(widths):
        parts = [collate(_batch(width=width, seed=step))]
        _assert_same(_accumulated(plain, parts), _accumulated(fast, parts))
    # 14 and 12 each ran eagerly once, were captured the second time and replayed from then on
    assert stack.counts() == {"captures": 2, "graphs": 2, "drops": 0, "replays": 5, "eager": 2, "failed": None}
    assert len(stack.sinks) == 1  # one set of gradient buffers for both graphs


def test_shapes_past_max_graphs_run_eagerly(monkeypatch):
    monkeypatch.setattr(graphs, "MAX_GRAPHS", 1)
    model = _lora_model()
    stack = _graphed(model)
    collate = PadCollator(pad_id=3)
    for width in [14, 14, 12, 12, 12, 14]:
        _accumulated(model, [collate(_batch(width=width))])
    assert (stack.captures, stack.replays, stack.eager) == (1, 2, 4)


def test_evaluation_and_generation_run_eagerly_with_plain_outputs():
    batch = PadCollator(pad_id=3)(_batch())
    plain, fast, stack = _captured(batch)
    _assert_same_outputs(plain, fast, batch)
    assert stack.replays == 1


def test_the_layers_stay_where_saving_and_loading_find_them():
    plain = _lora_model()
    fast = copy.deepcopy(plain)
    _graphed(fast)
    assert list(fast.state_dict()) == list(plain.state_dict())
    layers = hf_model_of(fast).model.layers
    assert len(layers) == 2 and isinstance(layers[0], torch.nn.Module) and len(list(layers)) == 2
    assert isinstance(layers[:1], torch.nn.ModuleList) and len(layers[:1]) == 1


def test_gradients_asked_with_autograd_grad_are_returned_not_accumulated():
    plain = _lora_model()
    fast = copy.deepcopy(plain)
    _graphed(fast)
    batch = PadCollator(pad_id=3)(_batch())
    for _ in range(2):
        _accumulated(fast, [batch])
    fast.zero_grad(set_to_none=True)
    params_p = [p for p in plain.parameters() if p.requires_grad]
    params_f = [p for p in fast.parameters() if p.requires_grad]
    grads_p = torch.autograd.grad(plain(**batch).loss, params_p)
    grads_f = torch.autograd.grad(fast(**batch).loss, params_f)
    assert all(p.grad is None for p in params_f)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(grads_p, grads_f))


@pytest.mark.parametrize(("train", "family", "why"), [
    ({}, "llama", None),
    ({"lora": {"dropout": 0.05}}, "llama", "LoRA dropout"),
    ({"method": "full"}, "llama", "method full"),
    ({"fast": {"enabled": True, "cuda_graphs": False}}, "llama", "cuda_graphs is false"),
    ({"fast": {"enabled": True, "compile": True}}, "llama", "torch.compile"),
    ({}, "gemma2", "gemma2 gives layers their own masks"),
    ({}, "mistral", None),
    ({}, "qwen3", None),
])
def test_graphs_stay_off_where_a_replay_would_differ(train, family, why):
    cfg = TrainConfig(**{"fast": {"enabled": True}, **train})
    model = build_family_model(family, VOCAB)
    if cfg.method != "full":
        model = apply_lora(model, LoraConfig(r=4, alpha=8, dropout=cfg.lora.dropout))
    result = apply_fast_path(model, cfg, "cpu", log=False)
    got = graphs_off(cfg.fast, cfg, "cuda", hf_model_of(model), result, (), 1)
    assert (got is None) if why is None else (why in got), got


def test_offloaded_layers_and_several_processes_keep_graphs_off(monkeypatch):
    model = _lora_model()
    cfg = TrainConfig(fast={"enabled": True})
    result = apply_fast_path(model, cfg, "cpu", log=False)
    hf = hf_model_of(model)
    assert "offloaded" in graphs_off(cfg.fast, cfg, "cuda", hf, result, (0,), 1)
    assert "several processes" in graphs_off(cfg.fast, cfg, "cuda", hf, result, (), 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert "several processes" in graphs_off(cfg.fast, cfg, "cuda", hf, result, (), 1)


def test_micro_steps_over_the_token_limit_run_eagerly():
    model = _lora_model()
    _fast(model)
    stack = graphs.enable_graphs(hf_model_of(model), max_tokens=3 * 14 - 1)  # one token under the batch's 3 × 14
    batch = PadCollator(pad_id=3)(_batch())
    for _ in range(3):
        _accumulated(model, [batch])
    assert (stack.captures, stack.replays, stack.eager) == (0, 0, 3)
    small = PadCollator(pad_id=3)(_batch(rows=2))
    for _ in range(2):
        _accumulated(model, [small])
    assert (stack.captures, stack.replays) == (1, 1)


def test_an_adapter_s_own_dropout_keeps_graphs_off_whatever_the_config_says():
    """The config says dropout 0 but the adapter was made with 0.1: the checkpoint must keep restoring the RNG."""
    model = _lora_model(dropout=0.1)
    cfg = TrainConfig(fast={"enabled": True})
    result = apply_fast_path(model, cfg, "cpu", log=False)
    assert "dropout module" in graphs_off(cfg.fast, cfg, "cuda", hf_model_of(model), result, (), 1)


def test_training_through_the_trainer_with_replays_gives_the_eager_loss_curve(tmp_path, tiny_base, monkeypatch,
                                                                             capsys):
    """`tunewise train` with the stack graphed (the eager stand-in, graphs forced on off the GPU): examples of
    varying lengths, evaluation between steps, accumulation over micro-batches; the same loss curve as without."""
    import tunewise.train.fast as fast_path
    from tests.train.conftest import tiny_config, tiny_data
    from tunewise.train import train

    runs = {}
    for on in (False, True):
        if on:
            monkeypatch.setattr(fast_path, "graphs_off", lambda *a: None)
        cfg = tiny_config(tmp_path / str(on), fast={"enabled": True, "micro_batch_size": 2, "checkpoint_layers": 0.5},
                          gradient_checkpointing=True, lora={"dropout": 0.0})
        runs[on] = train(cfg, tiny_data(), tiny_base)
    steps = runs[True].fast_path["graph_steps"]
    assert runs[False].fast_path["graph_steps"] is None
    # 24 examples in micro-batches of 2: 12 training micro-steps; padded to bucket widths they have one width, eager
    # at its first micro-step only (each batch padded to its own longest row: 7 of the 12 ran eagerly). The
    # evaluation's forwards are not training micro-steps: not counted
    assert (steps["captures"], steps["replays"], steps["eager"]) == (1, 11, 1), steps
    out = capsys.readouterr()
    assert "tunewise train: CUDA graphs replayed" in out.out
    assert "CUDA graphs over 2 layers for micro-steps of up to 2048 tokens" in out.err
    assert runs[True].fast_path["graphs_max_tokens"] == graphs.AUTO_MAX_TOKENS
    eager, graphed = ([loss for _, loss in r.train_loss] for r in (runs[False], runs[True]))
    assert len(eager) == len(graphed) == 6
    assert max(abs(a - b) / a for a, b in zip(eager, graphed)) < 1e-4
    assert [v for _, v in runs[False].val_loss] == pytest.approx([v for _, v in runs[True].val_loss], rel=1e-4)


def test_a_failed_capture_leaves_training_eager_and_exact(monkeypatch):
    class Fails(graphs.EagerReplay):
        def __init__(self, fn, static_in, grad_inputs, n_args, sinks, proxies=None, pool=None):
            fn(*static_in)  # the warm-up ran; the capture itself fails, as an invalidated CUDA capture does
            raise torch.AcceleratorError("CUDA error: operation failed due to a previous error during capture")

    monkeypatch.setattr(graphs, "REPLAY", [Fails])
    plain = _lora_model()
    fast = copy.deepcopy(plain)
    stack = _graphed(fast)
    before = [p for p in fast.parameters() if p.requires_grad]
    batch = PadCollator(pad_id=3)(_batch())
    with pytest.warns(UserWarning, match="capture failed, training continues eagerly"):
        for _ in range(3):
            _assert_same(_accumulated(plain, [batch]), _accumulated(fast, [batch]))
    assert stack.counts() == {"captures": 0, "graphs": 0, "drops": 0, "replays": 0, "eager": 3,
                              "failed": "AcceleratorError: CUDA error: operation failed due to a previous error "
                                        "during capture"}
    assert list(fast.state_dict()) == list(plain.state_dict())  # the stand-ins are gone
    assert all(p is q for p, q in zip(before, (p for p in fast.parameters() if p.requires_grad), strict=True))


def test_a_second_forward_before_the_first_backward_runs_eagerly():
    """Two forwards, then both backwards (two losses from one step): replaying the second would overwrite what the
    first's backward reads, so it runs eagerly, and both gradients are plain's."""
    plain = _lora_model()
    fast = copy.deepcopy(plain)
    stack = _graphed(fast)
    collate = PadCollator(pad_id=3)
    first, second = collate(_batch(seed=0)), collate(_batch(seed=1))
    for _ in range(2):
        _accumulated(fast, [first])  # captured: the next forward of this shape would replay
    grads = {}
    for name, model in (("plain", plain), ("fast", fast)):
        model.zero_grad(set_to_none=True)
        a, b = model(**first).loss, model(**second).loss
        (a + 2 * b).backward()
        grads[name] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert stack.replays == 2 and stack.eager == 2  # the capture's micro-step, the first loss; the second: eager
    assert all(torch.allclose(grads["plain"][n], grads["fast"][n], rtol=1e-4, atol=1e-6) for n in grads["plain"])
    _accumulated(fast, [first])  # that backward done: replays again
    assert stack.replays == 3


def test_a_weight_moved_after_the_capture_drops_the_graph():
    """Module.to() / _apply give a parameter new memory (param.data = ...): the graph would read the old memory."""
    batch = PadCollator(pad_id=3)(_batch())
    plain, fast, stack = _captured(batch)
    for model in (plain, fast):
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.data = p.data * 0.5
    _assert_same(_accumulated(plain, [batch]), _accumulated(fast, [batch]))
    assert stack.drops == 1


@pytest.mark.parametrize(("setting", "bucketed"), [("auto", False), (True, True), (False, False)])
def test_bucket_padding_follows_its_setting_and_the_graphs(tmp_path, tiny_base, monkeypatch, setting, bucketed):
    """auto pads to bucket widths only where the stack is graphed (not here: the CPU); true always, false never."""
    import tunewise.train.trainer as trainer_mod
    from tests.train.conftest import tiny_config, tiny_data
    from tunewise.train import train

    seen = {}

    def build_trainer(*args, pad_buckets=None, **kwargs):
        seen["buckets"] = pad_buckets
        raise RuntimeError("stop here")

    monkeypatch.setattr(trainer_mod, "build_trainer", build_trainer)
    cfg = tiny_config(tmp_path, fast={"enabled": True, "bucket_padding": setting})
    with pytest.raises(RuntimeError, match="stop here"):
        train(cfg, tiny_data(), tiny_base)
    assert (seen["buckets"] is not None) == bucketed
    if bucketed:  # the ladder up to the longest training example (max_length 64 here)
        assert seen["buckets"] == sorted(seen["buckets"]) and seen["buckets"][-1] <= 64


def test_gradient_copies_are_views_of_one_buffer_with_the_same_values():
    grads = [torch.randn(3, 4), torch.randn(5), torch.randn(2, 2, 2)]
    copies = graphs._copies(grads)
    assert all(torch.equal(c, g) and c.shape == g.shape for c, g in zip(copies, grads))
    assert len({c.untyped_storage().data_ptr() for c in copies}) == 1  # one allocation
    assert all(c.untyped_storage().data_ptr() != g.untyped_storage().data_ptr() for c, g in zip(copies, grads))
    grads[0].add_(1)  # a copy, not the graph's own buffer that the next replay overwrites
    assert not torch.equal(copies[0], grads[0])
    mixed = graphs._copies([torch.randn(2), torch.randn(2, dtype=torch.float64)])
    assert [c.dtype for c in mixed] == [torch.float32, torch.float64]
