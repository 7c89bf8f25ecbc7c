import pytest

from tunewise.models.estimate import DEVICES
from tunewise.models.prices import DEFAULT_PRICES_PER_HOUR, device_key, price_per_hour


def test_every_device_the_estimator_knows_has_a_price():
    assert set(DEVICES) == set(DEFAULT_PRICES_PER_HOUR)
    assert all(price_per_hour(d) > 0 for d in DEVICES)


def test_full_names_match_short_keys_and_short_keys_do_not_match_longer_names():
    assert device_key("NVIDIA H200", DEFAULT_PRICES_PER_HOUR) == "H200"
    assert device_key("h200", DEFAULT_PRICES_PER_HOUR) == "H200"
    assert device_key("rtx 4090", DEFAULT_PRICES_PER_HOUR) == "RTX4090"
    assert device_key("NVIDIA L40S", DEFAULT_PRICES_PER_HOUR) is None
    assert device_key("NVIDIAH200", DEFAULT_PRICES_PER_HOUR) is None  # a run-together name is no name


def test_config_overrides_replace_a_default_by_any_of_its_names_and_add_devices():
    assert price_per_hour("H200", {"NVIDIA H200": 5.0}) == 5.0
    assert price_per_hour("NVIDIA H200", {"h200": 4.0}) == 4.0
    assert price_per_hour("H100", {"NVIDIA H200": 5.0}) == DEFAULT_PRICES_PER_HOUR["H100"]
    assert price_per_hour("MI300X", {"MI300X": 2.5}) == 2.5
    with pytest.raises(KeyError, match="add it to estimate.prices"):
        price_per_hour("MI300X")
