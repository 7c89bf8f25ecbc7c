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


@pytest.mark.parametrize("gpu,key", [("NVIDIA H200", "H200"), ("NVIDIA H100 80GB HBM3", "H100"),
                                     ("NVIDIA A100-SXM4-80GB", "A100"), ("NVIDIA GeForce RTX 4090", "RTX4090"),
                                     ("NVIDIA L4", "L4")])
def test_detected_gpu_names_map_to_their_price_key(monkeypatch, gpu, key):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: gpu)
    assert detect_device() == key
    assert inference_cost([1], [1], 1.0, detect_device()).price_per_hour is not None


def test_an_unpriced_gpu_keeps_its_name_and_an_override_prices_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA L40S")
    assert detect_device() == "NVIDIA L40S"  # not run together, and not taken for an L4
    assert detect_device({"L40S": 1.5}) == "L40S"
    assert inference_cost([1], [1], 3600.0, "NVIDIA L40S", {"L40S": 1.5}).price_per_hour == 1.5
