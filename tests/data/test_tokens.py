from tunewise.data.tokens import TokenCounter


def test_fast_backend_counts_equal_the_transformers_call(tiny_tokenizer):
    texts = ["hello world", "card top up pending", "", "an unknownword here and there"]
    counter = TokenCounter(tiny_tokenizer, "tiny", None)
    expected = [len(ids) for ids in tiny_tokenizer(texts, add_special_tokens=False)["input_ids"]]
    assert tiny_tokenizer.backend_tokenizer is not None
    assert counter.count(texts) == expected and sum(expected) > 4
