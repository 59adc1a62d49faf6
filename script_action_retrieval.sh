#!/usr/bin/env bash
# The released kNN-retrieval entry point, kept so that its command lines work: kNN retrieval with the
# released settings (scripts/knn.sh: k = 1, cosine) on ./checkpoints/<name>/checkpoint_0450.pth.tar,
# into ./checkpoints/<name>/knn_<dataset>_<protocol>/.
#
#   ./script_action_retrieval.sh <name> [dataset protocol] [extra action_retrieval.py flags...]
#   ./script_action_retrieval.sh ntu60_xsub ntu60 cross_subject       # the released script's form
#   ./script_action_retrieval.sh ntu120_xsub                          # the released README's form
#
# name: a folder under ./checkpoints. The released ones (ntu60_xsub, ntu60_xview, ntu120_xsub,
# ntu120_xset) imply their dataset and protocol; another name needs both. One process on one GPU
# (CUDA_VISIBLE_DEVICES chooses it, --device cpu for none). Last line: "RESULT knn top1=... ...".
set -euo pipefail
source "$(dirname "$0")/scripts/released_runs.sh"   # released_arguments: $name $dataset $protocol, extra
released_arguments "" "$@"
exec bash "$(dirname "$0")/scripts/knn.sh" "checkpoints/$name" "$dataset" "$protocol" "${extra[@]}"
