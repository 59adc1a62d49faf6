#!/usr/bin/env bash
# UmURL pretraining with the released settings (Adam lr 5e-4, wd 1e-5, 451 epochs, lr x0.1 from
# epoch 351, fp16 autocast on CUDA, synchronised BatchNorm, the protocol's global batch).
#
#   bash scripts/pretrain.sh <dataset> <protocol> [gpus] [extra pretrain.py flags...]
#   bash scripts/pretrain.sh ntu60 cross_subject 4
#   bash scripts/pretrain.sh ntu120 cross_setup 8 --data-root /datasets/skeleton
#   bash scripts/pretrain.sh pku2 cross_subject 0          # 0 GPUs: one process on the CPU
#
# datasets/protocols: ntu60 cross_subject|cross_view, ntu120 cross_subject|cross_setup,
# pku2 cross_subject. The global batch is the released one of the protocol (512 for ntu60
# cross_subject, 1024 for ntu60 cross_view and both ntu120) whatever the GPU count.
# Checkpoints go to ./checkpoints/<dataset>_<protocol>/ unless --checkpoint-path is given; running
# the same command again resumes from checkpoint_last.pth.tar. Several nodes: run pretrain.py under
# torchrun with --nnodes and --rdzv-* yourself (see README.md).
set -euo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"   # the comment block above; before the cd: $0 may be relative
  exit 2
fi
cd "$(dirname "$0")/.."
dataset=$1 protocol=$2 gpus=${3:-4}
shift $(( $# >= 3 ? 3 : 2 ))

released=(--lr 5e-4 --epochs 451 --schedule 351 --wd 1e-5
          --pre-dataset "$dataset" --protocol "$protocol"
          --checkpoint-path "./checkpoints/${dataset}_${protocol}" --workers 8 --save-freq 50)

if [ "$gpus" -eq 0 ]; then
  exec python pretrain.py "${released[@]}" --device cpu "$@"
fi
exec torchrun --standalone --nproc_per_node="$gpus" pretrain.py "${released[@]}" --device cuda "$@"
