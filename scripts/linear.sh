#!/usr/bin/env bash
# Linear evaluation with the released settings: frozen encoder in eval mode, Linear(2H, classes) on
# y_u, SGD lr 0.03 momentum 0.9 no weight decay, batch 512, 150 epochs, lr x0.1 at 120 and 140,
# evaluated every 5 epochs, best and final top-1/top-5 reported.
#
#   bash scripts/linear.sh <checkpoint-folder> <dataset> <protocol> [extra action_recognition.py flags...]
#   bash scripts/linear.sh checkpoints/ntu60_cross_subject ntu60 cross_subject
#   bash scripts/linear.sh checkpoints/ntu60_cross_subject ntu60 cross_subject --modalities joint
#   bash scripts/linear.sh checkpoints/ntu120_cross_setup ntu120 cross_setup --pretrained other.pth.tar
#   bash scripts/linear.sh checkpoints/custom_my_dataset custom data/my_dataset   # your own data's folder
#
# Evaluates <checkpoint-folder>/checkpoint_0450.pth.tar (ours or released; --pretrained picks another)
# into <checkpoint-folder>/linear_<dataset>_<protocol>/ (--checkpoint-path overrides). Relative paths
# are taken from the repository root, as in pretrain.sh. One process on one GPU, no GPU count: choose
# the GPU with CUDA_VISIBLE_DEVICES, or pass --device cpu. Last line: "RESULT linear best_top1=... ...".
#
# A second run into the same folder is refused, so that two runs' results never mix: add --overwrite
# to replace the first one's.
set -euo pipefail
source "$(dirname "$0")/evaluation_args.sh"   # usage, cd to the root, $folder $dataset $protocol, shift 3

released=(--lr 0.03 --batch-size 512 --epochs 150 --schedule 120 140 --wd 0
          "${evaluated[@]}"
          --checkpoint-path "$folder/linear_${dataset}_${protocol}")
exec python action_recognition.py "${released[@]}" "$@"
