"""What tunewise knows about PEFT adapters on a loaded model, in one place: whether the model carries one, and
the base model's own weights, obtained by switching the adapter off for a block of code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def has_adapter(model) -> bool:
    """Whether `model` is a PEFT model whose adapter can be switched off (a full fine-tune cannot)."""
    return hasattr(model, "disable_adapter")


@contextmanager
def base_weights(model) -> Iterator[None]:
    """Inside the block, `model` computes with its base weights only: a PEFT model's adapter is switched off;
    a model without one is left as it is."""
    if has_adapter(model):
        with model.disable_adapter():
            yield
    else:
        yield
