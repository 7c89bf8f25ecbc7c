"""Dollar prices per device-hour: one table for the training estimate and for inference cost.

Defaults are typical on-demand cloud list prices (per GPU, USD/hour) in 2026; override them in the config."""

from __future__ import annotations

DEFAULT_PRICES_PER_HOUR = {
    "H100": 2.99,
    "A100": 1.79,
    "L4": 0.80,
    "RTX4090": 0.69,
    "CPU": 0.10,
}


def price_per_hour(device: str, overrides: dict[str, float] | None = None) -> float:
    table = {**DEFAULT_PRICES_PER_HOUR, **(overrides or {})}
    key = next((k for k in table if k.lower() == device.lower()), None)
    if key is None:
        raise KeyError(f"no price for device {device!r}; known: {', '.join(table)}")
    return table[key]


def dollars(seconds: float, device: str, overrides: dict[str, float] | None = None) -> float:
    return seconds / 3600 * price_per_hour(device, overrides)
