"""tunewise: the disciplined path from a raw dataset to a fine-tuned, evaluated LLM."""

__version__ = "0.1.0"
