"""Inference cost per system: tokens per request, measured throughput, dollars per 1,000 requests.

Prices come from the one table the training estimate uses (tunewise/models/prices.py), with the same
overrides (`estimate.prices` in the run config). The device is the one the measurement ran on: pricing
seconds measured here as another device's would be fiction."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tunewise.models.prices import device_key, price_per_hour, price_table


@dataclass
class InferenceCost:
    requests: int
    prompt_tokens_per_request: float
    generated_tokens_per_request: float
    seconds_per_request: float  # measured, batched, on `device`
    tokens_per_second: float  # prompt + generated tokens processed per second
    device: str
    price_per_hour: float | None  # None: the device has no price (add it to estimate.prices)
    dollars_per_1k_requests: float | None

    def to_json(self) -> dict:
        return asdict(self)


def detect_device(prices: dict[str, float] | None = None) -> str:
    """The price-table key for the hardware this process runs on: the GPU's name matched against the
    table's keys, overrides included ("NVIDIA H100 80GB HBM3" → "H100"); a GPU the table lacks keeps its own
    name ("NVIDIA L40S"), so the report names it; no GPU: "CPU"."""
    import torch  # heavy

    if not torch.cuda.is_available():
        return "CPU"
    name = torch.cuda.get_device_name(0)
    return device_key(name, price_table(prices)) or name


def inference_cost(prompt_tokens: list[int], generated_tokens: list[int], seconds: float, device: str,
                   prices: dict[str, float] | None = None) -> InferenceCost:
    n = max(1, len(prompt_tokens))
    total_tokens = sum(prompt_tokens) + sum(generated_tokens)
    try:
        price = price_per_hour(device, prices)
    except KeyError:
        price = None
    per_request = seconds / n
    return InferenceCost(
        requests=len(prompt_tokens), prompt_tokens_per_request=sum(prompt_tokens) / n,
        generated_tokens_per_request=sum(generated_tokens) / n, seconds_per_request=per_request,
        tokens_per_second=total_tokens / seconds if seconds > 0 else 0.0, device=device, price_per_hour=price,
        dollars_per_1k_requests=None if price is None else per_request * 1000 / 3600 * price,
    )
