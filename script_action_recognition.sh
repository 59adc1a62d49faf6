#!/usr/bin/env bash
# The released linear-evaluation entry point, kept so that its command lines work: the released linear
# probe (scripts/linear.sh) of ./checkpoints/<name>/checkpoint_0450.pth.tar, the last checkpoint of
# ./script_pretrain.sh <name> (or a released one put there), into
# ./checkpoints/<name>/linear_<dataset>_<protocol>/.
#
#   ./script_action_recognition.sh <name> [dataset protocol] [extra action_recognition.py flags...]
#   ./script_action_recognition.sh ntu60_xsub ntu60 cross_subject     # the released script's form
#   ./script_action_recognition.sh ntu120_xsub                        # the released README's form
#
# name: a folder under ./checkpoints. The released ones (ntu60_xsub, ntu60_xview, ntu120_xsub,
# ntu120_xset) imply their dataset and protocol; another name needs both. One process on one GPU
# (CUDA_VISIBLE_DEVICES chooses it, --device cpu for none). Last line: "RESULT linear top1=... ...".
set -euo pipefail
source "$(dirname "$0")/scripts/released_runs.sh"   # released_arguments: $name $dataset $protocol, extra
released_arguments "" "$@"
exec bash "$(dirname "$0")/scripts/linear.sh" "checkpoints/$name" "$dataset" "$protocol" "${extra[@]}"
