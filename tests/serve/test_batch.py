import threading
import time

import pytest

from tests.fixtures.runs import fake_run
from tunewise.config import RegistryConfig, TaskConfig
from tunewise.registry import Registry
from tunewise.serve.batch import Batcher, Job
from tunewise.serve.engine import ModelPool

TASK = TaskConfig(instruction="Classify the text.")
LABELS = ["positive", "negative"]
TEXTS = ["the bank profit", "i love this movie", "the match was very good and the team won the game",
         "hello", "election minister vote party", "shares market ! ?", "it was awful", "phone computer software",
         "film music star award and the sad movie", "refund payment card"]


@pytest.fixture
def served(tmp_path, tiny_model_dir, tiny_adapters):
    reg = Registry(RegistryConfig(workspace=tmp_path / "ws"))
    recs = [reg.register_run(fake_run(tmp_path, n, [True] * 40, adapter=tiny_adapters[n],
                                      base_path=str(tiny_model_dir))) for n in ("clf", "other")]
    return recs


def concurrently(pool: ModelPool, calls: list[tuple]) -> list:
    """Run pool.complete for every call at once, with the worker held back (on the model lock) until all are
    queued, so they are batched, not merely allowed to be: at most two generate calls for all of them."""
    out = [None] * len(calls)
    before = len(pool.batcher.batch_sizes)

    def one(i, args):
        out[i] = pool.complete(*args)

    with pool.lock:  # the worker takes this lock for each batch
        threads = [threading.Thread(target=one, args=(i, c)) for i, c in enumerate(calls)]
        for t in threads:
            t.start()
        deadline = time.time() + 30
        while len(pool.batcher.queue) + len(pool.batcher.running) < len(calls) and time.time() < deadline:
            time.sleep(0.01)
    for t in threads:
        t.join(timeout=60)
    sizes = pool.batcher.batch_sizes[before:]
    assert len(sizes) <= 2 and sum(sizes) == len(calls), sizes
    return out


def test_concurrent_greedy_equals_sequential(served):
    pool = ModelPool(max_batch_size=16)
    s = pool.prepare(served[0], TASK, LABELS)
    calls = [(s, [{"role": "user", "content": t}], 6) for t in TEXTS]
    sequential = [pool.complete(*c) for c in calls]
    assert pool.batcher.batch_sizes == [1] * len(TEXTS)
    assert concurrently(pool, calls) == sequential


def test_mixed_max_tokens_are_each_trimmed(served, tiny_tokenizer):
    pool = ModelPool()
    s = pool.prepare(served[0], TASK, LABELS)
    limits = [1, 2, 5, 8, 3]
    calls = [(s, [{"role": "user", "content": TEXTS[i]}], n) for i, n in enumerate(limits)]
    batched = concurrently(pool, calls)
    for c, got, limit in zip(calls, batched, limits):
        assert got == pool.complete(*c)  # alone, with its own limit
        assert 1 <= got.completion_tokens <= limit
        assert got.finish_reason == ("length" if got.completion_tokens == limit else "stop")
    long_alone = pool.complete(s, calls[3][1], 8)
    assert long_alone.text.startswith(pool.complete(s, calls[3][1], 2).text)  # greedy is prefix-consistent


def test_one_batch_mixes_adapters_row_by_row(served):
    pool = ModelPool(max_adapters=4)
    a, b = (pool.prepare(r, TASK, LABELS) for r in served)
    calls = [(s, [{"role": "user", "content": t}], 6) for t in TEXTS[:4] for s in (a, b)]
    sequential = [pool.complete(*c) for c in calls]
    assert sequential[0] != sequential[1]  # the adapters answer differently: routing is visible
    assert concurrently(pool, calls) == sequential


def test_an_adapter_evicted_while_queued_is_loaded_again(served):
    pool = ModelPool(max_adapters=1)
    a = pool.prepare(served[0], TASK, LABELS)
    want = pool.complete(a, [{"role": "user", "content": "hello"}], 4)
    pool.prepare(served[1], TASK, LABELS)  # evicts a's adapter
    assert pool.loaded() == ["model-2"]
    assert pool.complete(a, [{"role": "user", "content": "hello"}], 4) == want


def test_batches_group_sampling_settings_and_keep_the_oldest_first():
    seen: list[list[tuple]] = []
    gate = threading.Event()

    def run(batch):
        gate.wait(10)
        seen.append([(j.temperature, j.seed) for j in batch])
        return [j.ids for j in batch]

    batcher = Batcher(run, max_batch_size=3)
    jobs = [Job("m", "a", [i], 4, temperature=t, seed=s)
            for i, (t, s) in enumerate([(0, None), (0.7, None), (0, None), (0.7, 5), (0.7, 5), (0, None),
                                        (0, None), (0.7, None)])]
    threads = [threading.Thread(target=batcher.submit, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
        time.sleep(0.02)  # queued in order
    gate.set()
    for t in threads:
        t.join(timeout=10)
    assert [j.result.result() for j in jobs] == [[i] for i in range(8)]
    # the first job runs alone (the worker took it before the others came); then oldest-first groups of <= 3
    assert seen == [[(0, None)], [(0.7, None), (0.7, None)], [(0, None), (0, None), (0, None)], [(0.7, 5)],
                    [(0.7, 5)]]


def test_a_failing_batch_fails_its_requests_and_the_worker_goes_on():
    calls = []

    def run(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return ["ok" for _ in batch]

    batcher = Batcher(run, max_batch_size=4)
    with pytest.raises(RuntimeError, match="out of memory"):
        batcher.submit(Job("m", "a", [1], 1))
    assert batcher.submit(Job("m", "a", [1], 1)) == "ok"
