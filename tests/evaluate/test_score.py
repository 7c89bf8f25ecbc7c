import pytest
import torch

from tunewise.data.encode import encode_prompt
from tunewise.evaluate.label_tree import common_prefix_len, encode_prefix, label_trie
from tunewise.evaluate.score import (
    _groups,
    answer_ids,
    answer_nll,
    score_continuations,
    score_label_ids,
    score_labels,
)
from tunewise.models import load_model
from tunewise.testing import save_tiny_model

PROMPTS = [[{"role": "user", "content": "classify the text . " + "the match team won " * k}] for k in (1, 4, 2)]
LABELS = ["sport", "business", "card arrival", "card"]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir, "cpu")


def naive_logprob(model, prompt: list[int], cont: list[int]) -> float:
    """Reference: the whole prompt + continuation in one unpadded sequence, no cache."""
    with torch.no_grad():
        lp = model(torch.tensor([prompt + cont])).logits.log_softmax(-1)[0]
    return sum(lp[len(prompt) - 1 + j, cont[j]].item() for j in range(len(cont)))


def test_answer_ids_end_with_end_of_turn(tiny_tokenizer):
    ids = answer_ids(tiny_tokenizer, PROMPTS[0], "card arrival")
    assert ids[-1] == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tiny_tokenizer.decode(ids[:-1]) == "card arrival"


@pytest.mark.parametrize("max_tokens,max_examples", [(8, 1), (100, 3), (10_000, 16)])
def test_shared_prompt_scoring_equals_full_sequence_scoring(model, tiny_tokenizer, max_tokens, max_examples):
    # One example alone, several left-padded in a batch with per-example continuation sets: all must agree
    # with scoring each full sequence separately.
    prompts = [encode_prompt(tiny_tokenizer, p) for p in PROMPTS]
    conts = [[answer_ids(tiny_tokenizer, p, lab) for lab in LABELS[: 2 + i]] for i, p in enumerate(PROMPTS)]
    scored = score_continuations(model, prompts, conts, tiny_tokenizer.pad_token_id, max_tokens, max_examples)
    for i in range(len(prompts)):
        expected = [naive_logprob(model, prompts[i], c) for c in conts[i]]
        assert scored.logprobs[i] == pytest.approx(expected, abs=1e-4)
        assert scored.lengths[i] == [len(c) for c in conts[i]]


@pytest.mark.parametrize("share_prefix", [True, False])
def test_a_shared_opening_runs_once_and_gives_the_same_scores(model, tiny_tokenizer, monkeypatch, share_prefix):
    # Multiple-choice prompts as the forgetting check writes them: the chat template's opening (a default
    # system turn, as SmolLM2's template adds) is common.
    import tunewise.evaluate.score as score

    system = {"role": "system", "content": "you are a helpful assistant for the team"}
    questions = [("what is two plus two", ["four", "five"]), ("which is a colour", ["red", "card", "team"]),
                 ("is the sky blue today in the match", ["yes", "no"])]
    msgs = [[system, {"role": "user", "content": q}] for q, _ in questions]
    prompts = [encode_prompt(tiny_tokenizer, m) for m in msgs]
    conts = [[answer_ids(tiny_tokenizer, m, c) for c in cs] for m, (_, cs) in zip(msgs, questions)]
    assert common_prefix_len(prompts) >= 8
    calls = []
    monkeypatch.setattr(score, "encode_prefix", lambda m, ids: calls.append(len(ids)) or encode_prefix(m, ids))
    scored = score_continuations(model, prompts, conts, tiny_tokenizer.pad_token_id, 10_000, 2,
                                 share_prefix=share_prefix)
    assert calls == ([common_prefix_len(prompts)] if share_prefix else [])
    for i in range(len(prompts)):
        assert scored.logprobs[i] == pytest.approx([naive_logprob(model, prompts[i], c) for c in conts[i]],
                                                   abs=1e-4)


def test_groups_respect_the_token_budget():
    prompts = [[1] * 5] * 6
    conts = [[[1, 2, 3]] * 4] * 6  # 4 rows × 3 tokens = 12 per example
    groups = _groups(list(range(6)), prompts, conts, max_tokens=24, max_examples=16)
    assert groups == [[0, 1], [2, 3], [4, 5]]
    assert _groups(list(range(6)), prompts, conts, max_tokens=5, max_examples=16) == [[i] for i in range(6)]


