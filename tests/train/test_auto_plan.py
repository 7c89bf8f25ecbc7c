"""The fast path's automatic plan (train.fast micro_batch_size / checkpoint_layers / recompute_elementwise on
auto): never above plain transformers + PEFT's predicted peak nor the budget, the fastest predicted plan within
both, explicit values kept; and apply_fast_path applies it and prints it."""

import itertools

import pytest

from tunewise.models.estimate import FLEX_KV_BYTES, ModelShape
from tunewise.train.fast.auto_plan import choose_plan

LLAMA3_8B = ModelShape.from_config({
    "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256})
SHAPES = {
    "llama3-8b": LLAMA3_8B,
    "smollm2-135m": ModelShape.from_config({
        "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
        "tie_word_embeddings": True}),
    "qwen2.5-7b": ModelShape.from_config({
        "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064}),
    "qwen3-0.6b": ModelShape.from_config({  # heads × head_dim (2048) wider than hidden (1024)
        "model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
        "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
        "tie_word_embeddings": True}),
}
GEMMA2_9B = ModelShape.from_config({  # eager attention: seq² scores per layer
    "model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336, "num_hidden_layers": 42,
    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 256000,
    "tie_word_embeddings": True, "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0})


def test_llama3_8b_2048x4_with_checkpointing_gets_micro_batch_2_no_recompute_and_recipes():
    """The measured fastest setting (bench/results/train_speed.md: 2.07-2.10x at 27.5 GiB against plain's
    29.4) is what the plan picks on an 80 GiB GPU, within plain's predicted peak."""
    plan = choose_plan(LLAMA3_8B, batch_size=4, seq_len=2048, gradient_checkpointing=True, budget_gib=80)
    assert (plan.micro_batch_size, plan.checkpointed_layers, plan.recompute_elementwise) == (2, 0, True)
    assert plan.fits and plan.peak_gib <= plan.plain_peak_gib
    assert plan.peak_gib == pytest.approx(27.5, abs=0.3) and plan.plain_peak_gib == pytest.approx(29.4, abs=0.3)
    assert 1.9 < plan.speedup < 2.3
    line = plan.describe()
    assert "micro-batch 2 of 4, 0 of 32 layers checkpointed, elementwise recipes on" in line
    assert "plain transformers + PEFT's 29.3" in line and "budget 80.0 GiB" in line



def test_lora_dropout_leaves_the_llama3_8b_plan_as_without():
    """The fast path keeps no dropout masks (it draws them again in backward), so dropout 0.05, the shipped
    default, gets dropout 0's plan (on the H200 with masks kept it checkpointed 8 of 32 layers)."""
    kw = dict(batch_size=4, seq_len=2048, gradient_checkpointing=True, device="H200")
    plan, without = choose_plan(LLAMA3_8B, dropout=0.05, **kw), choose_plan(LLAMA3_8B, dropout=0.0, **kw)
    assert (plan.micro_batch_size, plan.checkpointed_layers) == (2, 0) and plan.fits
    assert (plan.micro_batch_size, plan.checkpointed_layers, plan.recompute_elementwise, plan.peak_gib) == (
        without.micro_batch_size, without.checkpointed_layers, without.recompute_elementwise, without.peak_gib)

def test_a_tighter_budget_checkpoints_more_layers():
    kw = dict(batch_size=4, seq_len=2048, gradient_checkpointing=True)
    plans = [choose_plan(LLAMA3_8B, **kw, budget_gib=b) for b in (80, 28, 24, 22, 20, 19)]
    assert all(p.fits and p.peak_gib <= min(p.budget_gib, p.plain_peak_gib) for p in plans)
    recomputed = [p.checkpointed_layers for p in plans]
    assert recomputed == sorted(recomputed) and recomputed[0] == 0 and recomputed[-1] == 32
    rates = [p.tokens_per_s for p in plans]
    assert rates == sorted(rates, reverse=True)  # less memory, never faster


def test_nothing_fitting_takes_the_least_memory_and_says_so():
    plan = choose_plan(LLAMA3_8B, batch_size=4, seq_len=2048, gradient_checkpointing=True, budget_gib=15)
    assert not plan.fits and "none of" in plan.describe()
    assert (plan.micro_batch_size, plan.checkpointed_layers) == (1, 32)


def test_explicit_values_are_kept_and_checkpointing_stays_off_when_off():
    kw = dict(batch_size=4, seq_len=2048, budget_gib=80)
    plan = choose_plan(LLAMA3_8B, **kw, gradient_checkpointing=True, micro_batch_size=4, recompute_elementwise=False)
    assert (plan.micro_batch_size, plan.recompute_elementwise) == (4, False) and plan.checkpointed_layers > 0
    assert choose_plan(LLAMA3_8B, **kw, gradient_checkpointing=True, checkpoint_layers=0.5).checkpointed_layers == 16
    off = choose_plan(LLAMA3_8B, **kw, gradient_checkpointing=False)
    assert off.checkpointed_layers == 0 and off.peak_gib <= off.plain_peak_gib
    assert off.considered == 3 * 2  # micro-batches 4, 2, 1 × recipes off / on


def _alternatives(plan, kw) -> list:
    """The best plan for every micro-batch and for recipes on and off, and the plan with one layer fewer
    checkpointed: none of them may fit and be faster."""
    micros = [m for m in range(1, plan.batch_size + 1) if plan.batch_size % m == 0]
    others = [choose_plan(**kw, micro_batch_size=m) for m in micros]
    others += [choose_plan(**kw, recompute_elementwise=rc) for rc in (False, True)]
    if plan.checkpointed_layers:
        fewer = (plan.checkpointed_layers - 1) / plan.layers
        others.append(choose_plan(**kw, micro_batch_size=plan.micro_batch_size, checkpoint_layers=fewer,
                                  recompute_elementwise=plan.recompute_elementwise))
    return others


def test_over_a_grid_no_plan_is_above_plain_or_the_budget_and_none_nearby_is_faster():
    bound = 0
    for (name, shape), batch, seq, gc, dropout, budget in itertools.product(
            SHAPES.items(), (1, 4, 6), (512, 2048, 8192), (True, False), (0.0, 0.05), (None, 40, 20)):
        kw = dict(shape=shape, batch_size=batch, seq_len=seq, gradient_checkpointing=gc, dropout=dropout,
                  budget_gib=budget)
        plan = choose_plan(**kw)
        case = (name, batch, seq, gc, dropout, budget)
        assert plan.peak_gib <= plan.plain_peak_gib, case
        cap = min(plan.plain_peak_gib, budget or plan.plain_peak_gib)
        if plan.fits:
            assert plan.peak_gib <= cap, case
            for other in _alternatives(plan, kw):
                assert not other.fits or round(other.tokens_per_s) <= round(plan.tokens_per_s), (case, other)
        else:  # not even the least memory fits
            least = choose_plan(**kw, micro_batch_size=1, checkpoint_layers=1.0, recompute_elementwise=True)
            assert least.peak_gib > cap, case
        greedy = choose_plan(**kw, micro_batch_size=batch, checkpoint_layers=0.0, recompute_elementwise=False)
        bound += greedy.peak_gib > greedy.plain_peak_gib  # the cap is what stops the fastest-looking plan
    assert bound > 20


def test_gemma2_9b_2048x4_with_checkpointing_checkpoints_fewer_layers_within_plain():
    """Gemma 2 runs eager attention; its scores are counted (estimate.EAGER_SCORE_BYTES), so the plan may
    use the headroom every-layer checkpointing leaves (measured on an H200: 25.2 GiB against plain's 47.7)."""
    plan = choose_plan(GEMMA2_9B, batch_size=4, seq_len=2048, gradient_checkpointing=True, budget_gib=80)
    assert plan.fits and plan.peak_gib <= plan.plain_peak_gib
    assert plan.checkpointed_layers < 42
    every = choose_plan(GEMMA2_9B, batch_size=4, seq_len=2048, gradient_checkpointing=True, budget_gib=80,
                        micro_batch_size=4, checkpoint_layers=1.0, recompute_elementwise=False)
    assert every.peak_gib == pytest.approx(25.2, rel=0.03) and plan.speedup > every.speedup


def test_over_a_grid_no_plan_with_eager_attention_is_above_plain():
    for batch, seq, gc, dropout, budget in itertools.product(
            (1, 2, 4), (512, 2048, 4096, 8192), (True, False), (0.0, 0.05), (None, 80, 40)):
        plan = choose_plan(GEMMA2_9B, batch_size=batch, seq_len=seq, gradient_checkpointing=gc,
                           dropout=dropout, budget_gib=budget)
        assert plan.peak_gib <= plan.plain_peak_gib, (batch, seq, gc, dropout, budget)
        if plan.fits and budget:
            assert plan.peak_gib <= budget


def test_gemma2_under_flex_attention_plans_without_seq2_scores_against_plain_on_eager():
    """tunewise trains Gemma 2 with FlexAttention on CUDA (tunewise.train.runtime): the fast path's activations
    count as SDPA's, with no seq² term, so the same tokens cost the same memory in long or short sequences; the
    cap, plain transformers + PEFT, keeps transformers' default eager attention and its seq² scores."""
    kw = dict(gradient_checkpointing=True, budget_gib=None, checkpoint_layers=0.5, recompute_elementwise=False,
              device="H200")
    short, long = ({attn: choose_plan(GEMMA2_9B, batch_size=b, micro_batch_size=b, seq_len=s, attention=attn, **kw)
                    for attn in (None, "eager", "flex_attention", "sdpa")} for b, s in ((4, 2048), (1, 8192)))
    for plans in (short, long):
        assert len({p.plain_peak_gib for p in plans.values()}) == 1  # plain: eager whatever the fast path runs
        assert plans[None] == plans["eager"]
        # FlexAttention: SDPA's plus key and value repeated to every query head: 21 kept layers, 1 recomputed
        kv_copies = 22 * FLEX_KV_BYTES * 16 * 256 * 8192 / 1024**3
        assert plans["flex_attention"].peak_gib == pytest.approx(plans["sdpa"].peak_gib + kv_copies, abs=1e-9)
        assert plans["flex_attention"].peak_gib < plans["eager"].peak_gib
    assert long["flex_attention"].peak_gib == pytest.approx(short["flex_attention"].peak_gib, abs=1e-9)
    assert long["eager"].peak_gib > short["eager"].peak_gib + 10  # 4x the scores per token


def test_gemma2_9b_2048x4_plans_match_the_measured_h200_rows():
    """bench/results/train_speed/2026-11-29_h200x2_*gemma2*: plain (eager) peaked at 47.7 GiB, the fast path under
    FlexAttention with 10 of 42 layers checkpointed at 47.0-47.3 GiB; the plan is that one and both predictions
    are within 1 % of the measured peaks."""
    plan = choose_plan(GEMMA2_9B, batch_size=4, seq_len=2048, gradient_checkpointing=True, device="H200",
                       attention="flex_attention")
    assert (plan.micro_batch_size, plan.checkpointed_layers, plan.recompute_elementwise) == (4, 10, True)
    assert plan.plain_peak_gib == pytest.approx(47.7, rel=0.01) and plan.peak_gib == pytest.approx(47.3, rel=0.01)


def test_gemma2_9b_2048x4_under_flex_attention_checkpoints_fewer_layers_than_under_eager():
    kw = dict(batch_size=4, seq_len=2048, gradient_checkpointing=True, budget_gib=126, device="H200")
    eager, flex = (choose_plan(GEMMA2_9B, **kw, attention=a) for a in ("eager", "flex_attention"))
    assert flex.fits and flex.peak_gib <= flex.plain_peak_gib == eager.plain_peak_gib
    assert flex.checkpointed_layers < eager.checkpointed_layers and flex.speedup > eager.speedup


def _model(vocab: int = 97):
    from tunewise.config import LoraConfig
    from tunewise.testing import build_model
    from tunewise.train.lora import apply_lora

    return apply_lora(build_model(vocab), LoraConfig(r=4, alpha=8, dropout=0.05))


def _train(**fast):
    from tunewise.config import TrainConfig

    return TrainConfig(batch_size=4, gradient_checkpointing=True, lora={"dropout": 0.05},
                       fast={"enabled": True, "memory_budget_gib": 1.0, **fast})


def test_apply_fast_path_prints_the_plan_it_makes_on_cuda(capsys):
    """The plan is arithmetic, so a CPU model can be planned as on CUDA (it never runs here). A vocabulary of
    5,000 makes plain's full logits the larger side, as in real models; the log's second line is the plan."""
    from tunewise.train.fast import apply_fast_path

    report = apply_fast_path(_model(vocab=5000), _train(), "cuda", seq_len=2048)
    plan = report.plan
    assert plan["fits"] and plan["budget_gib"] == 1.0 and plan["peak_gib"] <= plan["plain_peak_gib"]
    assert report.checkpointed_layers == plan["checkpointed_layers"]
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("tunewise: fast path") and err[1] == f"  {plan['why']}"
    assert err[1].startswith("  auto plan: micro-batch") and "the fastest predicted of" in err[1]


def test_apply_fast_path_applies_what_the_plan_says(monkeypatch):
    import tunewise.train.fast as fast_path
    from tunewise.train.fast.auto_plan import Plan

    chosen = Plan(micro_batch_size=2, batch_size=4, checkpointed_layers=1, layers=2, recompute_elementwise=True,
                  offloaded_layers=1, peak_gib=1.0, plain_peak_gib=2.0, budget_gib=3.0, tokens_per_s=2.0,
                  plain_tokens_per_s=1.0, fits=True, considered=9)
    monkeypatch.setattr(fast_path, "plan_for", lambda *args, **kwargs: chosen)
    model = _model()
    report = fast_path.apply_fast_path(model, _train(), "cuda", seq_len=2048, log=False)
    assert (report.micro_batch_size, report.checkpointed_layers, report.recompute_layers) == (2, 1, 2)
    assert report.host_kept_layers == 1  # the first layer: checkpointing takes one of the others
    assert [layer.gradient_checkpointing for layer in model.get_base_model().model.layers] == [False, True]
    assert report.plan["speedup"] == 2.0 and report.describe().endswith(chosen.describe())


def test_without_cuda_or_a_sequence_length_auto_keeps_the_previous_defaults():
    from tunewise.train.fast import apply_fast_path

    for device, seq_len in (("cpu", 2048), ("cuda", None)):
        report = apply_fast_path(_model(), _train(), device, seq_len=seq_len, log=False)
        assert report.plan is None and "auto plan" not in report.describe()
        assert (report.micro_batch_size, report.checkpointed_layers, report.recompute_layers) == (None, 2, 0)


def test_gemma2_is_planned_under_eager_and_flex_attention_and_other_eager_models_are_not():
    from tunewise.config import LoraConfig
    from tunewise.testing import build_family_model
    from tunewise.train.fast import apply_fast_path
    from tunewise.train.lora import apply_lora

    plans = {}
    for attn in ("eager", "flex_attention"):  # flex: what tunewise train runs on CUDA
        gemma = apply_lora(build_family_model("gemma2", 5000, attn_implementation=attn), LoraConfig(r=4, alpha=8))
        plans[attn] = apply_fast_path(gemma, _train(), "cuda", seq_len=2048, log=False).plan
        assert plans[attn]["peak_gib"] <= plans[attn]["plain_peak_gib"] and "auto plan" in plans[attn]["why"]
    assert plans["flex_attention"]["plain_peak_gib"] == plans["eager"]["plain_peak_gib"]
    assert plans["flex_attention"]["peak_gib"] < plans["eager"]["peak_gib"]
    llama = _model()
    llama.get_base_model().config._attn_implementation = "eager"
    report = apply_fast_path(llama, _train(), "cuda", seq_len=2048, log=False)
    assert report.plan["why"].startswith("no automatic plan: eager attention") and report.checkpointed_layers == 2


def test_explicit_values_win_over_the_plan():
    from tunewise.train.fast import apply_fast_path

    report = apply_fast_path(_model(), _train(micro_batch_size=2, checkpoint_layers=0.5, recompute_elementwise=True,
                                              offload_kept_layers=0), "cuda", seq_len=512, log=False)
    assert report.plan is None  # nothing left on auto
    assert (report.micro_batch_size, report.checkpointed_layers, report.recompute_layers) == (2, 1, 2)
    report = apply_fast_path(_model(), _train(micro_batch_size=None), "cuda", seq_len=512, log=False)
    assert report.plan["micro_batch_size"] == 4 and report.micro_batch_size is None


def test_plans_that_replay_the_stack_count_its_copy_of_the_adapter_gradients():
    from tunewise.models.estimate import GIB, GRAPH_GRAD_BYTES, trainable_params
    from tunewise.train.fast.auto_plan import SPLIT_EXTRA_GIB

    kw = dict(batch_size=4, seq_len=1024, gradient_checkpointing=True, micro_batch_size=2, checkpoint_layers=0.0,
              recompute_elementwise=True, offload_layers=0)
    eager = choose_plan(LLAMA3_8B, **kw).peak_gib
    copy_gib = trainable_params(LLAMA3_8B, "lora", 16) * GRAPH_GRAD_BYTES / GIB
    # a split plan replayed from graphs peaks without the eager split's extra (measured), with the graph's copy
    graphed = choose_plan(LLAMA3_8B, **kw, graphs_max_tokens=2048).peak_gib
    assert graphed == pytest.approx(eager - SPLIT_EXTRA_GIB + copy_gib)
    assert choose_plan(LLAMA3_8B, **kw, graphs_max_tokens=1024).peak_gib == eager  # 2,048-token micro-steps
    whole = {**kw, "seq_len": 512, "micro_batch_size": 4}  # one micro-step of 2,048 tokens: no split
    assert choose_plan(LLAMA3_8B, **whole, graphs_max_tokens=2048).peak_gib == pytest.approx(
        choose_plan(LLAMA3_8B, **whole).peak_gib + copy_gib)
    off = {**kw, "offload_layers": 4}  # offloaded layers keep the graphs off
    assert choose_plan(LLAMA3_8B, **off, graphs_max_tokens=2048).peak_gib == choose_plan(LLAMA3_8B, **off).peak_gib


MISTRAL_7B = ModelShape.from_config({  # Mistral-7B-v0.3: Llama-3-8B's layers, a quarter of its vocabulary
    "model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32768})


def test_graphs_make_one_example_micro_steps_the_plan_where_memory_is_short():
    """Measured on the H200 (bench/results/train_speed.md, 2026-11-30 fourth): Mistral-7B 2048×4 at one example per
    micro-step replayed from graphs ran 1.77x plain with 10 of 32 layers checkpointed and 1.90x with 5, against the
    offloading plan's 1.71x; Llama-3-8B's two-example plan without graphs (2.09x) beat one example with graphs
    (1.89x). The plan follows both; without graphs a one-example plan stays host-bound and is not taken."""
    kw = dict(batch_size=4, seq_len=2048, gradient_checkpointing=True, device="H200", offload_layers=None)
    mistral = choose_plan(MISTRAL_7B, **kw, graphs_max_tokens=2048)
    assert (mistral.micro_batch_size, mistral.offloaded_layers) == (1, 0) and mistral.fits
    assert 5 <= mistral.checkpointed_layers < 10  # fewer recomputed than the measured 1.77x run's 10
    eager = choose_plan(MISTRAL_7B, **kw)
    assert eager.micro_batch_size == 4 and eager.offloaded_layers > 0 and eager.tokens_per_s < mistral.tokens_per_s
    llama = choose_plan(LLAMA3_8B, **kw, graphs_max_tokens=2048)
    assert (llama.micro_batch_size, llama.checkpointed_layers) == (2, 0)
    one = choose_plan(LLAMA3_8B, **{**kw, "offload_layers": 0}, micro_batch_size=1, graphs_max_tokens=2048)
    assert one.tokens_per_s < llama.tokens_per_s


@pytest.mark.parametrize(("fast", "dropout", "most"), [({}, 0.0, 2048), ({"cuda_graphs": True}, 0.0, float("inf")),
                                                       ({"cuda_graphs": False}, 0.0, 0), ({}, 0.05, 0)])
def test_apply_fast_path_plans_with_the_graphs_it_will_replay(monkeypatch, fast, dropout, most):
    import tunewise.train.fast as fast_path
    from tunewise.config import LoraConfig, TrainConfig
    from tunewise.testing import build_model
    from tunewise.train.lora import apply_lora

    seen = {}

    def plan_for(*args, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(fast_path, "plan_for", plan_for)
    model = apply_lora(build_model(97), LoraConfig(r=4, alpha=8, dropout=dropout))
    train = TrainConfig(batch_size=4, gradient_checkpointing=True, lora={"dropout": dropout},
                        fast={"enabled": True, "memory_budget_gib": 1.0, **fast})
    with pytest.raises(RuntimeError, match="stop here"):
        fast_path.apply_fast_path(model, train, "cuda", seq_len=2048, log=False, widths=(512, 1024))
    assert seen["graphs_max_tokens"] == most
    assert seen["graph_widths"] == ((512, 1024) if most else ())


def test_replayed_plans_count_the_graphs_of_the_data_s_other_widths():
    """Each other batch width gets a graph that keeps its input, output and input gradient: a replayed plan counts
    them (GRAPH_SHAPE_BYTES per token and hidden unit), an eager one does not; with them Mistral-7B's plan recomputes
    more layers and still fits under plain."""
    kw = dict(batch_size=4, seq_len=2048, gradient_checkpointing=True, device="H200", micro_batch_size=1,
              checkpoint_layers=0.25, recompute_elementwise=True, offload_layers=0)
    widths = (384, 512, 768, 1024, 1536)
    one, more = (choose_plan(MISTRAL_7B, **kw, graphs_max_tokens=2048, graph_widths=w) for w in ((), widths))
    assert more.peak_gib - one.peak_gib == pytest.approx(sum(widths) * 6 * MISTRAL_7B.hidden / 2**30)
    eager = [choose_plan(MISTRAL_7B, **kw, graph_widths=w) for w in ((), widths)]
    assert eager[0].peak_gib == eager[1].peak_gib
    free = dict(batch_size=4, seq_len=2048, gradient_checkpointing=True, device="H200", offload_layers=None,
                graphs_max_tokens=2048)
    plain, wide = (choose_plan(MISTRAL_7B, **free, graph_widths=w) for w in ((), widths))
    assert wide.fits and wide.peak_gib <= wide.plain_peak_gib
    assert wide.checkpointed_layers > plain.checkpointed_layers


def test_other_graph_widths_are_the_bucket_widths_the_lengths_fall_in():
    from tunewise.config import FastConfig
    from tunewise.train.fast import other_graph_widths

    lengths = [70, 100, 120, 700, 2048]
    assert other_graph_widths(FastConfig(), lengths) == (96, 128, 768)
    assert other_graph_widths(FastConfig(), [2048] * 5) == ()  # fixed-width batches: one graph
    assert other_graph_widths(FastConfig(), None) == ()
    # without buckets: the lengths rounded to the pad multiple, the largest MAX_GRAPHS - 1
    off = FastConfig(bucket_padding=False)
    assert other_graph_widths(off, lengths, 64) == (128, 704)
    assert len(other_graph_widths(off, list(range(1, 2049)), 1)) == 11
