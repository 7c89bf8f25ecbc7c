"""GPU-only checks of the fast path's CUDA pieces (skipped without CUDA; run on the device machine with
`python tests/train/test_fast_gpu.py`): with Liger's kernels, the elementwise recipes recompute exactly the
tensors they replace, so every gradient is bit-identical to the same path keeping the tensors; Gemma 2 on the fast
path under FlexAttention (what `tunewise train` runs it with on CUDA) matches plain PEFT under eager; layers offloaded
to host memory give the same gradients as kept ones and leave the GPU once copied (under pytest only); the decoder
stack replayed from CUDA graphs gives the eager stack's gradients over accumulated micro-steps and optimizer steps,
and through `tunewise train` the eager loss curve."""

import copy

import pytest
import torch

CUDA = torch.cuda.is_available()


def _grads(model, batch):
    model.train()
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _tiny_lora_models(attn: str, fasts: dict, **shape) -> dict:
    """One random bf16 Llama on CUDA (LlamaConfig `shape` overrides), LoRA-wrapped once per `fasts` entry (key →
    train.fast settings), each with the same nonzero B matrices (PEFT starts them at zero, which would zero every A
    gradient)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from tunewise.config import LoraConfig, TrainConfig
    from tunewise.train.fast import apply_fast_path
    from tunewise.train.methods import apply_method

    cfg = LlamaConfig(**{**dict(hidden_size=256, intermediate_size=704, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=1024, tie_word_embeddings=False), **shape})
    torch.manual_seed(0)
    with torch.device("cuda"):
        base = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation=attn)
    models = {}
    for key, fast in fasts.items():
        train = TrainConfig(lora=LoraConfig(r=8, alpha=16, dropout=0.0), gradient_checkpointing=True, fast=fast)
        torch.manual_seed(1)
        model = apply_method(copy.deepcopy(base), train)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.data.normal_(0, 0.02)
        models[key] = (model, apply_fast_path(model, train, "cuda", log=False))
    return models


@pytest.mark.skipif(not CUDA, reason="needs CUDA and liger-kernel")
def test_recipes_with_liger_kernels_give_bit_identical_gradients():
    pytest.importorskip("liger_kernel")
    # eager attention: SDPA's fused backward kernels may accumulate in a varying order (not bit-stable)
    built = _tiny_lora_models("eager", {rc: {"enabled": True, "checkpoint_layers": 0.0, "recompute_elementwise": rc}
                                        for rc in (False, True)})
    models = {}
    for rc, (model, report) in built.items():
        assert report.kernels and report.recompute_layers == (2 if rc else 0)
        models[rc] = model
    ids = torch.randint(0, 1024, (2, 64), device="cuda", generator=torch.Generator("cuda").manual_seed(2))
    batch = {"input_ids": ids, "labels": ids}
    (loss_keep, keep), (loss_rc, rc) = _grads(models[False], batch), _grads(models[True], batch)
    assert loss_keep == loss_rc
    assert keep.keys() == rc.keys() and all(torch.equal(keep[n], rc[n]) for n in keep)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_fast_path_gradients_match_plain_peft_in_bf16():
    """The whole fast path (fp32 adapter gradients straight from the GEMMs, scales folded into the cached
    adapters, grouped projections, recipes, micro-batches of the same batch) against plain PEFT on CUDA under
    bf16 autocast: same loss and gradients up to bf16 rounding, over two micro-batches accumulated."""
    built = _tiny_lora_models("sdpa", {fast: {"enabled": fast, "checkpoint_layers": 0.0,
                                              "recompute_elementwise": True} for fast in (False, True)})
    models = {fast: model for fast, (model, _) in built.items()}
    ids = torch.randint(0, 1024, (4, 64), device="cuda", generator=torch.Generator("cuda").manual_seed(3))
    out = {}
    for fast, model in models.items():
        model.train()
        model.zero_grad(set_to_none=True)
        losses = []
        for half in (ids[:2], ids[2:]):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(input_ids=half, labels=half).loss / 2
            loss.backward()
            losses.append(loss.item())
        out[fast] = (losses, {n: p.grad.float() for n, p in model.named_parameters() if p.requires_grad})
    (plain_losses, plain), (fast_losses, fast) = out[False], out[True]
    assert all(abs(a - b) / abs(a) < 1e-2 for a, b in zip(plain_losses, fast_losses))
    assert plain.keys() == fast.keys()
    for n in plain:
        assert fast[n].dtype == torch.float32
        rel = ((fast[n] - plain[n]).norm() / plain[n].norm()).item()
        assert rel < 3e-2, (n, rel)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("extra", [{}, {"grouped_lora": False}, {"recompute_elementwise": True},
                                   {"gc": True, "checkpoint_layers": 0.5}])
def test_lora_dropout_masks_drawn_again_in_backward_are_peft_s_on_cuda(extra):
    """LoRA dropout on CUDA (fp32: under bf16 autocast PEFT draws on its fp32 copy and the fast path on bf16, and
    CUDA's kernel spreads the random numbers by dtype, so the masks differ from PEFT's): backward draws each mask
    again from the CUDA generator's state kept in forward, so loss and every adapter gradient are PEFT's under
    one seed, another seed fails the comparison, and the generator ends where PEFT's leaves it."""
    from tests.train.test_fast import _assert_same, _batch, _lora_model, _loss_and_grads
    from tunewise.config import TrainConfig
    from tunewise.train.fast import apply_fast_path
    from tunewise.train.tokenize import PadCollator

    settings = {k: v for k, v in extra.items() if k != "gc"}
    plain = _lora_model(dropout=0.1).cuda()
    fast = copy.deepcopy(plain)
    train = TrainConfig(fast={"enabled": True, "loss_chunk_tokens": 5, **settings},
                        gradient_checkpointing=extra.get("gc", False))
    report = apply_fast_path(fast, train, "cuda", log=False)
    assert report.fused_lora_layers == 14
    batch = {k: v.cuda() for k, v in PadCollator(pad_id=3)(_batch(seed=13)).items()}
    want, after_plain = _loss_and_grads(plain, batch), torch.rand(16, device="cuda")
    got, after_fast = _loss_and_grads(fast, batch), torch.rand(16, device="cuda")
    _assert_same(want, got)
    assert torch.equal(after_plain, after_fast)
    with pytest.raises(AssertionError):
        _assert_same(want, _loss_and_grads(fast, batch, seed=1))


