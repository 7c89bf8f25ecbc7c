"""Padded and packed batches: masks, and packing without attention across examples."""

import pytest
import torch

from tunewise.config import TaskConfig, TrainConfig
from tunewise.data.encode import IGNORE, encode_example
from tunewise.data.prompt import prompt_messages
from tunewise.data.records import classification_record
from tunewise.testing import build_model
from tunewise.train.methods import apply_method
from tunewise.train.tokenize import PadCollator, bucket_lengths, packed_collator

TASK = TaskConfig(instruction="classify the text .")
LABELS = ["business", "sport"]


def _enc(tok, text, answer="sport"):
    return encode_example(tok, prompt_messages(classification_record(text, answer), TASK, LABELS), answer)


def _loss(model, ids, labels):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()


def test_pad_collator_pads_right_and_masks(tiny_tokenizer):
    a, b = _enc(tiny_tokenizer, "the match"), _enc(tiny_tokenizer, "the team won the match and the game")
    batch = PadCollator(tiny_tokenizer.pad_token_id)([a.to_features(), b.to_features()])
    n = len(a.input_ids)
    assert batch["input_ids"][0, n:].eq(tiny_tokenizer.pad_token_id).all()
    assert batch["labels"][0, n:].eq(IGNORE).all() and batch["attention_mask"][0, n:].eq(0).all()


def test_bucket_lengths_end_at_the_longest_row_and_pad_at_most_half_a_row():
    assert bucket_lengths(2048) == [64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048]
    assert bucket_lengths(1000)[-2:] == [768, 1000] and bucket_lengths(50) == [50]
    for longest in (64, 65, 300, 2048, 5000):
        widths = bucket_lengths(longest)
        assert widths == sorted(set(widths)) and widths[-1] == longest
        assert all(b <= 1.5 * a for a, b in zip(widths, widths[1:]))


def test_widths_round_up_to_the_multiple_but_never_past_the_longest_example():
    feats = [{"input_ids": [5] * n, "labels": [5] * n} for n in (3, 70)]
    assert PadCollator(0, multiple=64, cap=200)(feats)["input_ids"].shape == (2, 128)
    assert PadCollator(0, multiple=64, cap=100)(feats)["input_ids"].shape == (2, 100)  # the cap
    assert PadCollator(0, multiple=64, cap=60)(feats)["input_ids"].shape == (2, 70)  # never cuts a row
    assert PadCollator(0, multiple=64)(feats[:1])["attention_mask"].tolist() == [[1] * 3 + [0] * 61]
    assert PadCollator(0)(feats)["input_ids"].shape == (2, 70)  # multiple 1: the longest row
    # bucket widths come first
    assert PadCollator(0, buckets=[72], multiple=64, cap=200)(feats)["input_ids"].shape == (2, 72)


def test_bucketed_batches_repeat_widths_and_keep_each_example_s_loss(tiny_tokenizer):
    model = build_model(len(tiny_tokenizer), seed=2).eval()
    texts = ["the match", "the team won the match and the game", "bank", "the bank made a profit this year"]
    encs = [_enc(tiny_tokenizer, t) for t in texts]
    collate = PadCollator(tiny_tokenizer.pad_token_id, buckets=[8, 16, 32, 64])
    widths = {collate([e.to_features()])["input_ids"].shape[1] for e in encs}
    assert widths <= {8, 16, 32, 64} and len(widths) < len({len(e.input_ids) for e in encs})
    for e in encs:
        batch = collate([e.to_features()])
        assert batch["input_ids"].shape[1] == next(b for b in (8, 16, 32, 64) if b >= len(e.input_ids))
        with torch.no_grad():
            padded = model(**batch).loss.item()
        assert padded == pytest.approx(_loss(model, e.input_ids, e.labels), rel=1e-5)
    longer = PadCollator(0, buckets=[4])([{"input_ids": [1] * 6, "labels": [1] * 6}])
    assert longer["input_ids"].shape == (1, 6)  # past the last bucket: its own width


def test_packing_has_no_attention_across_examples(tiny_tokenizer):
    # The model as training sees it: LoRA applied (B=0 at init, so outputs equal the base), train mode.
    model = apply_method(build_model(len(tiny_tokenizer), seed=1), TrainConfig(lora={"dropout": 0.0})).train()
    encs = [_enc(tiny_tokenizer, t, lab) for t, lab in
            [("the match", "sport"), ("the bank profit and market shares", "business"), ("team won", "sport")]]
    packed = packed_collator()([e.to_features() for e in encs])
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    with torch.no_grad():
        logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"]).logits[0]
        naive = model(input_ids=packed["input_ids"]).logits[0]  # concatenated, no position restarts
    start, leaked = 0, False
    for e in encs:
        n = len(e.input_ids)
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([e.input_ids])).logits[0]
        torch.testing.assert_close(logits[start:start + n], alone, atol=1e-5, rtol=1e-4)
        leaked |= start > 0 and not torch.allclose(naive[start:start + n], alone, atol=1e-3)
        start += n
    assert leaked  # negative control: plain concatenation does attend across examples
    # The packed training loss equals the mean over every answer token of the unpacked examples.
    with torch.no_grad():
        packed_loss = model(**packed).loss.item()
    total = sum(_loss(model, e.input_ids, e.labels) * sum(lab != IGNORE for lab in e.labels) for e in encs)
    count = sum(sum(lab != IGNORE for lab in e.labels) for e in encs)
    assert packed_loss == pytest.approx(total / count, abs=1e-5)
