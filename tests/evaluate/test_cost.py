import pytest
import torch

from tunewise.evaluate.cost import detect_device, inference_cost


def test_dollars_per_thousand_requests_from_the_price_table():
    cost = inference_cost([100, 300], [10, 30], seconds=2.0, device="H100")
    assert cost.prompt_tokens_per_request == 200
    assert cost.generated_tokens_per_request == 20
    assert cost.tokens_per_second == pytest.approx(440 / 2)
    assert cost.dollars_per_1k_requests == pytest.approx(1.0 * 1000 / 3600 * 2.99)


def test_price_overrides_and_unknown_devices():
    prices = {"h100": 1.0, "MyTPU": 3.6}  # the run config's estimate.prices
    assert inference_cost([1], [1], 1.0, "MyTPU", prices).dollars_per_1k_requests == pytest.approx(1.0)
    unknown = inference_cost([1], [1], 1.0, "Abacus")
    assert unknown.price_per_hour is None and unknown.dollars_per_1k_requests is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the detected key is the GPU's")
def test_detect_device_on_cpu():
    assert detect_device() == "CPU"