GEMMA2_FAST = {"no-checkpoint": {"checkpoint_layers": 0.0, "recompute_elementwise": False},
               "checkpoint-and-recipes": {"checkpoint_layers": 0.5, "recompute_elementwise": True}}


def _gemma2_flex_and_eager(fast: dict, dtype=torch.float32, **overrides) -> tuple:
    """A tiny soft-capped Gemma 2 on CUDA, LoRA-wrapped with nonzero B (test_fast_families' model): plain PEFT on
    transformers' default eager attention, and a copy on the fast path with `fast` under the FlexAttention that
    `tunewise train` picks for it on CUDA."""
    from transformers import Gemma2ForCausalLM

    from tests.train.test_fast_families import _lora_model
    from tunewise.config import TrainConfig
    from tunewise.train.fast import apply_fast_path
    from tunewise.train.runtime import attention_implementation

    plain = _lora_model("gemma2", **overrides).to("cuda")
    for name, p in plain.named_parameters():
        if "lora_" not in name:  # adapters stay float32, as PEFT keeps them on a bf16 base
            p.data = p.data.to(dtype)
    plain.get_base_model().set_attn_implementation("eager")  # some transformers releases default Gemma 2 to SDPA
    flex = copy.deepcopy(plain)
    auto = attention_implementation("auto", "cuda", Gemma2ForCausalLM)[0]
    assert auto in ("flex_attention", "flash_attention_2")  # flash_attn first when installed
    flex.get_base_model().set_attn_implementation("flex_attention")
    report = apply_fast_path(flex, TrainConfig(fast={"enabled": True, **fast}, gradient_checkpointing=True), "cuda",
                             log=False)
    assert report.enabled and report.fused_lora_layers == 14
    return plain, flex


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("fast", GEMMA2_FAST.values(), ids=GEMMA2_FAST.keys())
def test_gemma2_fast_path_under_flex_attention_matches_plain_peft_under_eager(fast):
    """float32, a right-padded batch, a sliding and a global layer, soft-capped attention and final logits: the
    fast path under FlexAttention (the cap as a score_mod, the masks as block masks; with checkpointing and the
    recipes' saved-tensor hooks around its compiled kernel) gives plain PEFT's eager loss and every adapter
    gradient within 1e-3."""
    from tests.train.test_fast import _assert_same, _batch, _loss_and_grads
    from tunewise.train.tokenize import PadCollator

    plain, flex = _gemma2_flex_and_eager(fast)
    batch = {k: v.cuda() for k, v in PadCollator(pad_id=3)(_batch(seed=21)).items()}
    want, got = _loss_and_grads(plain, batch), _loss_and_grads(flex, batch)
    assert len(want[1]) == 2 * 7 * 2
    _assert_same(want, got)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_gemma2_flex_attention_at_head_dim_256_trains_in_bf16_like_eager():
    """Gemma-2-9B's head_dim 256 (FlexAttention's Triton kernels must fit it, backward included) at 512 tokens
    (several 128-token blocks, a 200-token sliding window) under bf16 autocast: the fast path on FlexAttention
    against plain PEFT on eager, same loss and gradients up to bf16 rounding."""
    plain, flex = _gemma2_flex_and_eager({"checkpoint_layers": 0.5}, torch.bfloat16, head_dim=256,
                                         query_pre_attn_scalar=256, sliding_window=200)
    ids = torch.randint(4, 97, (2, 512), device="cuda", generator=torch.Generator("cuda").manual_seed(5))
    batch = {"input_ids": ids, "labels": ids}
    (loss_p, grads_p), (loss_f, grads_f) = _grads(plain, batch), _grads(flex, batch)
    assert abs(loss_f - loss_p) / abs(loss_p) < 1e-2
    assert grads_p.keys() == grads_f.keys() and grads_p
    for n in grads_p:
        rel = ((grads_f[n].float() - grads_p[n].float()).norm() / grads_p[n].float().norm()).item()
        assert rel < 5e-2, (n, rel)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_offloaded_layers_give_bit_identical_gradients_on_cuda(monkeypatch):
    """The copies to the host and back run on their own streams: a missing wait would show as wrong values."""
    from tunewise.train.fast import offload

    monkeypatch.setattr(offload, "MIN_BYTES", 0)
    fasts = {n: {"enabled": True, "checkpoint_layers": 0.0, "recompute_elementwise": True, "offload_kept_layers": n,
                 "cuda_graphs": False} for n in (0, 2)}
    built = _tiny_lora_models("eager", fasts)
    assert [report.host_kept_layers for _, report in built.values()] == [0, 2]
    ids = torch.randint(0, 1024, (2, 512), device="cuda", generator=torch.Generator("cuda").manual_seed(3))
    batch = {"input_ids": ids, "labels": ids}
    for _ in range(2):
        (loss_keep, keep), (loss_off, off) = (_grads(built[n][0], batch) for n in (0, 2))
        assert loss_keep == loss_off
        assert keep.keys() == off.keys() and all(torch.equal(keep[n], off[n]) for n in keep)
    assert built[2][0].get_base_model()._tw_offload.host_bytes > 0


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_offloaded_layers_leave_the_gpu_once_copied():
    """8 layers at 8,192 tokens, 4 of them offloaded: once the copies are done, the forward's saved tensors on the
    GPU are at least 3.5 of those layers' saved bytes fewer, and the gradients stay the same. (Whether the copies
    are done by the forward's end, the peak, is the host link's and the plan's matter: bench/train_speed.)"""
    from tunewise.models.estimate import ModelShape, fast_lora_layer_bytes

    built = _tiny_lora_models("sdpa", {n: {"enabled": True, "checkpoint_layers": 0.0, "recompute_elementwise": True,
                                           "micro_batch_size": None, "offload_kept_layers": n} for n in (0, 4)},
                              hidden_size=1024, intermediate_size=3584, num_hidden_layers=8, num_attention_heads=8,
                              vocab_size=2048)
    ids = torch.randint(0, 2048, (2, 4096), device="cuda", generator=torch.Generator("cuda").manual_seed(4))
    batch = {"input_ids": ids, "labels": ids}
    resident, grads = {}, {}
    for n, (model, report) in built.items():
        assert report.host_kept_layers == n
        _grads(model, batch)  # warm-up: pinned blocks, kernels
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**batch).loss
        torch.cuda.synchronize()
        if n:
            model.get_base_model()._tw_offload.poll()
        resident[n] = torch.cuda.memory_allocated() - before
        loss.backward()
        grads[n] = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
        del loss
    config = built[0][0].get_base_model().config.to_dict()
    layer = ids.numel() * fast_lora_layer_bytes(ModelShape.from_config(config), recipes=True)
    assert resident[0] - resident[4] >= 3.5 * layer, (resident, layer)
    worst = max(((grads[4][k] - grads[0][k]).norm() / grads[0][k].norm()).item() for k in grads[0])
    assert worst < 1e-2


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize(("share", "widths"), [(0.0, (512, 512)), (0.5, (512, 512)), (0.5, (512, 384))])
def test_cuda_graph_replay_gives_the_eager_stack_s_gradients(share, widths):
    """Two micro-steps a step, three steps with the adapters updated between: the graphs captured must read the
    current adapters and their gradients must add up as the eager ones do; with two widths, two graphs share one
    memory pool and one set of gradient buffers, each micro-step replaying over the other's intermediates."""
    fasts = {g: {"enabled": True, "checkpoint_layers": share, "recompute_elementwise": True, "cuda_graphs": g}
             for g in (False, True)}
    built = _tiny_lora_models("eager", fasts)
    assert [report.graphed_layers for _, report in built.values()] == [0, 2]
    gen = torch.Generator("cuda").manual_seed(5)
    parts = [torch.randint(0, 1024, (2, w), device="cuda", generator=gen) for w in widths]
    opts = {g: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1.0) for g, (m, _) in built.items()}
    for _ in range(3):
        out = {}
        for g, (model, _) in built.items():
            model.train()
            model.zero_grad(set_to_none=True)
            losses = []
            for ids in parts:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = model(input_ids=ids, labels=ids).loss / 2
                loss.backward()
                losses.append(loss.item())
            out[g] = losses, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
            opts[g].step()
        (loss_e, grads_e), (loss_g, grads_g) = out[False], out[True]
        assert loss_e == pytest.approx(loss_g, rel=1e-3)
        for n in grads_e:
            rel = ((grads_g[n].float() - grads_e[n].float()).norm() / grads_e[n].float().norm()).item()
            assert rel < 1e-2, (n, rel)
    stack = built[True][0].get_base_model().model.layers.__dict__["_tw_stack"]
    assert (stack.captures, stack.replays) == ((1, 5) if widths[0] == widths[1] else (2, 4))


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_tunewise_train_replays_the_stack_on_cuda(tmp_path, tiny_base):
    """`tunewise train` itself (the Trainer, its DataLoader threads) with examples of one length, so every batch has
    one shape: the stack is captured under the Trainer and the loss curve is the eager one's."""
    from tests.train.conftest import tiny_config
    from tunewise.data import PreparedData
    from tunewise.data.records import classification_record
    from tunewise.train import train

    texts = {"sport": "the team won it", "business": "the bank made profit", "politics": "the minister won votes",
             "tech": "a phone with software"}  # four words each, one-word labels: one token count for all

    def rows(n):
        return [classification_record(texts[label], label) for label in (list(texts) * n)[:n]]

    data = PreparedData(rows(24), rows(8), rows(4), sorted(texts), "hash")
    runs = {g: train(tiny_config(tmp_path / str(g), fast={"enabled": True, "cuda_graphs": g}, lora={"dropout": 0.0}),
                     data, tiny_base) for g in (False, True)}
    steps = runs[True].fast_path["graph_steps"]
    assert steps["replays"] >= 4 and steps["drops"] == 0, steps
    eager, graphed = ([loss for _, loss in r.train_loss] for r in (runs[False], runs[True]))
    assert len(eager) == len(graphed) == 6
    assert max(abs(a - b) / a for a, b in zip(eager, graphed)) < 1e-2, (eager, graphed)