def test_score_labels_picks_the_most_likely_label(model, tiny_tokenizer):
    best, scored = score_labels(model, tiny_tokenizer, PROMPTS, LABELS)
    for b, s in zip(best, scored.logprobs):
        assert b == LABELS[max(range(len(LABELS)), key=s.__getitem__)]
    assert scored.prompt_tokens == [len(encode_prompt(tiny_tokenizer, p)) for p in PROMPTS]


def test_answer_nll_is_minus_the_logprob(model, tiny_tokenizer):
    answers = ["the team won", "profit", "hello world"]
    nll, tokens = answer_nll(model, tiny_tokenizer, PROMPTS, answers)
    for p, a, v, n in zip(PROMPTS, answers, nll, tokens):
        ids = answer_ids(tiny_tokenizer, p, a)
        assert n == len(ids)
        assert v == pytest.approx(-naive_logprob(model, encode_prompt(tiny_tokenizer, p), ids), abs=1e-4)


# Labels of 1 to 3 words (+ end-of-turn) sharing first tokens; prompts that share a system turn, and in the
# few-shot case the same two examples, as run_baselines builds them.
TREE_LABELS = ["sport", "business", "card", "card arrival", "card arrival payment", "card payment", "money"]
SYSTEM = {"role": "system", "content": "classify the topic . answer with one of : " + " , ".join(TREE_LABELS)}
SHOTS = [{"role": "user", "content": "the bank profit rose"}, {"role": "assistant", "content": "business"},
         {"role": "user", "content": "my card payment"}, {"role": "assistant", "content": "card payment"}]
TEXTS = ["the match team won", "the film star won an award and the music was great", "refund my money",
         "hello", "the card arrival payment was very bad and i hate the bank", "election vote"]


@pytest.fixture(scope="module")
def sharp_model(tmp_path_factory):
    """A tiny model with large weights: its label scores depend on the input and are far apart."""
    return load_model(save_tiny_model(tmp_path_factory.mktemp("sharp"), initializer_range=0.5), "cpu")


