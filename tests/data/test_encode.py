"""Completion-only labels and train/serve prompt identity."""

import pytest
import torch
import torch.nn.functional as F

from tunewise.config import TaskConfig
from tunewise.data.encode import IGNORE, encode_example, encode_prompt
from tunewise.data.prompt import prompt_messages
from tunewise.data.records import classification_record
from tunewise.evaluate.generate import generate
from tunewise.testing import build_model

TASK = TaskConfig(instruction="classify the text .")
LABELS = ["business", "sport"]


def _enc(tok, text, answer="sport"):
    return encode_example(tok, prompt_messages(classification_record(text, answer), TASK, LABELS), answer)


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    return build_model(len(tiny_tokenizer), seed=1).eval()


def _loss(model, ids, labels):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()


def test_loss_covers_answer_tokens_only(tiny_tokenizer, model):
    enc = _enc(tiny_tokenizer, "the team won the match")
    answer_at = [i for i, lab in enumerate(enc.labels) if lab != IGNORE]
    assert enc.input_ids[answer_at[0]:] == enc.labels[answer_at[0]:]  # answer + end-of-turn, nothing after
    assert enc.labels[-1] == tiny_tokenizer.eos_token_id
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([enc.input_ids])).logits[0]
    # Independent computation: cross-entropy of the logit before each answer token, averaged.
    by_hand = F.cross_entropy(logits[[i - 1 for i in answer_at]], torch.tensor([enc.input_ids[i] for i in answer_at]))
    assert _loss(model, enc.input_ids, enc.labels) == pytest.approx(by_hand.item(), abs=1e-5)
    # ...and not the loss over the whole sequence (what an unmasked collator would train on).
    assert abs(_loss(model, enc.input_ids, enc.input_ids) - by_hand.item()) > 1e-3


def test_changing_prompt_tokens_does_not_change_the_loss_targets(tiny_tokenizer, model):
    a, b = _enc(tiny_tokenizer, "the team won the match"), _enc(tiny_tokenizer, "the team lost the game")
    assert a.input_ids != b.input_ids and len(a.input_ids) == len(b.input_ids)
    assert a.labels == b.labels  # the prompt's tokens appear nowhere in what the loss is scored against
    # Scored on the same forward pass, the loss cannot tell which prompt the targets came from...
    assert _loss(model, a.input_ids, a.labels) == _loss(model, a.input_ids, b.labels)
    # ...whereas targets that include the prompt would (the negative control: this test can fail).
    assert _loss(model, a.input_ids, a.input_ids) != _loss(model, a.input_ids, b.input_ids)
    # Gradient check: the logits at prompt positions get exactly zero gradient from the training loss.
    logits = model(input_ids=torch.tensor([a.input_ids])).logits.detach().requires_grad_(True)
    model.loss_function(logits, torch.tensor([a.labels]), vocab_size=logits.shape[-1]).backward()
    first_answer = a.labels.index(next(lab for lab in a.labels if lab != IGNORE))
    assert logits.grad[0, : first_answer - 1].abs().sum() == 0
    assert logits.grad[0, first_answer - 1:].abs().sum() > 0


def test_train_and_inference_prompts_are_identical(tiny_tokenizer, model):
    record = classification_record("the bank profit", "business")
    messages = prompt_messages(record, TASK, LABELS)
    enc = encode_example(tiny_tokenizer, messages, record.answer)
    served = encode_prompt(tiny_tokenizer, messages)  # what evaluate/generate.py and serving tokenise
    n_prompt = enc.labels.index(next(lab for lab in enc.labels if lab != IGNORE))
    assert enc.input_ids[:n_prompt] == served
    assert tiny_tokenizer.decode(served).rstrip().endswith("assistant")  # ends with the generation prompt
    gens = generate(model, tiny_tokenizer, [messages], max_new_tokens=1, batch_size=1)
    assert gens.prompt_tokens == [len(served)]
