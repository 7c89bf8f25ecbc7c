"""`data.pii_engine: presidio`: Microsoft Presidio's NER-based recognizers for what no pattern can find —
personal names, places (addresses) and dates of birth — on top of the built-in detector.

Needs `pip install 'tunewise[presidio]'` (presidio-analyzer, spaCy) and an English spaCy model
(`python -m spacy download en_core_web_lg`; a smaller en_core_web_* model works, with lower recall)."""

from __future__ import annotations

import re
from collections.abc import Callable

from tunewise.errors import ConfigError

INSTALL = "pip install 'tunewise[presidio]' && python -m spacy download en_core_web_lg"
KINDS = {"PERSON": "name", "LOCATION": "address", "DATE_TIME": "date_of_birth"}
MIN_SCORE = 0.5
# Presidio reports every date; only one introduced as a birth date is personal data.
_BIRTH_BEFORE = re.compile(r"(?i)(?:born|birth|birthday|d\.?o\.?b\.?|geboren|né|née)\W*(?:on|in|:)?\W*$")


def _english_model() -> str:
    import spacy  # heavy

    installed = [m for m in spacy.util.get_installed_models() if m.startswith("en_core_web_")]
    for size in ("trf", "lg", "md", "sm"):
        if f"en_core_web_{size}" in installed:
            return f"en_core_web_{size}"
    raise ConfigError(f"data.pii_engine: presidio needs an English spaCy model, none is installed: {INSTALL}")


def presidio_finder(hit: Callable[[str, int, int], object]) -> Callable[[str], list]:
    """A finder for names, places and birth dates, each span built as `hit(kind, start, end)`; ConfigError
    (one line, with the fix) when presidio-analyzer or a spaCy model is missing."""
    try:
        from presidio_analyzer import AnalyzerEngine  # heavy
        from presidio_analyzer.nlp_engine import NlpEngineProvider  # heavy
    except ImportError as err:
        raise ConfigError(f"data.pii_engine: presidio is not installed ({err.name} missing): {INSTALL}") from err
    config = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": _english_model()}]}
    analyzer = AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=config).create_engine(),
                              supported_languages=["en"])

    def find(text: str) -> list:
        hits = []
        for r in analyzer.analyze(text=text, language="en", entities=list(KINDS), score_threshold=MIN_SCORE):
            if r.entity_type == "DATE_TIME" and not _BIRTH_BEFORE.search(text, max(0, r.start - 24), r.start):
                continue
            hits.append(hit(KINDS[r.entity_type], r.start, r.end))
        return hits

    return find