def tree_prompts(shots: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    return [[SYSTEM, *shots, {"role": "user", "content": t}] for t in TEXTS]


def test_label_trie_feeds_each_shared_prefix_once_and_no_last_token():
    trie = label_trie([[5, 6, 2], [5, 2], [7, 2]])
    assert trie.node_tokens.tolist() == [5, 6, 2, 2, 7, 2]
    assert trie.inner_tokens.tolist() == [5, 6, 7]  # the end-of-turn leaves are scored, never fed
    assert trie.inner_depths.tolist() == [0, 1, 0]
    assert trie.inner_sees.tolist() == [[True, False, False], [True, True, False], [False, False, True]]
    assert trie.logit_rows.tolist() == [0, 1, 2, 1, 0, 3]  # row 0: the prompt's last token
    assert trie.paths.tolist() == [[0, 1, 2], [0, 3, 6], [4, 5, 6]]  # 6: the zero padding node


def test_common_prefix_leaves_every_prompt_its_last_token():
    assert common_prefix_len([[1, 2, 3, 9], [1, 2, 3, 4, 5]]) == 3
    assert common_prefix_len([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert common_prefix_len([[1, 2, 3]]) == 2
    assert common_prefix_len([[1, 2], [3, 2]]) == 0


@pytest.mark.parametrize("shots", [[], SHOTS], ids=["zero-shot", "fixed-shots"])
@pytest.mark.parametrize("max_tokens,max_examples", [(1, 16), (10_000, 4), (10_000, 16)])
def test_label_tree_equals_full_sequence_scoring(sharp_model, tiny_tokenizer, shots, max_tokens, max_examples):
    prompts = tree_prompts(shots)
    best, scored = score_labels(sharp_model, tiny_tokenizer, prompts, TREE_LABELS, max_tokens, max_examples)
    assert scored.method == "label tree"
    label_ids = [answer_ids(tiny_tokenizer, prompts[0], lab) for lab in TREE_LABELS]
    for p, b, got in zip(prompts, best, scored.logprobs):
        expected = [naive_logprob(sharp_model, encode_prompt(tiny_tokenizer, p), c) for c in label_ids]
        assert got == pytest.approx(expected, abs=1e-4)
        assert b == TREE_LABELS[max(range(len(expected)), key=expected.__getitem__)]
    assert scored.lengths == [[len(c) for c in label_ids]] * len(prompts)
    assert len(set(best)) > 1  # the prompts are told apart: a constant answer would prove little


def test_label_tree_under_eager_attention(tiny_model_dir, tiny_tokenizer):
    model = load_model(tiny_model_dir, "cpu")
    model.set_attn_implementation("eager")  # adds the float mask to the scores instead of passing it to sdpa
    prompts = tree_prompts(SHOTS)
    _, scored = score_labels(model, tiny_tokenizer, prompts, TREE_LABELS, 10_000, 3)
    plain = score_continuations(model, [encode_prompt(tiny_tokenizer, p) for p in prompts],
                                [[answer_ids(tiny_tokenizer, prompts[0], lab) for lab in TREE_LABELS]] * 6, 3)
    assert scored.method == "label tree"
    assert scored.logprobs == [pytest.approx(x, abs=1e-4) for x in plain.logprobs]


class IgnoresPositionIds(torch.nn.Module):
    """A model that numbers tokens by their place in the input, as models with learnt or mask-derived
    positions do: the label tree's restarting positions mean nothing to it."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def forward(self, position_ids=None, **kwargs):
        return self.model(**kwargs)


def test_a_model_the_tree_misleads_is_scored_on_the_per_label_path(sharp_model, tiny_tokenizer):
    model = IgnoresPositionIds(sharp_model)
    prompts = [encode_prompt(tiny_tokenizer, p) for p in tree_prompts([])]
    label_ids = [answer_ids(tiny_tokenizer, tree_prompts([])[0], lab) for lab in TREE_LABELS]
    scored = score_label_ids(model, prompts, label_ids, tiny_tokenizer.pad_token_id, 10_000, 16)
    plain = score_continuations(model, prompts, [label_ids] * len(prompts), tiny_tokenizer.pad_token_id, 10_000)
    assert scored.method == "per-example cache"
    assert scored.logprobs == plain.logprobs


def test_a_sliding_window_shorter_than_a_row_is_scored_on_the_per_label_path(tmp_path, tiny_tokenizer):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=8, pad_token_id=3)).eval()
    prompts = [encode_prompt(tiny_tokenizer, p) for p in tree_prompts([])]
    label_ids = [answer_ids(tiny_tokenizer, tree_prompts([])[0], lab) for lab in TREE_LABELS]
    scored = score_label_ids(model, prompts, label_ids, 3, 10_000, 1)
    assert scored.method == "per-example cache"
    for p, got in zip(prompts, scored.logprobs):
        assert got == pytest.approx([naive_logprob(model, p, c) for c in label_ids], abs=1e-4)


def test_a_kernel_without_custom_masks_is_swapped_for_sdpa_while_scoring(tiny_model_dir, tiny_tokenizer):
    model = load_model(tiny_model_dir, "cpu")
    prompts = tree_prompts([])
    label_ids = [answer_ids(tiny_tokenizer, prompts[0], lab) for lab in TREE_LABELS]
    expected = [[naive_logprob(model, encode_prompt(tiny_tokenizer, p), c) for c in label_ids] for p in prompts]
    model.set_attn_implementation("flex_attention")  # like flash attention on CUDA: no additive 4D masks
    _, scored = score_labels(model, tiny_tokenizer, prompts, TREE_LABELS)
    assert scored.method == "label tree"
    assert model.config._attn_implementation == "flex_attention"
    assert scored.logprobs == [pytest.approx(e, abs=1e-4) for e in expected]


def test_gemma2_trained_on_flex_attention_is_scored_on_eager(tiny_tokenizer):
    """Gemma 2 trains on FlexAttention (CUDA) and transformers refuses it SDPA: the label tree swaps it to eager,
    whose masks it takes, and back."""
    from tunewise.testing import build_family_model

    model = build_family_model("gemma2", len(tiny_tokenizer), sliding_window=512).eval()
    prompts = tree_prompts([])
    label_ids = [answer_ids(tiny_tokenizer, prompts[0], lab) for lab in TREE_LABELS]
    expected = [[naive_logprob(model, encode_prompt(tiny_tokenizer, p), c) for c in label_ids] for p in prompts]
    model.set_attn_implementation("flex_attention")
    _, scored = score_labels(model, tiny_tokenizer, prompts, TREE_LABELS)
    assert scored.method == "label tree" and model.config._attn_implementation == "flex_attention"
    assert scored.logprobs == [pytest.approx(e, abs=1e-4) for e in expected]
