import numpy as np
import pytest

from tunewise.data.records import classification_record
from tunewise.evaluate.shots import (
    choose_shots,
    minilm_embedder,
    resolve_selection,
    similar_shots,
    tfidf_neighbours,
    tfidf_shots,
)

TRAIN = [classification_record(t, lab) for t, lab in [
    ("the match was won", "sport"), ("the team lost the game", "sport"), ("bank profit rose", "business"),
    ("shares fell on the market", "business"), ("the minister won the vote", "politics")]]


def test_random_shots_cover_every_label():
    shots = choose_shots(TRAIN, 3, ["sport", "business", "politics"], seed=0)
    assert sorted(s.label for s in shots) == ["business", "politics", "sport"]
    assert choose_shots(TRAIN, 0, None, 0) == []


def bag_of_words(texts):
    vocab = sorted({w for r in TRAIN for w in r.input_text.split()})
    m = np.array([[float(w in t.split()) for w in vocab] for t in texts])
    return m / np.maximum(1e-9, np.linalg.norm(m, axis=1, keepdims=True))


def test_similar_shots_put_the_nearest_last():
    queries = [classification_record("profit at the bank", "business")]
    shots = similar_shots(TRAIN, queries, 2, embed=bag_of_words)[0]
    assert shots[-1].input_text == "bank profit rose"
    assert len(shots) == 2


@pytest.mark.integration
def test_minilm_embeddings_find_the_paraphrase():
    embed = minilm_embedder()
    vecs = embed(["The football team won the match.", "Our side won the game.", "Bank profits rose sharply."])
    assert vecs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]


def test_tfidf_shots_put_the_nearest_last_and_auto_picks_by_task():
    queries = [classification_record("profit at the bank", "business"), classification_record("vote", "politics")]
    shots = tfidf_shots(TRAIN, queries, 2)
    assert shots[0][-1].input_text == "bank profit rose" and len(shots[0]) == 2
    assert shots[1][-1].input_text == "the minister won the vote"
    assert tfidf_neighbours(["a b", "c d"], ["c"], 5).tolist() == [[1, 0]]  # k capped at the pool size
    assert resolve_selection("auto", "generation") == "tfidf" == resolve_selection("auto", "extraction")
    assert resolve_selection("auto", "classification") == "random"
    assert resolve_selection("similar", "generation") == "similar"
