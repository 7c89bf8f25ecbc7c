"""The classical baselines: TF-IDF features + logistic regression for classification; for generation and
extraction, nearest-neighbour retrieval (the training answer of the training input nearest by TF-IDF).

Cheap to train and nearly free to serve; if a fine-tuned LLM cannot beat it, the LLM is not worth it."""

from __future__ import annotations

import time

from tunewise.config import RunConfig
from tunewise.data import PreparedData
from tunewise.evaluate.cost import inference_cost
from tunewise.evaluate.metrics import (
    answer_scoring,
    classification_metrics,
    generation_examples,
    generation_metrics,
)
from tunewise.evaluate.results import SystemResult
from tunewise.evaluate.shots import tfidf_neighbours

RETRIEVAL = "TF-IDF nearest-neighbour retrieval"


def classical_baseline(data: PreparedData, seed: int, prices: dict[str, float] | None = None) -> SystemResult:
    from sklearn.feature_extraction.text import TfidfVectorizer  # heavy
    from sklearn.linear_model import LogisticRegression  # heavy
    from sklearn.pipeline import make_pipeline  # heavy

    labels = data.labels or []
    # Word 1–2 grams with sublinear tf: the usual strong text-classification baseline.
    clf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                        LogisticRegression(max_iter=2000, C=10.0, random_state=seed))
    clf.fit([r.input_text for r in data.train], [r.label for r in data.train])
    start = time.perf_counter()
    preds = [str(p) for p in clf.predict([r.input_text for r in data.test])]
    seconds = time.perf_counter() - start
    refs = [r.answer for r in data.test]
    n = len(preds)
    # Classical inference runs on a CPU whatever the LLMs run on, so it is priced as CPU time.
    return SystemResult(
        name="classical", task="classification", metrics=classification_metrics(preds, refs, labels),
        outputs=preds, predictions=preds, references=refs, labels=labels, examples={},
        inference=inference_cost([0] * n, [0] * n, seconds, "CPU", prices),
        extra={"model": "TF-IDF (1-2 grams) + logistic regression"},
    )


def retrieval_baseline(cfg: RunConfig, data: PreparedData) -> SystemResult:
    """Answer each test input with the answer of the training input nearest to it by TF-IDF cosine (the
    earliest such training row on a tie), scored with the task's metrics like the LLM systems."""
    start = time.perf_counter()
    nearest = tfidf_neighbours([r.input_text for r in data.train], [r.input_text for r in data.test], 1)
    preds = [data.train[int(row[0])].answer for row in nearest]
    seconds = time.perf_counter() - start
    refs = [r.answer for r in data.test]
    examples = generation_examples(preds, [r.all_references for r in data.test], [r.input_text for r in data.test],
                                   answer_scoring(cfg, data))
    metrics = generation_metrics(examples)
    n = len(preds)
    return SystemResult(
        name="classical", task=cfg.task.type, metrics=metrics, outputs=preds, predictions=preds, references=refs,
        labels=None, examples=examples, inference=inference_cost([0] * n, [0] * n, seconds, "CPU",
                                                                 cfg.estimate.prices),
        extra={"model": f"{RETRIEVAL} (word 1-2 grams) over {len(data.train)} training inputs"},
    )
