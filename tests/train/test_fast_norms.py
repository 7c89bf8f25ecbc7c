"""torch's fused RMSNorm in place of the model's own (train.fast.rms_norm torch): same loss and gradients,
also when the elementwise recipes recompute the norm outputs in backward; mixed dtypes keep the model's own."""

import copy

import pytest
import torch

from tests.train.test_fast import _assert_same, _batch, _fast, _lora_model, _loss_and_grads
from tunewise.train.fast.layers import use_torch_rms_norm
from tunewise.train.tokenize import PadCollator


@pytest.mark.parametrize("recompute", [False, True])
def test_torch_rms_norm_gives_the_plain_gradients(recompute, monkeypatch):
    from tunewise.train.fast import layers
    from tunewise.train.fast import recompute as recipes

    calls = []
    real = layers.torch_rms_norm

    def counted(norm, x):
        calls.append(1)
        return real(norm, x)

    monkeypatch.setattr(layers, "torch_rms_norm", counted)  # the forward's call
    monkeypatch.setattr(recipes, "torch_rms_norm", counted)  # the recipes' call in backward
    plain = _lora_model()
    fast = copy.deepcopy(plain)
    assert use_torch_rms_norm(fast.get_base_model()) == 2 * 2 + 1  # two per layer and the final norm
    report = _fast(fast, recompute_elementwise=recompute)
    assert report.recompute_layers == (2 if recompute else 0)
    batch = PadCollator(pad_id=3)(_batch(seed=41))
    _assert_same(_loss_and_grads(plain, batch), _loss_and_grads(fast, batch))
    # every norm once in forward; with recipes, the four layer norms once more in backward
    assert len(calls) == 5 + (4 if recompute else 0)


def test_a_norm_in_another_dtype_than_its_input_keeps_the_model_s_own_rule():
    model = _lora_model().get_base_model()
    use_torch_rms_norm(model)
    norm = model.model.norm
    x = torch.randn(2, 3, norm.weight.shape[0], dtype=torch.bfloat16)  # fp32 weight, bf16 input
    want = norm.weight * (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
                          ).to(torch.bfloat16)
    got = norm(x)
    assert got.dtype == want.dtype == torch.float32 and torch.allclose(got, want)
