"""The fused LoRA path over QLoRA's 4-bit base layers (fast/quantized.py), on the CPU without bitsandbytes: a
fake 4-bit layer (int8 codes and a scale, a weight with a quant_state) is registered as bitsandbytes' Linear4bit
would be, and the one dequantize function is substituted. Loss, output, input and adapter gradients match
PEFT's math over the same layer; the dense weight is never kept."""

import copy
import gc
import weakref

import pytest
import torch
from peft import LoraConfig
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from torch import nn

from tests.train.test_fast import _assert_same, _batch, _fast, _lora_model, _loss_and_grads, _rel
from tunewise.train.fast import lora_groups, quantized
from tunewise.train.fast.lora import fuse_lora_layers, fused_4bit_layers
from tunewise.train.tokenize import PadCollator


class FakeQuantState:
    def __init__(self, shape, dtype, scale):
        self.shape, self.dtype, self.scale = shape, dtype, scale


def fake_dequantize(weight: torch.Tensor) -> torch.Tensor:
    qs = weight.quant_state
    return weight.data.view(qs.shape).to(qs.dtype) * qs.scale


class FakeLinear4bit(nn.Linear):
    """A frozen "4-bit" linear layer: int8 codes in a packed [n, 1] shape (as bitsandbytes packs), a
    quant_state on the weight; its forward is what bitsandbytes' matmul_4bit computes at training sizes."""

    @classmethod
    def from_linear(cls, lin: nn.Linear) -> "FakeLinear4bit":
        m = cls(lin.in_features, lin.out_features, bias=lin.bias is not None)
        w = lin.weight.detach()
        scale = w.abs().max() / 127
        m.weight = nn.Parameter(torch.round(w / scale).to(torch.int8).view(-1, 1), requires_grad=False)
        m.weight.quant_state = FakeQuantState(tuple(w.shape), w.dtype, scale)
        if lin.bias is not None:
            m.bias = nn.Parameter(lin.bias.detach().clone(), requires_grad=False)
        return m

    def forward(self, x):
        return nn.functional.linear(x, fake_dequantize(self.weight).to(x.dtype), self.bias).to(x.dtype)


class Linear4bit(PeftLoraLinear):
    """Stands for peft.tuners.lora.bnb.Linear4bit (defined only where bitsandbytes imports): the same LoRA math."""


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@pytest.fixture
def dequantized(monkeypatch):
    """Registers the fakes; returns weak references to every dense weight the fused path dequantises."""
    monkeypatch.setattr(quantized, "FOUR_BIT_BASES", quantized.FOUR_BIT_BASES | {_qualname(FakeLinear4bit)})
    monkeypatch.setattr(quantized, "FOUR_BIT_WRAPPERS", quantized.FOUR_BIT_WRAPPERS | {_qualname(Linear4bit)})
    made = []

    def recording(weight):
        w = fake_dequantize(weight)
        made.append(weakref.ref(w))
        return w

    monkeypatch.setattr(quantized, "dequantize", recording)
    return made


def _to_4bit(model, wrapper: bool = True):
    """Every LoRA layer's base as a fake 4-bit layer (and the wrapper as PEFT's 4-bit LoRA class)."""
    for module in list(model.modules()):
        if type(module) is PeftLoraLinear:
            module.base_layer = FakeLinear4bit.from_linear(module.base_layer)
            if wrapper:
                module.__class__ = Linear4bit
    return model


def _qlora_model(dropout: float, wrapper: bool = True):
    return _to_4bit(_lora_model(dropout), wrapper)


def _layer(bias: bool, dropout: float) -> PeftLoraLinear:
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout)
    return PeftLoraLinear(nn.Linear(24, 40, bias=bias), "default", config, r=4, lora_alpha=8, lora_dropout=dropout)


@pytest.mark.parametrize("dropout", [0.0, 0.05])
@pytest.mark.parametrize("bias", [False, True])
def test_one_layer_gives_peft_output_and_every_gradient(dropout, bias, dequantized):
    torch.manual_seed(0)
    plain = _layer(bias, dropout)
    nn.init.normal_(plain.lora_B["default"].weight, std=0.1)
    _to_4bit(plain, wrapper=False)
    fast = copy.deepcopy(plain)
    fast.base_layer = copy.deepcopy(plain.base_layer)
    fast.base_layer.weight.quant_state = plain.base_layer.weight.quant_state
    assert fuse_lora_layers(fast) == 1 and fused_4bit_layers(fast) == 1
    x = torch.randn(2, 5, 24)
    results = []
    for layer in (plain, fast):
        layer.train()
        xi = x.clone().requires_grad_()
        torch.manual_seed(1)
        y = layer(xi)
        dy = torch.randn_like(y)
        y.backward(dy)
        results.append((y.detach(), xi.grad, layer.lora_A["default"].weight.grad, layer.lora_B["default"].weight.grad))
    for want, got in zip(*results):
        assert _rel(got, want) < 1e-3
    assert len(dequantized) == 2  # forward, then backward for the input gradient


