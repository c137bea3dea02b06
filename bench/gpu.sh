#!/usr/bin/env bash
# Issue 9's device check, on one CUDA GPU (about 5 minutes on an H200; nothing is downloaded):
#   1. the Triton kernel, CUDA-graph and memory-sizing tests, run natively on the GPU (GPU-marked tests included);
#   2. bench/gpu_bench.py: parity and speed against transformers; prints one table, writes gpu.json.
#
#   bash bench/gpu.sh [OUT_DIR]        # default: $OUT if set, else ./gpu-results
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu-results}}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 -c 'import torch, triton, transformers; print("torch", torch.__version__, "triton", triton.__version__,
"transformers", transformers.__version__, torch.cuda.get_device_name())' | tee "$out/env.txt"
status=0
timeout 240 python3 -m pytest -q -p no:cacheprovider --timeout=200 -m "not slow" \
    tests/server/test_triton_attention.py tests/server/test_cuda_graphs.py tests/server/test_memory.py \
    2>&1 | tee "$out/tests.log" || status=1
timeout 420 python3 bench/gpu_bench.py --json "$out/gpu.json" 2>&1 | tee "$out/bench.log" || status=1
exit $status
