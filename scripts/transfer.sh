#!/usr/bin/env bash
# Transfer: a model pretrained on one dataset, evaluated by the released linear probe on another
# (SGD lr 0.03, batch 512, 150 epochs, lr x0.1 at 120 and 140). The two datasets must share the
# skeleton layout (NTU RGB+D and PKU-MMD II both use Kinect v2's 25 joints, 2 persons); a checkpoint
# that does not fit is refused, naming every misfit key.
#
#   bash scripts/transfer.sh <source-checkpoint-folder> <target-dataset> <protocol> [extra flags...]
#   bash scripts/transfer.sh checkpoints/ntu60_cross_subject pku2 cross_subject
#   bash scripts/transfer.sh checkpoints/ntu120_cross_subject pku2 cross_subject --modalities motion
#   bash scripts/transfer.sh checkpoints/ntu60_cross_subject custom data/my_ntu25_dataset   # same layout
#
# Evaluates <source-checkpoint-folder>/checkpoint_0450.pth.tar (--pretrained picks another) into
# <source-checkpoint-folder>/transfer_<target-dataset>_<protocol>/ (--checkpoint-path overrides).
# Relative paths are taken from the repository root. One process on one GPU, no GPU count (use
# CUDA_VISIBLE_DEVICES, or --device cpu). Last line: "RESULT linear best_top1=... dataset=<target> ...".
#
# A second run into the same folder is refused, so that two runs' results never mix: add --overwrite
# to replace the first one's.
set -euo pipefail
source "$(dirname "$0")/evaluation_args.sh"   # usage, cd to the root, $folder $dataset $protocol, shift 3

# The released linear probe (scripts/linear.sh, its one home), into a transfer_ run folder.
exec bash scripts/linear.sh "$folder" "$dataset" "$target" \
  --checkpoint-path "$folder/transfer_${dataset}_${protocol}" "$@"
