from tunewise.evaluate.generate import generate
from tunewise.models import load_model

PROMPTS = [[{"role": "user", "content": "what is this " + "news " * k}] for k in (0, 5, 1, 9, 3)]


def test_batched_left_padded_generation_equals_one_at_a_time(tiny_model_dir, tiny_tokenizer):
    model = load_model(tiny_model_dir, "cpu")
    batched = generate(model, tiny_tokenizer, PROMPTS, max_new_tokens=6, batch_size=5)
    single = generate(model, tiny_tokenizer, PROMPTS, max_new_tokens=6, batch_size=1)
    assert batched.texts == single.texts
    assert batched.generated_tokens == single.generated_tokens
    assert batched.prompt_tokens == single.prompt_tokens
    assert all(0 < n <= 6 for n in batched.generated_tokens)
