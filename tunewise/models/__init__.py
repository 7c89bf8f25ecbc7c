"""Models: where the base model comes from (catalogue) and how it is loaded."""

from tunewise.models.catalogue import ResolvedModel, resolve_model
from tunewise.models.load import load_model, load_tokenizer, pick_device, pick_dtype

__all__ = ["ResolvedModel", "resolve_model", "load_model", "load_tokenizer", "pick_device", "pick_dtype"]
