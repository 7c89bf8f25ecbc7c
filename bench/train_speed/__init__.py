"""Training speed and memory, plain Hugging Face + PEFT beside tunewise's fast path.

  python -m bench.train_speed                  # the table (__main__.py; rows, measure, lib, models, trace)
  python -m bench.train_speed.host_overhead    # host time against GPU time per decoder layer and piece
  python -m bench.train_speed.host_prices      # host time per call of the ops the fast path launches
"""
