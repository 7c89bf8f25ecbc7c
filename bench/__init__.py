"""Speed and memory benchmarks that print tables, plain baseline beside tunewise in the same run; never part
of `make test`. Run each from the repository root as a module, e.g. `python -m bench.data_throughput --help`:
data_throughput, estimate_accuracy, eval_speed, multi_gpu, serve_load, train_speed (and its diagnostics
train_speed.host_overhead, train_speed.host_prices). Measured results and their commands live in results/."""

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
