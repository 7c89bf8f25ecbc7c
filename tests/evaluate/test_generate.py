from tunewise.data.encode import encode_prompt
from tunewise.evaluate.generate import generate
from tunewise.models import load_model
from tunewise.testing import save_tiny_model

PROMPTS = [[{"role": "user", "content": "what is this " + "news " * k}] for k in (0, 5, 1, 9, 3)]


def test_batched_left_padded_generation_equals_one_at_a_time(tiny_model_dir, tiny_tokenizer):
    model = load_model(tiny_model_dir, "cpu")
    batched = generate(model, tiny_tokenizer, PROMPTS, max_new_tokens=6, batch_size=5)
    single = generate(model, tiny_tokenizer, PROMPTS, max_new_tokens=6, batch_size=1)
    assert batched.texts == single.texts
    assert batched.generated_tokens == single.generated_tokens
    assert batched.prompt_tokens == single.prompt_tokens
    assert all(0 < n <= 6 for n in batched.generated_tokens)


def test_each_row_stops_at_its_own_stop_token(tmp_path, tiny_tokenizer):
    # A stop token that some rows produce early and others late or never: each row is cut right after its
    # own first stop token, and the rows still running are unaffected by the finished ones.
    model = load_model(save_tiny_model(tmp_path, initializer_range=0.5), "cpu")
    free = [model.generate(**tiny_tokenizer.apply_chat_template(p, add_generation_prompt=True, return_dict=True,
                                                                return_tensors="pt"),
                           max_new_tokens=8, do_sample=False)[0].tolist() for p in PROMPTS]
    rows = [out[len(encode_prompt(tiny_tokenizer, p)):] for out, p in zip(free, PROMPTS)]
    stop = rows[0][1]
    model.generation_config.eos_token_id = [tiny_tokenizer.eos_token_id, stop]
    expected = [row[: row.index(stop) + 1] if stop in row else row for row in rows]
    assert len({len(e) for e in expected}) > 1  # rows stop at different steps
    gens = generate(model, tiny_tokenizer, PROMPTS, max_new_tokens=8, batch_size=5)
    assert gens.generated_tokens == [len(e) for e in expected]
    assert gens.texts == [tiny_tokenizer.decode(e, skip_special_tokens=True).strip() for e in expected]