if __name__ == "__main__":
    test_recipes_with_liger_kernels_give_bit_identical_gradients()
    print("ok: recipes give bit-identical gradients on", torch.cuda.get_device_name())
    test_fast_path_gradients_match_plain_peft_in_bf16()
    from tunewise.train.fast.lora import _ADDMM_INTO, _OUT_DTYPE_MM

    print("ok: fast path gradients match plain PEFT in bf16; fp32 gradients straight from the GEMM:",
          _OUT_DTYPE_MM[0], "; accumulated by the GEMM:", _ADDMM_INTO[0])
    for extra in ({}, {"grouped_lora": False}, {"recompute_elementwise": True}, {"gc": True, "checkpoint_layers": 0.5}):
        test_lora_dropout_masks_drawn_again_in_backward_are_peft_s_on_cuda(extra)
    print("ok: LoRA dropout masks drawn again in backward give PEFT's gradients and RNG stream")
    for settings in GEMMA2_FAST.values():
        test_gemma2_fast_path_under_flex_attention_matches_plain_peft_under_eager(settings)
    test_gemma2_flex_attention_at_head_dim_256_trains_in_bf16_like_eager()
    print("ok: Gemma 2's fast path under FlexAttention matches plain PEFT under eager (fp32; bf16 at head_dim 256)")
