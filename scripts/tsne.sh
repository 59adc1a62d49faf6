#!/usr/bin/env bash
# t-SNE plot of the encoder's y_u features for 10 randomly chosen classes (seeded) of the
# validation split, written as tsne.png.
#
#   bash scripts/tsne.sh <checkpoint-folder> <dataset> <protocol> [extra tsne.py flags...]
#   bash scripts/tsne.sh checkpoints/ntu60_cross_subject ntu60 cross_subject
#   bash scripts/tsne.sh checkpoints/ntu60_cross_subject ntu60 cross_subject --num-classes 5 --seed 1
#   bash scripts/tsne.sh checkpoints/ntu60_cross_subject ntu60 cross_subject --max-per-class 100
#
# Embeds with <checkpoint-folder>/checkpoint_0450.pth.tar (--pretrained picks another) into
# <checkpoint-folder>/tsne_<dataset>_<protocol>/tsne.png (--checkpoint-path overrides). Relative paths
# are taken from the repository root. One process on one GPU, no GPU count (use CUDA_VISIBLE_DEVICES,
# or --device cpu). For random weights, run tsne.py without --pretrained.
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,/^set /p' "$0" | sed -n 's/^# \{0,1\}//p'
  exit 2
fi
cd "$(dirname "$0")/.."
folder=$1 dataset=$2 protocol=$3
shift 3

settings=(--num-classes 10 --split val
          --pretrained "$folder/checkpoint_0450.pth.tar" --finetune-dataset "$dataset" --protocol "$protocol"
          --checkpoint-path "$folder/tsne_${dataset}_${protocol}")
exec python tsne.py "${settings[@]}" "$@"
