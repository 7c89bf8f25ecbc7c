#!/usr/bin/env bash
# The wheels that bench/train_speed's hf-liger, unsloth and QLoRA sides need on the H200 machine (Python 3.12,
# x86-64, torch 2.11, transformers 5.17, peft 0.21, accelerate 1.15, triton 3.6) and that its image lacks,
# downloaded into DEST (default .whl-bench/ at the repository root; keep it git-ignored, e.g. `/.whl-bench/` in
# .git/info/exclude) and split into folders of at most 60 MiB each, DEST/a, DEST/b, ...: one `run` call
# carries 64 MiB at most. Carry one group a call and copy it to /tmp/whl there; h200_job.sh installs
# /tmp/whl/*.whl into /tmp/site.
#
# Why these and no more (read off the wheels' METADATA and the modules `import unsloth` runs on a GPU):
# - unsloth / unsloth_zoo 2026.10.9: the newest release; both declare transformers <= 5.17.0 (5.17 is on the
#   machine), torch < 2.15, peft >= 0.18, trl <= 1.15.0, datasets < 5. Their import needs, beyond the
#   image: trl, datasets (unsloth_zoo.dataset_utils imports it at module level) and bitsandbytes.
#   xformers, flash-attn, torchao, cut_cross_entropy, vllm, tyro, msgspec, hf_transfer and diffusers are
#   only imported under try/except or find_spec checks, or by the CLI: without xformers (PyPI's is built for
#   another torch) Unsloth uses PyTorch's SDPA.
# - trl 1.15.0: the newest Unsloth accepts. datasets 4.8.5 (< 5 for Unsloth, >= 4.7 for trl) with dill and
#   multiprocess (pyarrow, xxhash, fsspec, pandas, httpx are in the image).
# - liger-kernel 0.8.5 (hf-liger side; tunewise's fast path uses it too when installed).
# - bitsandbytes 0.50.2 (QLoRA rows on every side; ships libbitsandbytes_cuda130.so for torch's CUDA 13).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
DEST=${1:-.whl-bench}
WHEELS=(
  unsloth==2026.10.9
  unsloth_zoo==2026.10.9
  trl==1.15.0
  datasets==4.8.5
  dill==0.4.1
  multiprocess==0.70.19
  liger-kernel==0.8.5
  bitsandbytes==0.50.2
)
rm -rf "$DEST" && mkdir -p "$DEST/all"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$DEST/all" "${WHEELS[@]}"
# First-fit decreasing into 60 MiB folders a, b, ...
python3 - "$DEST" <<'EOF'
import shutil, string, sys
from pathlib import Path

dest, limit = Path(sys.argv[1]), 60 * 2**20
wheels = sorted((dest / "all").glob("*.whl"), key=lambda p: p.stat().st_size, reverse=True)
groups: list[list[Path]] = []
for w in wheels:
    size = w.stat().st_size
    if size > limit:
        sys.exit(f"{w.name} alone is over 60 MiB")
    for g in groups:
        if sum(p.stat().st_size for p in g) + size <= limit:
            g.append(w)
            break
    else:
        groups.append([w])
for letter, g in zip(string.ascii_lowercase, groups):
    (dest / letter).mkdir()
    for w in g:
        shutil.move(str(w), dest / letter / w.name)
    mib = sum((dest / letter / w.name).stat().st_size for w in g) / 2**20
    print(f"{dest}/{letter}: {mib:.1f} MiB: " + " ".join(w.name for w in g))
(dest / "all").rmdir()
EOF
