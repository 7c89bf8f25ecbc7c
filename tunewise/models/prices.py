"""Dollar prices per device-hour: one table for the training estimate and for inference cost.

Defaults are typical on-demand cloud list prices (per GPU, USD/hour) in 2026; override them in the config
(`estimate.prices: {H200: 3.5}`; a full name such as "NVIDIA H200" works as a key too)."""

from __future__ import annotations

import re
from collections.abc import Iterable

DEFAULT_PRICES_PER_HOUR = {
    "H200": 3.79,  # assumed: between the H100's and the 3.3-4.0 quoted for the H200; not checked against a provider
    "H100": 2.99,
    "A100": 1.79,
    "L4": 0.80,
    "RTX4090": 0.69,
    "CPU": 0.10,
}


def _tokens(name: str) -> list[str]:
    return re.findall(r"[A-Z0-9]+", name.upper())


def device_key(name: str, keys: Iterable[str]) -> str | None:
    """The key of `keys` that names the device `name`, or None. A key matches when its letters and digits
    equal a run of whole words of the name: "NVIDIA H200" and "h200" match "H200", "NVIDIA GeForce RTX 4090"
    matches "RTX4090", but "NVIDIA L40S" does not match "L4". The longest matching key wins."""
    # Hand-written: GPU names are vendors' marketing strings; no library maps them to a price table's keys.
    words = _tokens(name)
    runs = {"".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}
    matches = [k for k in keys if "".join(_tokens(k)) in runs]
    return max(matches, key=lambda k: len("".join(_tokens(k)))) if matches else None


def price_table(overrides: dict[str, float] | None = None) -> dict[str, float]:
    """The default prices with `overrides` on top; an override's key that names a known device replaces it."""
    table = dict(DEFAULT_PRICES_PER_HOUR)
    for key, price in (overrides or {}).items():
        table[device_key(key, DEFAULT_PRICES_PER_HOUR) or key] = price
    return table


def price_per_hour(device: str, overrides: dict[str, float] | None = None) -> float:
    table = price_table(overrides)
    key = device_key(device, table)
    if key is None:
        raise KeyError(f"no price for device {device!r}; known: {', '.join(table)} (add it to estimate.prices)")
    return table[key]


def dollars(seconds: float, device: str, overrides: dict[str, float] | None = None) -> float:
    return seconds / 3600 * price_per_hour(device, overrides)
