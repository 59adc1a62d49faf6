#!/usr/bin/env bash
# Full fine-tuning: encoder and Linear(2H, classes) trained together on all training labels, encoder
# in train mode, un-augmented downstream views. The paper's fine-tuning settings were not released;
# these are OURS: SGD lr 0.01 momentum 0.9, weight decay 1e-4, batch 128, 100 epochs, lr x0.1 at 80
# and 90, evaluated every 5 epochs.
#
#   bash scripts/finetune.sh <checkpoint-folder> <dataset> <protocol> [extra action_recognition.py flags...]
#   bash scripts/finetune.sh checkpoints/ntu60_cross_subject ntu60 cross_subject
#   bash scripts/finetune.sh checkpoints/ntu60_cross_view ntu60 cross_view --lr 0.005
#   bash scripts/finetune.sh checkpoints/custom_my_dataset custom data/my_dataset   # your own data's folder
#
# Starts from <checkpoint-folder>/checkpoint_0450.pth.tar (--pretrained picks another) and writes to
# <checkpoint-folder>/finetune_<dataset>_<protocol>/ (--checkpoint-path overrides). Relative paths are
# taken from the repository root. One process on one GPU, no GPU count (use CUDA_VISIBLE_DEVICES, or
# --device cpu). Last line: "RESULT finetune best_top1=... ...".
#
# A second run into the same folder is refused, so that two runs' results never mix: add --overwrite
# to replace the first one's.
set -euo pipefail
source "$(dirname "$0")/evaluation_args.sh"   # usage, cd to the root, $folder $dataset $protocol, shift 3

ours=(--finetune --lr 0.01 --batch-size 128 --epochs 100 --schedule 80 90 --wd 1e-4
      "${evaluated[@]}"
      --checkpoint-path "$folder/finetune_${dataset}_${protocol}")
exec python action_recognition.py "${ours[@]}" "$@"
