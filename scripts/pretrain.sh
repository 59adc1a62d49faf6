#!/usr/bin/env bash
# UmURL pretraining with the released settings (Adam lr 5e-4, wd 1e-5, 451 epochs, lr x0.1 from
# epoch 351, fp16 autocast on CUDA, synchronised BatchNorm, the protocol's global batch).
#
#   bash scripts/pretrain.sh <dataset> <protocol> [gpus] [extra pretrain.py flags...]
#   bash scripts/pretrain.sh ntu60 cross_subject 4
#   bash scripts/pretrain.sh ntu120 cross_setup 8 --data-root /datasets/skeleton
#   bash scripts/pretrain.sh pku2 cross_subject 0          # 0 GPUs: one process on the CPU
#   bash scripts/pretrain.sh custom data/my_dataset 1      # your own data: the prepared folder
#
# datasets/protocols: ntu60 cross_subject|cross_view, ntu120 cross_subject|cross_setup,
# pku2 cross_subject, msr cross_subject; custom <folder written by data_gen/custom_gendata.py>
# (its metadata.json gives the skeleton, classes and protocol; README "Your own data"). The global
# batch is the released one of the protocol (512 for ntu60 cross_subject, 1024 for ntu60 cross_view
# and both ntu120, 512 elsewhere) whatever the GPU count.
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

data=(--pre-dataset "$dataset" --protocol "$protocol")
if [ "$dataset" = custom ]; then  # the second argument is the prepared folder; its name names the run
  data=(--pre-dataset custom --data-root "$protocol")
  protocol=$(basename "$protocol")
fi
released=(--lr 5e-4 --epochs 451 --schedule 351 --wd 1e-5 "${data[@]}"
          --checkpoint-path "./checkpoints/${dataset}_${protocol}" --workers 8 --save-freq 50)

if [ "$gpus" -eq 0 ]; then
  exec python pretrain.py "${released[@]}" --device cpu "$@"
fi
exec torchrun --standalone --nproc_per_node="$gpus" pretrain.py "${released[@]}" --device cuda "$@"
