#!/usr/bin/env bash
# t-SNE plot of the encoder's y_u features for 10 randomly chosen classes (seeded) of the
# validation split, written as tsne.png.
#
#   bash scripts/tsne.sh <checkpoint-folder> <dataset> <protocol> [extra tsne.py flags...]
#   bash scripts/tsne.sh checkpoints/ntu60_cross_subject ntu60 cross_subject
#   bash scripts/tsne.sh checkpoints/ntu60_cross_subject ntu60 cross_subject --num-classes 5 --seed 1
#   bash scripts/tsne.sh checkpoints/ntu60_cross_subject ntu60 cross_subject --max-per-class 100
#   bash scripts/tsne.sh checkpoints/custom_my_dataset custom data/my_dataset   # your own data's folder
#
# Embeds with <checkpoint-folder>/checkpoint_0450.pth.tar (--pretrained picks another) into
# <checkpoint-folder>/tsne_<dataset>_<protocol>/tsne.png (--checkpoint-path overrides). Relative paths
# are taken from the repository root. One process on one GPU, no GPU count (use CUDA_VISIBLE_DEVICES,
# or --device cpu). For random weights, run tsne.py without --pretrained.
#
# A second run into the same folder is refused, so that two runs' results never mix: add --overwrite
# to replace the first one's.
set -euo pipefail
source "$(dirname "$0")/evaluation_args.sh"   # usage, cd to the root, $folder $dataset $protocol, shift 3

settings=(--num-classes 10 --split val
          "${evaluated[@]}"
          --checkpoint-path "$folder/tsne_${dataset}_${protocol}")
exec python tsne.py "${settings[@]}" "$@"
