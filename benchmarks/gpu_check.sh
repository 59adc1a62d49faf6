#!/usr/bin/env bash
# The GPU figures of the README in one command, sized for under 10 minutes on one GPU: the tests
# that need CUDA (the golden tests in fp32 and with TF32, views drawn on the GPU), then
# benchmarks/gpu_check.py: one fp16 training step at the default size for global batches 128 and
# 512 (samples/s, step time, peak memory, MFU against the device's dense fp16 peak), the data
# pipeline with N CPU workers and with --augment-on-device against the step's consumption, two
# processes (NCCL) against one when two GPUs exist, and the projected wall time of the released
# NTU-60 x-sub pretraining. Everything it prints is markdown that goes into the README as it is,
# device name included.
#
#   bash benchmarks/gpu_check.sh                          # CUDA_VISIBLE_DEVICES picks the GPU(s)
#   bash benchmarks/gpu_check.sh --json gpu_check.json    # also every figure as JSON
#
# Without a CUDA device it says so and exits 0, having measured nothing. It exits 1 when one of those
# tests fails on CUDA, after printing the measurements.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing measured;" \
       "the README's GPU figures stay \"not measured\"."
  exit 0
fi

device=$(python -c 'import torch; print(torch.cuda.get_device_name(0))')
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "# GPU check: $device, $(date -u '+%Y-%m-%d %H:%M UTC'), git $revision"
echo
echo "## Tests that need CUDA: golden (tests/test_golden.py, fp32 and TF32), views drawn on the GPU"
echo
golden=0
python -m pytest -q -rs -p no:cacheprovider tests/test_golden.py tests/test_batch_augment.py -k "cuda or gpu" 2>&1 \
  | tail -n 15 || golden=$?
python benchmarks/gpu_check.py "$@"
if [ "$golden" -ne 0 ]; then
  echo
  echo "gpu_check: tests FAILED on CUDA (pytest exit code $golden): see above."
  exit 1
fi
