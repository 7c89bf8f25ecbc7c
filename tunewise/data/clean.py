"""Text hygiene: refuse control characters, normalise what is only cosmetic, and build the key two rows are
compared by for duplicates."""

from __future__ import annotations

import re
import unicodedata

from tunewise.data.load import RowError
from tunewise.data.records import Record

# C0/C1 control characters other than tab, newline, carriage return, vertical tab and form feed: in text
# they mean binary garbage or a wrong decoding (C1 bytes are the signature of cp1252 read as Latin-1).
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")
# Invisible characters that change nothing a reader sees but split tokens and defeat dedup: zero-width
# space, word joiner, BOM, soft hyphen, bidi overrides. ZWJ/ZWNJ stay: emoji and several scripts need them.
_INVISIBLE = re.compile("[\u200b\u2060\ufeff\u00ad\u202a-\u202e\u2066-\u2069]")
_SPACES = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000\t\x0b\x0c]")
_TRAILING = re.compile(r"[ ]+\n")
_BLANK_LINES = re.compile(r"\n{3,}")
_WS = re.compile(r"\s+")


def check_control(record: Record) -> None:
    for i, m in enumerate(record.messages):
        hit = _CONTROL.search(m["content"])
        if hit:
            raise RowError(f"messages[{i}].content", f"control character U+{ord(hit.group()):04X} at position "
                                                     f"{hit.start()}", "control characters")


def normalise_text(text: str) -> str:
    """NFC, exotic spaces and tabs to a space, CRLF to LF, no trailing spaces, at most one blank line, trimmed.
    Runs of spaces inside a line stay (code indentation is meaning)."""
    if not text.isascii():
        text = unicodedata.normalize("NFC", _SPACES.sub(" ", _INVISIBLE.sub("", text)))
    elif "\t" in text or "\x0b" in text or "\x0c" in text:
        text = _SPACES.sub(" ", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\n" in text:
        text = _BLANK_LINES.sub("\n\n", _TRAILING.sub("\n", text))
    return text.strip()


def clean_record(record: Record) -> Record:
    """Normalise every turn in place; a turn that was only invisible characters becomes an error."""
    for i, m in enumerate(record.messages):
        m["content"] = normalise_text(m["content"])
        if not m["content"]:
            raise RowError(f"messages[{i}].content", "empty field after removing invisible characters",
                           "empty field")
    if record.label is not None:
        record.label = normalise_text(record.label)
    return record


def dedup_text(record: Record, classification: bool) -> str:
    """What two rows are compared by: for classification the input turns only (so the same input under two
    labels is found as a conflict), otherwise the whole conversation; case and spacing do not count."""
    msgs = record.messages[:-1] if classification else record.messages
    return _WS.sub(" ", "\n".join(m["content"] for m in msgs)).strip().casefold()
