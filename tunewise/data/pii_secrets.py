"""Secrets in free text: detect-secrets' plugins (provider key shapes, keyword assignments, high-entropy
strings) plus the token shapes it has no plugin for. Returns character spans of the secret values, so a
redaction keeps the surrounding words (`export OPENAI_API_KEY=<SECRET>`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString
from detect_secrets.plugins.keyword import CONFIG_DENYLIST_REGEX_TO_GROUP, KeywordDetector

# Hex strings are commit hashes, UUIDs and checksums far more often than keys in chat/support text, and a
# public IP is personal data reported as `ip`, not a secret: both plugins are left out. The keyword and
# base64-entropy plugins are called below with their own prefilters and limits.
_LEFT_OUT = {"Hex High Entropy String", "Public IP (ipv4)", "Secret Keyword", "Base64 High Entropy String"}
_SHAPE_PLUGINS = [cls() for kind, cls in sorted(get_mapping_from_secret_type_to_class().items())
                  if kind not in _LEFT_OUT]
_KEYWORD = KeywordDetector()
_ENTROPY = Base64HighEntropyString()  # the library's default limit, 4.5 bits a character

# Token shapes detect-secrets has no plugin for (its OpenAI plugin wants the legacy `T3BlbkFJ` marker, its
# Stripe plugin live keys only); `token`/`auth`/`api-key` names are missing from its keyword denylist.
_EXTRA = re.compile(
    r"(?<![\w-])(?:hf_[A-Za-z0-9]{30,}|sk-ant-[A-Za-z0-9_-]{20,}|sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"
    r"|[rs]k_(?:test|live)_[0-9A-Za-z]{16,}|whsec_[0-9A-Za-z]{16,}|AIza[0-9A-Za-z_-]{35}"
    r"|github_pat_[A-Za-z0-9_]{40,}|glpat-[A-Za-z0-9_-]{20})"
)
# A PEM block is redacted from its BEGIN line to its END line (or the end of the text when cut off).
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
                  re.S)
_BEARER = re.compile(r"(?i)\b(?:bearer|token|basic)\s+([A-Za-z0-9._~+/=-]{16,})")
# Its keyword plugin also wants a value that starts with a letter or digit (not `SECRET_KEY = '!x...'`).
_TOKEN_ASSIGN = re.compile(r"(?i)[\w-]*(?:token|auth(?!or)|credential|api-?key|secret(?!ar)|passw|pwd)[\w-]*['\"]?"
                           r"\s*[:=]\s*['\"]?([^\s'\",;]{6,})")
# Said in prose or netrc rather than assigned: "my password is Falcon2896!UB", "login ana password s3cr3t!".
_SAID = re.compile(r"(?i)\b(?:(?:password|passwd|passphrase)\s+(?:(?:is|was)\s+)?"
                   r"|(?:pwd|api key|secret key|access token)\s+(?:is|was)\s+)['\"]?(\S+)")
# Runs of the base64 / url-safe alphabet long enough to be a key: what the entropy test looks at.
_LONG_RUN = re.compile(r"[A-Za-z0-9+/_-]{20,}={0,2}")  # '=' only as padding: `NAME=value` is two runs
_TOKEN_CHAR = re.compile(r"[A-Za-z0-9_+/=-]")
# Only text with a keyword or a 20+ character word can hold a secret. Two plain searches (the keywords on the
# lower-cased text, then \S{20}) cost ~1 µs a short row; one (?i) regex with a [\w...]{20,} branch cost ~10x.
_HINT_WORDS = re.compile("key|secret|pass|pwd|token|auth|bearer|credential|contrase|private|putty")
_LONG_WORD = re.compile(r"\S{20}")
_VALUE_END = ".,;:)]}'\"`"
_PLACEHOLDER = re.compile(r"^(?:<.*>|\$\{?\w+\}?|\*+|x+|\.+|%s|\{\{.*\}\}|none|null|true|false|\d{1,5})$", re.I)


@dataclass(frozen=True)
class Span:
    start: int
    end: int


def _plausible_value(value: str) -> bool:
    """A keyword's value is a secret when it looks like one: not a placeholder (`<token>`, `${TOKEN}`, `***`),
    not words ("password: reset it", "password doesn't work", "expired?", "Secretary: J.R.R. Smith"). Letters
    alone count only from 16 characters: a shorter letters-only password is missed, prose is not flagged."""
    if len(value) < 6 or _PLACEHOLDER.match(value):
        return False
    return not re.sub(r"['’.-]", "", value.rstrip("?!")).isalpha() or len(value) >= 16


def _token_at(text: str, start: int) -> Span:
    """The whitespace-free token starting at `start`, trailing punctuation cut off."""
    end = start
    while end < len(text) and not text[end].isspace():
        end += 1
    while end > start and text[end - 1] in _VALUE_END:
        end -= 1
    return Span(start, end)


def _widen(text: str, start: int, end: int) -> Span:
    """A plugin may match a key's prefix only (Stripe's 24 characters of a longer key): redact up to the token's
    end. Not leftwards: left of a key is its name (`API_KEY=`), which stays readable."""
    while end < len(text) and _TOKEN_CHAR.match(text[end]):
        end += 1
    return Span(start, end)


def _all_at(text: str, value: str) -> list[int]:
    out, i = [], text.find(value)
    while i >= 0:
        out.append(i)
        i = text.find(value, i + 1)
    return out


def _keyword_spans(text: str, assigned: bool) -> list[Span]:
    spans, values = [], []
    if assigned:  # the plugin costs ~200 µs a row and every assignment form it reads has `:`, `=` or `;`
        values += _KEYWORD.analyze_string(text, denylist_regex_to_group=CONFIG_DENYLIST_REGEX_TO_GROUP)
        values += [m.group(1) for m in _TOKEN_ASSIGN.finditer(text)]
    values += [m.group(1) for m in _BEARER.finditer(text)] + [m.group(1) for m in _SAID.finditer(text)]
    for value in values:
        first = value.split(None, 1)[0] if value.strip() else ""
        for at in _all_at(text, first) if first else []:
            span = _token_at(text, at)
            if _plausible_value(text[span.start:span.end]):
                spans.append(span)
    return spans


def _entropy_spans(text: str) -> list[Span]:
    """Long base64-alphabet runs above the library's entropy limit that mix letters and digits (a path or a
    hyphenated slug is letters only; a number is digits only)."""
    spans = []
    for m in _LONG_RUN.finditer(text):
        run = m.group()
        has_digit, has_alpha = any(c.isdigit() for c in run), any(c.isalpha() for c in run)
        if has_digit and has_alpha and _ENTROPY.calculate_shannon_entropy(run) > _ENTROPY.entropy_limit:
            spans.append(Span(m.start(), m.end()))
    return spans


def _shape_spans(text: str) -> list[Span]:
    spans = [_widen(text, m.start(), m.end()) for m in _EXTRA.finditer(text)]
    spans += [Span(m.start(), m.end()) for m in _PEM.finditer(text)]
    for plugin in _SHAPE_PLUGINS:
        for value in plugin.analyze_string(text):
            spans += [_widen(text, at, at + len(value)) for at in _all_at(text, value)]
    return spans + _entropy_spans(text)


def find_secrets(text: str) -> list[Span]:
    """Spans of secret values in `text`, possibly overlapping (the caller merges them)."""
    named = _HINT_WORDS.search(text.lower()) is not None
    assigned = named and (":" in text or "=" in text or ";" in text)
    spans = []
    # Provider keys are 20+ characters; shorter shapes come with a name (`api_key=`), a PEM header or a URL.
    if assigned or _LONG_WORD.search(text) or "://" in text or "PRIVATE" in text or "PuTTY" in text:
        spans += _shape_spans(text)
    return spans + _keyword_spans(text, assigned) if named else spans
