"""Slot errors of data-to-text outputs. For a meaning representation (MR) such as
`name[The Eagle], eatType[coffee shop], food[French], priceRange[cheap]`: which input values the output does
not realise (omissions) and which known values it mentions that the input does not hold (additions, e.g. a
different name or cuisine). The slot error rate is SER = (omissions + additions) / input slots.

Realisation is decided by rules on the normalised text (lower case, punctuation as spaces): by default a
value is realised when its text appears. The E2E NLG Challenge attributes get small hand-written rules below
(synonyms, "rated low", price and rating bands, family-friendly with negation): they are E2E-specific
heuristics in the spirit of the challenge's slot-error script (Dušek et al., e2e-cleaning), not a port of it,
so numbers are close to, not identical with, published SERs. Overlapping matches are resolved input values
first, then the longest match, so "Raja Indian Cuisine" as a venue is not also an added "Indian" food."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

_SLOT = re.compile(r"([A-Za-z_][\w ]*?)\s*\[([^\[\]]*)\]")
_MR = re.compile(r"\s*[A-Za-z_][\w ]*?\s*\[[^\[\]]*\](?:\s*,\s*[A-Za-z_][\w ]*?\s*\[[^\[\]]*\])*\s*,?\s*")
_NON_WORD = re.compile(r"[^\w£]+")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
VENUE_ATTRS = {"name", "near"}  # E2E: both name a venue, so one vocabulary (a venue mentioned is one or the other)
BOOLEAN = {"yes": True, "no": False, "true": True, "false": False}
# Negation cues looked for a few words before a yes/no attribute's mention ("not family friendly").
_NEGATIONS = {"not", "no", "non", "never", "nor", "isn", "aren", "doesn", "don", "wasn", "won", "cannot",
              "without", "unsuitable", "adults", "adult"}
_CLAUSE_BREAKS = {"and", "but", "yet", "while", "although", "though", "so", "also"}
_NEGATED_AFTER = re.compile(r"^(?: (?:are|is|aren|isn|t))* (?:not (?:welcome|allowed|permitted)|un ?friendly)")

PRICE = r"pric\w*|cost\w*"
RATING = r"rat(?:ing|ings|ed|e)|reviews?|reviewed|stars?|scor\w*|reputation"


# Words that may stand between a noun and its value: "prices are high", "the rating is quite low".
_LINKS = r"(?: (?:is|are|was|were|be|being|been|that|which|considered|quite|very|really|rather|fairly|pretty|so|too|" \
         r"extremely|generally|usually|somewhat|as|the|its|their|a|an|in|of|at|on|range|ranges|band))"


def near(word: str, context: str) -> str:
    """`word` before `context` with at most two words between ("low price", "high customer rating"), or after
    it across linking words only ("rated low", "prices are high"; not "prices and a high rating")."""
    return rf"(?:{word})(?: \S+){{0,2}}? (?:{context})|(?:{context}){_LINKS}{{0,4}} (?:{word})"


def _band(words: str, numbers: list[str], context: str) -> list[str]:
    return [near(words, context), *numbers]


_LOW_PRICE = [r"cheap\w*", r"inexpensive", r"affordabl\w*", r"budget", near(r"low\w*", PRICE),
              r"(?:less than|under|below|lower than|cheaper than|up to|no more than|within) £? ?20",
              r"£? ?20 (?:or|and) (?:less|under|below)"]
_MID_PRICE = [r"moderat\w*", near(r"average|mid|middle|medium|reasonabl\w*|fair\w*|decent\w*", PRICE),
              r"£? ?20 (?:to |and |or )?£? ?25", r"between £? ?20 and £? ?25"]
_HIGH_PRICE = [r"expensive", r"pricey|pricy", r"costly", r"high end|upscale|premium|luxur\w*", near(r"high\w*", PRICE),
               r"(?:more than|over|above|at least|upwards of|in excess of|exceeding|starting at|from) £? ?30",
               r"£? ?30 (?:or|and|plus) ?(?:more|above|over|up|upwards)?"]
_LOW_RATING = _band(r"low\w*|poor\w*|bad\w*|terribl\w*|negative", [r"(?:1|one) (?:out of |of )?(?:5|five)",
                                                                   r"(?:1|one) stars?"], RATING)
_MID_RATING = _band(r"average|ok|okay|decent|mediocre|middling|moderat\w*|medium|mid",
                    [r"(?:3|three) (?:out of |of )?(?:5|five)", r"(?:3|three) stars?"], RATING)
_HIGH_RATING = _band(r"high\w*|excellent|great|top|good|well|best|outstanding",
                     [r"(?:5|five) (?:out of |of )?(?:5|five)", r"(?:5|five) stars?"], RATING)

# E2E values → their phrasings. Price and rating values of one band ("cheap", "less than £20") are realised
# by each other's phrasings: E2E references use them interchangeably.
_E2E_RULES: dict[str, dict[str, list[str]]] = {
    "eattype": {"coffee shop": [r"coffee ?shops?", r"caf(?:e|é)s?", r"coffee house"], "pub": [r"pubs?", r"tavern"],
                "restaurant": [r"restaurants?", r"eatery", r"diner", r"bistro"]},
    "food": {"fast food": [r"fast food", r"take ?away", r"junk food"], "english": [r"english", r"british"],
             "chinese": [r"chinese"], "french": [r"french"], "indian": [r"indian", r"curr(?:y|ies)"],
             "italian": [r"italian", r"pizza\w*", r"pasta"], "japanese": [r"japanese", r"sushi"]},
    "pricerange": {"cheap": _LOW_PRICE, "less than £20": _LOW_PRICE, "moderate": _MID_PRICE, "£20-25": _MID_PRICE,
                   "high": _HIGH_PRICE, "more than £30": _HIGH_PRICE},
    "customerrating": {"low": _LOW_RATING, "1 out of 5": _LOW_RATING, "average": _MID_RATING,
                       "3 out of 5": _MID_RATING, "high": _HIGH_RATING, "5 out of 5": _HIGH_RATING},
    "area": {"riverside": [r"river\w*", r"waterfront", r"water ?side"],
             "city centre": [r"city cent(?:re|er)s?", r"cent(?:re|er) of (?:the )?(?:city|town)",
                             r"(?:town|city) cent(?:re|er)", r"downtown", r"cent(?:re|er)", r"central"]},
}
E2E_VALUES = {key: list(values) for key, values in _E2E_RULES.items()}
E2E_MENTIONS = {"familyfriendly": r"famil\w*|kids?|kiddies|child\w*|toddlers?|bab(?:y|ies)"}
E2E_NEGATIVE_MENTIONS = {"familyfriendly": r"adults? only|for adults"}  # a "no" said without naming families
# Realised when the input holds it, never an addition: references call any venue a "restaurant".
GENERIC = {("eattype", "restaurant")}


def normalise(text: str) -> str:
    """Lower case, every run of punctuation or space as one space, padded with spaces (word edges)."""
    return " " + " ".join(_NON_WORD.sub(" ", text.casefold()).split()) + " "


E2E_RULES = {key: {normalise(v).strip(): p for v, p in values.items()} for key, values in _E2E_RULES.items()}


def attr_key(attr: str) -> str:
    return re.sub(r"[\s_]+", "", attr).casefold()


def parse_mr(text: str) -> list[tuple[str, str]]:
    """(attribute, value) pairs of every `attr[value]` in the text, in order."""
    return [(a.strip(), v.strip()) for a, v in _SLOT.findall(text)]


def looks_like_mr(text: str) -> bool:
    """The whole text is a comma-separated list of `attr[value]` slots (E2E's MR format)."""
    return bool(_MR.fullmatch(text))


def _family(attr: str) -> str:
    key = attr_key(attr)
    return "venue" if key in VENUE_ATTRS else key


def _spans(patterns: list[str], text: str) -> list[tuple[int, int]]:
    joined = re.compile(r"(?<= )(?:" + "|".join(f"(?:{p})" for p in patterns) + r")(?= )")
    return [m.span() for m in joined.finditer(text)]


def _polar_spans(mention: str, text: str, value: bool) -> list[tuple[int, int]]:
    """Mentions of a yes/no attribute whose polarity (a negation a few words before, or "not welcome"
    after) matches `value`."""
    out = []
    for m in re.finditer(r"(?<= )(?:" + mention + r")(?= )", text):
        before = text[: m.start()].split()[-4:]
        negated = False
        for word in reversed(before):
            if word in _CLAUSE_BREAKS:
                break
            negated = negated or word in _NEGATIONS
        negated = negated or bool(_NEGATED_AFTER.match(text[m.end():]))
        if negated != value:
            out.append(m.span())
    return out


@dataclass
class SlotResult:
    slots: int
    missing: list[str] = field(default_factory=list)  # input slots not realised, as attr[value]
    added: list[str] = field(default_factory=list)  # known values realised that the input does not hold


@dataclass
class _Candidate:
    start: int
    end: int
    family: str
    value: str
    label: str
    slot: int | None  # index of the input slot it realises; None for an addition


class SlotChecker:
    """Counts omissions and additions against a vocabulary of known values per attribute (the values seen in
    the task's inputs, plus the E2E value lists for E2E attributes)."""

    def __init__(self, known: dict[str, dict[str, str]]):
        self.known = known  # family → normalised value → "attr[value]" as first seen
        self._boolean = {f for f, vals in known.items() if vals and set(vals) <= set(BOOLEAN)}

    @classmethod
    def from_inputs(cls, texts: Iterable[str]) -> SlotChecker:
        known: dict[str, dict[str, str]] = {}
        for text in texts:
            for attr, value in parse_mr(text):
                known.setdefault(_family(attr), {}).setdefault(normalise(value).strip(), f"{attr}[{value}]")
        for key, values in E2E_VALUES.items():
            if key in known:
                attr = next(iter(known[key].values())).rsplit("[", 1)[0]  # the data's spelling, e.g. priceRange
                for v in values:
                    known[key].setdefault(normalise(v).strip(), f"{attr}[{v}]")
        return cls(known)

    def _value_spans(self, attr: str, value: str, text: str) -> list[tuple[int, int]]:
        key, norm = attr_key(attr), normalise(value).strip()
        family = _family(attr)
        if family in self._boolean or (norm in BOOLEAN and key in E2E_MENTIONS):
            words = " ".join(_CAMEL.sub(" ", attr).replace("_", " ").casefold().split())
            mention = E2E_MENTIONS.get(key, re.escape(words))
            spans = _polar_spans(mention, text, BOOLEAN.get(norm, True))
            if not BOOLEAN.get(norm, True) and key in E2E_NEGATIVE_MENTIONS:
                spans += _spans([E2E_NEGATIVE_MENTIONS[key]], text)
            return spans
        rules = E2E_RULES.get(key, {}).get(norm)
        if rules:
            return _spans(rules, text)
        if not norm:
            return []
        literal = re.escape(norm)
        if family == "venue" and norm.startswith("the "):
            literal = r"(?:the )?" + re.escape(norm[4:])  # "The Eagle" written as "Eagle" is still the venue
        return _spans([literal], text)

    def check(self, mr: str, output: str) -> SlotResult:
        slots = parse_mr(mr)
        text = normalise(output)
        held: dict[str, set[str]] = {}
        cands: list[_Candidate] = []
        for i, (attr, value) in enumerate(slots):
            family, norm = _family(attr), normalise(value).strip()
            held.setdefault(family, set()).add(norm)
            cands += [_Candidate(start=s, end=e, family=family, value=norm, label=f"{attr}[{value}]", slot=i)
                      for s, e in self._value_spans(attr, value, text)]
        for family, values in self.known.items():
            for norm, label in values.items():
                if norm in held.get(family, set()) or (family, norm) in GENERIC:
                    continue
                attr = label.rsplit("[", 1)[0]
                cands += [_Candidate(start=s, end=e, family=family, value=norm, label=label, slot=None)
                          for s, e in self._value_spans(attr, norm, text)]
        # Input values first, then the longest match: a match inside a longer one is part of it.
        # Then a value written out in the match ("high customer rating" names high, not its band's 5 out of 5).
        cands.sort(key=lambda c: (c.slot is None, c.start - c.end, c.value not in text[c.start: c.end], c.start))
        taken: list[tuple[int, int]] = []
        realised, added = set(), {}
        for c in cands:
            if any(c.start < e and s < c.end for s, e in taken):
                continue
            taken.append((c.start, c.end))
            if c.slot is not None:
                realised.add(c.slot)
            else:
                added.setdefault(c.label, c.start)
        missing = [f"{a}[{v}]" for i, (a, v) in enumerate(slots) if i not in realised]
        # Additions in the order the output writes them.
        return SlotResult(slots=len(slots), missing=missing, added=sorted(added, key=added.get))


def slot_examples(checker: SlotChecker, inputs: list[str], predictions: list[str]) -> dict[str, list]:
    """Per-example slot counts and the missing / added values (the report lists them)."""
    results = [checker.check(i, p) for i, p in zip(inputs, predictions)]
    return {"slot_total": [float(r.slots) for r in results],
            "slot_errors": [float(len(r.missing) + len(r.added)) for r in results],
            "slot_missing": [r.missing for r in results], "slot_added": [r.added for r in results]}


def resampled_slots(examples: dict[str, list], idx: np.ndarray) -> dict[str, np.ndarray]:
    """SER on every resample: errors over input slots, both summed over the resample (a micro average)."""
    errors = np.asarray(examples["slot_errors"], dtype=float)[idx].sum(1)
    total = np.asarray(examples["slot_total"], dtype=float)[idx].sum(1)
    return {"slot_error_rate": errors / np.maximum(total, 1)}
