#!/usr/bin/env bash
# The released pretraining entry point, kept so that its command lines work: pretrains with the
# released settings (scripts/pretrain.sh) into ./checkpoints/<name>/; what it prints is appended to
# ./checkpoints/<name>/train.log, as released (pretrain.py keeps that file itself).
#
#   ./script_pretrain.sh [name] [dataset protocol] [extra pretrain.py flags...]
#   ./script_pretrain.sh                                # ntu60_xsub, the run of the released script
#   ./script_pretrain.sh ntu120_xsub                    # the released README's example
#   ./script_pretrain.sh my_run ntu60 cross_view --epochs 100
#   GPUS=8 ./script_pretrain.sh ntu120_xset
#
# name: a folder under ./checkpoints. The released ones (ntu60_xsub, ntu60_xview, ntu120_xsub,
# ntu120_xset) imply their dataset and protocol; another name needs both. GPUS: processes, one per
# GPU (default 4, as released; 0 = one process on the CPU); choose GPUs with CUDA_VISIBLE_DEVICES.
# Running it again resumes the run. Then evaluate it with ./script_action_recognition.sh <name> and
# ./script_action_retrieval.sh <name>.
set -euo pipefail
source "$(dirname "$0")/scripts/released_runs.sh"   # released_arguments: $name $dataset $protocol, extra
released_arguments ntu60_xsub "$@"
cd "$(dirname "$0")"

exec bash scripts/pretrain.sh "$dataset" "$protocol" "${GPUS:-4}" --checkpoint-path "./checkpoints/$name" \
  "${extra[@]}"
