#!/usr/bin/env bash
# The GPU check behind the GPU rows of docs/BENCHMARKS.md (run on a lent H100 through the device tool):
# CUDA/bf16 paths of the predictor tests, then the batching benchmark at small and paper size.
# Expects transformers/peft wheels in .whl (the GPU image has older ones).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'cuda', torch.cuda.is_available())"
python3 -m pytest -q -p no:cacheprovider tests/kptllm/test_predictor.py tests/kptllm/test_generation.py 2>&1 | tee "$OUT/pytest.log" | tail -15
python3 -m benchmarks.bench_batching --size small --device cuda --dtype bfloat16 --repeats 3 2>&1 | tee "$OUT/bench_small.log" | grep -v Warn
python3 -m benchmarks.bench_batching --size paper --device cuda --dtype bfloat16 --repeats 3 2>&1 | tee "$OUT/bench_paper.log" | grep -v Warn
