"""User metrics for the tests: module:function callables as a user would write them."""

CALLS: list[tuple[list[str], list[str]]] = []


def mean_length_ratio(predictions: list[str], references: list[str]) -> float:
    """Mean of len(prediction) / len(reference) in words."""
    return sum(len(p.split()) / max(1, len(r.split())) for p, r in zip(predictions, references)) / len(predictions)


def falling(predictions: list[str], references: list[str]) -> float:
    """1, 1/2, 1/3, ... on successive calls: a metric that only ever gets worse (for early stopping)."""
    CALLS.append((list(predictions), list(references)))
    return 1 / len(CALLS)


def errors(predictions: list[str], references: list[str]) -> float:
    """Share of answers that differ from the reference: an error rate, so lower is better."""
    return sum(p != r for p, r in zip(predictions, references)) / len(predictions)


errors.higher_is_better = False


def not_a_number(predictions: list[str], references: list[str]) -> str:
    return "high"
