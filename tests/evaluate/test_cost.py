import pytest

from tunewise.config import CostConfig
from tunewise.evaluate.cost import detect_device, inference_cost


def test_dollars_per_thousand_requests_from_the_price_table():
    cost = inference_cost([100, 300], [10, 30], seconds=2.0, device="H100")
    assert cost.prompt_tokens_per_request == 200
    assert cost.generated_tokens_per_request == 20
    assert cost.tokens_per_second == pytest.approx(440 / 2)
    assert cost.dollars_per_1k_requests == pytest.approx(1.0 * 1000 / 3600 * 2.99)


def test_price_overrides_and_unknown_devices():
    cfg = CostConfig(prices={"h100": 1.0, "MyTPU": 3.6})
    assert inference_cost([1], [1], 1.0, "MyTPU", cfg).dollars_per_1k_requests == pytest.approx(1.0)
    unknown = inference_cost([1], [1], 1.0, "Abacus")
    assert unknown.price_per_hour is None and unknown.dollars_per_1k_requests is None


def test_detect_device():
    assert detect_device(CostConfig(device="L4")) == "L4"
    import torch

    if not torch.cuda.is_available():
        assert detect_device(CostConfig()) == "CPU"
