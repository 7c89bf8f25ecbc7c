"""Likely label errors among classification rows (confident learning, cleanlab): out-of-fold class probabilities
from TF-IDF + logistic regression, then the rows whose given label gets the least probability, as many as
cleanlab estimates are mislabelled. Precision and recall on planted label errors: docs/data_doctor.md "Label
issues" (bench/label_noise.py)."""

from __future__ import annotations

import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
from cleanlab.filter import find_label_issues
from scipy.sparse import csr_matrix
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import FeatureUnion

from tunewise.data.records import Record

MAX_FOLDS, MIN_FOLDS = 5, 2
LISTED = 1000  # issues kept in card.json (all are counted); the HTML card shows the first 50
EXCERPT = 120  # characters of the input shown per issue
ISSUE_KIND = "likely label error (data.label_issues: drop)"  # the card counts quarantined rows by this


@dataclass
class LabelIssue:
    index: int  # position among the rows checked (train order in prepare, file order in check)
    source: str
    line: int
    text: str  # excerpt of the input
    given: str
    suggested: str  # the most probable label other than the given one
    p_suggested: float  # out-of-fold probability of the suggestion
    p_given: float  # self-confidence: out-of-fold probability of the given label (lowest first)

    @property
    def reason(self) -> str:
        return f"label_issue: suggested {self.suggested} (p={self.p_suggested:.2f})"


@dataclass
class LabelIssues:
    policy: str  # report | drop
    scope: str  # which rows were checked ("training rows", "usable rows")
    checked: int = 0
    folds: int = 0
    count: int = 0
    issues: list[LabelIssue] = field(default_factory=list)  # most likely first
    note: str | None = None  # why the check did not run
    seconds: float = 0.0
    method: str = ("out-of-fold TF-IDF (word 1-2 + char 2-5 grams) + logistic regression; cleanlab "
                   "find_label_issues(filter_by='low_self_confidence')")

    def to_card(self) -> dict:
        out = asdict(self)
        out["issues"] = out["issues"][:LISTED]
        return out

    def warning(self) -> str | None:
        if not self.count:
            return None
        action = ("quarantined (data.label_issues: drop)" if self.policy == "drop"
                  else "kept (data.label_issues: report; drop quarantines them)")
        return (f"{self.count} of {self.checked} {self.scope} look mislabelled (cleanlab on out-of-fold "
                f"probabilities; listed on the card): {action}")


def text_features(texts: list[str]) -> csr_matrix:
    """TF-IDF of word 1-2 grams and char 2-5 grams (ValueError when no n-gram occurs in two rows)."""
    # Char n-grams catch typos and word forms that word n-grams miss (more recall on bench/label_noise).
    features = FeatureUnion([
        ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)),
    ])
    # Fitting the vocabulary on all rows is label-free, so no label leaks into a held-out fold.
    return features.fit_transform(texts)


def out_of_fold_probabilities(x: csr_matrix, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """P(class | row) for every row from a logistic regression that never saw that row (stratified k-fold)."""
    # tol 1e-3 (default 1e-4): fewer lbfgs iterations, the largest cost; the detector only ranks the output.
    classifier = LogisticRegression(C=10.0, tol=1e-3, max_iter=1000, random_state=seed)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(classifier, x, labels, cv=cv, method="predict_proba")


def _skip_note(counts: Counter) -> str | None:
    if len(counts) < 2:
        return "skipped: fewer than two labels"
    small = sorted(k for k, n in counts.items() if n < MIN_FOLDS)
    if small:
        return (f"skipped: class(es) {', '.join(map(repr, small[:5]))} have fewer than {MIN_FOLDS} rows, "
                "too few for out-of-fold probabilities")
    return None


def detect(records: list[Record], policy: str, scope: str, seed: int,
           probs: np.ndarray | None = None) -> LabelIssues:
    """The likely mislabelled rows among `records` (all with a label), most likely first. `probs` reuses
    out-of-fold probabilities already computed (columns in sorted label order; bench/label_noise.py)."""
    result = LabelIssues(policy=policy, scope=scope, checked=len(records))
    counts = Counter(r.label for r in records)
    result.note = _skip_note(counts)
    if result.note:
        return result
    start = time.perf_counter()
    names = sorted(counts)
    index = {name: i for i, name in enumerate(names)}
    labels = np.array([index[r.label] for r in records])
    result.folds = max(MIN_FOLDS, min(MAX_FOLDS, min(counts.values())))
    if probs is None:
        try:
            x = text_features([r.input_text for r in records])
        except ValueError:  # sklearn's vectorizers refuse a vocabulary that min_df left empty
            result.note = "skipped: no word or character n-gram occurs in two rows; too little text to model"
            return result
        probs = out_of_fold_probabilities(x, labels, result.folds, seed)
    with warnings.catch_warnings():  # cleanlab warns about small classes; the card already does
        warnings.simplefilter("ignore")
        ranked = find_label_issues(labels, probs, filter_by="low_self_confidence",
                                   return_indices_ranked_by="self_confidence", n_jobs=1)
    result.issues = [_issue(int(i), records[i], probs[i], labels[i], names) for i in ranked]
    result.count = len(result.issues)
    result.seconds = round(time.perf_counter() - start, 2)
    return result


def _issue(i: int, record: Record, probs: np.ndarray, given: int, names: list[str]) -> LabelIssue:
    others = probs.copy()
    others[given] = -1.0  # the suggestion is never the given label, even when the model half agrees with it
    best = int(others.argmax())
    text = " ".join(record.input_text.split())
    return LabelIssue(index=i, source=str(record.meta.get("source", "")), line=int(record.meta.get("line", 0)),
                      text=text if len(text) <= EXCERPT else text[: EXCERPT - 1] + "…", given=names[given],
                      suggested=names[best], p_suggested=round(float(probs[best]), 3),
                      p_given=round(float(probs[given]), 3))
