#!/usr/bin/env bash
# kNN retrieval with the released settings: y_u of the training and validation sets, L2-normalised,
# 1 nearest neighbour by cosine similarity, top-1 accuracy.
#
#   bash scripts/knn.sh <checkpoint-folder> <dataset> <protocol> [extra action_retrieval.py flags...]
#   bash scripts/knn.sh checkpoints/ntu60_cross_subject ntu60 cross_subject
#   bash scripts/knn.sh checkpoints/ntu60_cross_subject ntu60 cross_subject --knn-neighbours 5
#   bash scripts/knn.sh checkpoints/ntu120_cross_subject ntu120 cross_subject --modalities bone
#   bash scripts/knn.sh checkpoints/custom_my_dataset custom data/my_dataset   # your own data's folder
#
# Evaluates <checkpoint-folder>/checkpoint_0450.pth.tar (ours or released; --pretrained picks another)
# into <checkpoint-folder>/knn_<dataset>_<protocol>/ (--checkpoint-path overrides). Relative paths are
# taken from the repository root. One process on one GPU, no GPU count (use CUDA_VISIBLE_DEVICES, or
# --device cpu). Last line: "RESULT knn top1=... k=... ...".
#
# A second run into the same folder is refused, so that two runs' results never mix: add --overwrite
# to replace the first one's.
set -euo pipefail
source "$(dirname "$0")/evaluation_args.sh"   # usage, cd to the root, $folder $dataset $protocol, shift 3

released=(--knn-neighbours 1 --batch-size 512
          "${evaluated[@]}"
          --checkpoint-path "$folder/knn_${dataset}_${protocol}")
exec python action_retrieval.py "${released[@]}" "$@"
