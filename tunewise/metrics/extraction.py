"""Metrics of extraction tasks, whose answer is one JSON object: how often the output is a JSON object at all
(json_valid), field-level precision / recall / F1 against the reference object (json_precision, json_recall,
json_f1), the share of outputs equal to the reference field for field (json_exact_match) and, with a JSON
Schema, the share of outputs that satisfy it (json_schema_valid).

Fields are the leaves of the object, keyed by their path (`address.city`); list items drop their position
(`items[].sku`), so a list is compared as a multiset and its order does not count. Values are compared after
normalisation: case and spacing of strings, and numbers written as text ("3" == 3 == 3.0)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

from tunewise.errors import ConfigError

EXTRACTION_METRICS = ["json_valid", "json_precision", "json_recall", "json_f1", "json_exact_match"]
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)


def parse_json_object(text: str) -> dict | None:
    """The JSON object an answer holds: the whole text, a fenced ```json block, or the span from the first
    `{` to the last `}` (models often wrap the object in a sentence); None when there is none."""
    fenced = _FENCE.search(text)
    start, end = text.find("{"), text.rfind("}")
    for candidate in (text, fenced.group(1) if fenced else None, text[start: end + 1] if 0 <= start < end else None):
        if candidate is None:
            continue
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _norm_value(v) -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, (int, float)):
        return f"{float(v):.12g}"
    text = " ".join(str(v).split()).casefold()
    try:
        return f"{float(text):.12g}"  # "3" and "3.0" written as strings match the number 3
    except ValueError:
        return text


def flatten(obj, prefix: str = "") -> Counter:
    """Multiset of (path, normalised value) leaves. An empty object or list is a leaf of its own."""
    out: Counter = Counter()
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list) and obj:
        for v in obj:
            out += flatten(v, f"{prefix}[]")
    else:
        out[(prefix, "{}" if obj == {} else "[]" if obj == [] else _norm_value(obj))] += 1
    return out


def load_schema(schema: dict | Path | str | None) -> dict | None:
    """A JSON Schema from a dict or a file, checked to be a valid schema; a ConfigError names what is wrong."""
    if schema is None:
        return None
    from jsonschema import SchemaError  # heavy (0.6 s to import)
    from jsonschema.validators import validator_for  # heavy

    if not isinstance(schema, dict):
        path = Path(schema)
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(f"{path}: task.json_schema is not a readable JSON file ({err})") from None
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as err:
        raise ConfigError(f"task.json_schema: not a valid JSON Schema: {err.message}") from None
    return schema


def extraction_examples(predictions: list[str], references: list[str], schema: dict | None = None
                        ) -> dict[str, list]:
    """Per-example validity, field counts (true positives, predicted, reference) and exact match; schema
    validity when a schema is given. A reference that is not a JSON object has no fields."""
    validator = None
    if schema is not None:
        from jsonschema.validators import validator_for  # heavy

        validator = validator_for(schema)(schema)
    out: dict[str, list] = {"json_valid": [], "json_tp": [], "json_pred_fields": [], "json_ref_fields": [],
                            "json_exact_match": []}
    if validator is not None:
        out["json_schema_valid"] = []
    for pred, ref in zip(predictions, references):
        obj, gold = parse_json_object(pred), parse_json_object(ref)
        p, g = flatten(obj) if obj is not None else Counter(), flatten(gold) if gold is not None else Counter()
        out["json_valid"].append(float(obj is not None))
        out["json_tp"].append(float(sum((p & g).values())))
        out["json_pred_fields"].append(float(sum(p.values())))
        out["json_ref_fields"].append(float(sum(g.values())))
        out["json_exact_match"].append(float(obj is not None and p == g))
        if validator is not None:
            out["json_schema_valid"].append(float(obj is not None and validator.is_valid(obj)))
    return out


def resampled_extraction(examples: dict[str, list], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Every extraction metric on every resample; precision, recall and F1 are micro-averaged over fields."""
    sums = {k: np.asarray(examples[k], dtype=float)[idx].sum(1) for k in ("json_tp", "json_pred_fields",
                                                                           "json_ref_fields")}
    tp, pred, ref = sums["json_tp"], sums["json_pred_fields"], sums["json_ref_fields"]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {"json_precision": np.nan_to_num(tp / pred), "json_recall": np.nan_to_num(tp / ref),
               "json_f1": np.nan_to_num(2 * tp / (pred + ref))}
    for key in ("json_valid", "json_exact_match", "json_schema_valid"):
        if key in examples:
            out[key] = np.asarray(examples[key], dtype=float)[idx].mean(1)
    return out
