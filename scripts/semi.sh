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
#   bash scripts/semi.sh checkpoints/custom_my_dataset custom data/my_dataset 0.1   # your own data's folder
#
# Starts from <checkpoint-folder>/checkpoint_0450.pth.tar (--pretrained picks another) and writes to
# <checkpoint-folder>/semi<fraction>_<dataset>_<protocol>/ (--checkpoint-path overrides). Relative
# paths are taken from the repository root. One process on one GPU, no GPU count (use
# CUDA_VISIBLE_DEVICES, or --device cpu). Last line: "RESULT semi best_top1=... label_fraction=...".
#
# A second run into the same folder is refused, so that two runs' results never mix: add --overwrite
# to replace the first one's.
set -euo pipefail
source "$(dirname "$0")/evaluation_args.sh"   # usage, cd to the root, $folder $dataset $protocol, shift 3
fraction=0.01
if [ $# -ge 1 ] && [[ $1 != -* ]]; then  # the optional 4th argument
  fraction=$1
  shift
fi

ours=(--finetune --label-fraction "$fraction" --lr 0.01 --batch-size 128 --epochs 100 --schedule 80 90 --wd 1e-4
      "${evaluated[@]}"
      --checkpoint-path "$folder/semi${fraction}_${dataset}_${protocol}")
exec python action_recognition.py "${ours[@]}" "$@"