def test_the_dense_weight_is_not_kept(dequantized):
    torch.manual_seed(0)
    layer = _to_4bit(_layer(False, 0.05), wrapper=False)
    fuse_lora_layers(layer)
    layer.train()
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(torch.randn(3, 24, requires_grad=True))
    gc.collect()
    assert len(dequantized) == 1 and dequantized[0]() is None  # freed while the graph lives
    assert 40 * 24 not in saved and saved
    y.sum().backward()
    assert layer.lora_A["default"].weight.grad is not None


@pytest.mark.parametrize("dropout,extra", [(0.0, {}), (0.05, {}), (0.05, {"grouped_lora": False}),
                                           (0.0, {"gc": True, "checkpoint_layers": 0.5}),
                                           (0.05, {"gc": True, "checkpoint_layers": 1.0}),
                                           (0.05, {"gc": True, "checkpoint_layers": 0.0, "offload_kept_layers": 2,
                                                   "recompute_elementwise": True})])
@pytest.mark.parametrize("wrapper", [True, False])
def test_model_gives_peft_loss_and_gradients(dropout, extra, wrapper, dequantized):
    plain, fast = _qlora_model(dropout, wrapper), _qlora_model(dropout, wrapper)  # built alike from one seed
    groups = []
    apply = lora_groups.GroupedLora.apply
    report = _fast(fast, **extra)
    grouped = extra.get("grouped_lora", True)
    assert report.fused_lora_layers == report.fused_4bit_layers == 14  # 2 layers × q,k,v,o,gate,up,down
    assert report.lora_groups == (4 if grouped else 0)
    assert report.host_kept_layers == extra.get("offload_kept_layers", 0)
    assert "fused LoRA layers 14 (14 over 4-bit weights)" in report.describe()
    batch = PadCollator(pad_id=3)(_batch(seed=5))
    want = _loss_and_grads(plain, batch)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lora_groups.GroupedLora, "apply", lambda *a: groups.append(len(a[3])) or apply(*a))
        dequantized.clear()
        got = _loss_and_grads(fast, batch)
    _assert_same(want, got)
    reruns = {1.0: 2, 0.5: 1}.get(extra.get("checkpoint_layers"), 0)  # checkpointed layers run forward again
    assert len(groups) == (4 + 2 * reruns if grouped else 0)
    # each weight in forward and backward (but the first layer's q/k/v where their input, the frozen embedding's
    # output, needs no gradient: checkpointing asks for one), and again in forward for each checkpointed layer
    assert len(dequantized) == 14 * 2 - (0 if extra.get("gc") else 3) + 7 * reruns


def test_the_dense_weights_are_not_kept_by_the_groups(dequantized):
    fast = _qlora_model(0.05)
    assert _fast(fast).lora_groups == 4
    fast.train()
    loss = fast(**PadCollator(pad_id=3)(_batch(seed=2))).loss
    gc.collect()
    assert len(dequantized) == 14 and all(ref() is None for ref in dequantized)
    loss.backward()


def test_evaluation_takes_peft_forward(dequantized):
    plain, fast = _qlora_model(0.05), _qlora_model(0.05)
    _fast(fast)
    batch = PadCollator(pad_id=3)(_batch(seed=3))
    plain.eval()
    fast.eval()
    with torch.no_grad():
        assert torch.allclose(fast(**batch).logits, plain(**batch).logits)
    assert not dequantized  # the fake layer's own forward: no fused dequantisation


def test_unregistered_quantised_layers_keep_peft_forward():
    report = _fast(_qlora_model(0.0))  # the fakes not registered: not recognised as 4-bit
    assert report.fused_lora_layers == 0 and report.fused_4bit_layers == 0


@pytest.mark.parametrize("dropout", [0.0, 0.05])
def test_bitsandbytes_layer_gives_peft_output_and_every_gradient(dropout):
    """With bitsandbytes installed (its CPU backend here, CUDA where there is one): PEFT's own 4-bit LoRA layer
    over an NF4 (double-quantised) weight, fused, against its own forward; float32 so they agree closely."""
    bnb = pytest.importorskip("bitsandbytes")
    from peft.tuners.lora.bnb import Linear4bit as PeftLinear4bit

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    dense = nn.Linear(64, 96, bias=False)

    def layer():
        torch.manual_seed(2)
        q = bnb.nn.Linear4bit(64, 96, bias=False, compute_dtype=torch.float32, quant_type="nf4",
                              compress_statistics=True)
        q.weight = bnb.nn.Params4bit(dense.weight.data.clone(), requires_grad=False, quant_type="nf4",
                                     compress_statistics=True)
        out = PeftLinear4bit(q.to(device), "default", config=LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout),
                             r=4, lora_alpha=8, lora_dropout=dropout).to(device)
        nn.init.normal_(out.lora_B["default"].weight, std=0.1)
        return out

    plain, fast = layer(), layer()
    assert fuse_lora_layers(fast) == 1 and fused_4bit_layers(fast) == 1
    x = torch.randn(3, 10, 64, device=device)
    results = []
    for m in (plain, fast):
        m.train()
        xi = x.clone().requires_grad_()
        torch.manual_seed(1)
        y = m(xi)
        y.backward(torch.ones_like(y) + y.detach())
        results.append((y.detach(), xi.grad, m.lora_A["default"].weight.grad, m.lora_B["default"].weight.grad))
    for want, got in zip(*results):
        assert _rel(got, want) < 1e-3
