#!/usr/bin/env bash
# Semi-supervised fine-tuning on a fraction of the training labels (the paper: 1% and 10%), drawn
# per class with --seed (at least one sample of every class; their names go to
# labelled_samples.json in the run folder). Settings are OURS, as in finetune.sh: SGD lr 0.01
# momentum 0.9, weight decay 1e-4, batch 128, 100 epochs, lr x0.1 at 80 and 90.
#
#   bash scripts/semi.sh <checkpoint-folder> <dataset> <protocol> [fraction] [extra flags...]
#   bash scripts/semi.sh checkpoints/ntu60_cross_subject ntu60 cross_subject          # 1% (0.01)
#   bash scripts/semi.sh checkpoints/ntu60_cross_subject ntu60 cross_subject 0.1
#   bash scripts/semi.sh checkpoints/ntu60_cross_subject ntu60 cross_subject 0.01 --seed 1
#
# Starts from <checkpoint-folder>/checkpoint_0450.pth.tar (--pretrained picks another) and writes to
# <checkpoint-folder>/semi<fraction>_<dataset>_<protocol>/ (--checkpoint-path overrides). Relative
# paths are taken from the repository root. One process on one GPU, no GPU count (use
# CUDA_VISIBLE_DEVICES, or --device cpu). Last line: "RESULT semi top1=... label_fraction=...".
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,/^set /p' "$0" | sed -n 's/^# \{0,1\}//p'
  exit 2
fi
cd "$(dirname "$0")/.."
folder=$1 dataset=$2 protocol=$3 fraction=0.01
if [ $# -ge 4 ] && [[ $4 != -* ]]; then
  fraction=$4
  shift 4
else
  shift 3
fi

ours=(--finetune --label-fraction "$fraction" --lr 0.01 --batch-size 128 --epochs 100 --schedule 80 90 --wd 1e-4
      --pretrained "$folder/checkpoint_0450.pth.tar" --finetune-dataset "$dataset" --protocol "$protocol"
      --checkpoint-path "$folder/semi${fraction}_${dataset}_${protocol}")
exec python action_recognition.py "${ours[@]}" "$@"
