"""The classical baseline for classification: TF-IDF features + logistic regression (scikit-learn).

Cheap to train and nearly free to serve; if a fine-tuned LLM cannot beat it, the LLM is not worth it."""

from __future__ import annotations

import time

from tunewise.data import PreparedData
from tunewise.evaluate.cost import inference_cost
from tunewise.evaluate.metrics import classification_metrics
from tunewise.evaluate.results import SystemResult


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
