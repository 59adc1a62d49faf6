#!/usr/bin/env bash
# End to end on real data, MSR Action3D cross-subject (subjects 1 3 5 7 9 train, 2 4 6 8 10 test, the
# 557-sequence list): convert, pretrain without labels on the training split, then linear probe
# (released protocol) and kNN (k = 1) on the test split, for the pretrained and a random-weight
# encoder of the same sizes, on fused, joint, bone and motion input. About 15-25 minutes on 2 CPU cores.
#
#   bash scripts/real_data.sh [extra benchmarks/real_data.py flags...]
#   bash scripts/real_data.sh
#   bash scripts/real_data.sh --data-path /datasets/msr_action3d --out runs/msr_action3d --overwrite
#   bash scripts/real_data.sh --quick --out /tmp/msr_quick          # plumbing check in seconds
#   bash scripts/real_data.sh --help                                # every flag and its default
#
# The data folder (--data-path, see --help for its default) holds MSRAction3DSkeletonReal3D/ and
# files_used_in_cvpr12_paper.txt, as distributed with MSR Action3D. Results go to runs/msr_action3d/
# (--out): results.md, results.json, and every stage's run folder and log. Relative paths are taken
# from the repository root. A non-empty --out is refused unless --overwrite is given.
set -euo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,/^set /p' "$0" | sed -n 's/^# \{0,1\}//p'   # before the cd below: $0 may be a relative path
  echo
fi
cd "$(dirname "$0")/.."
exec python benchmarks/real_data.py "$@"
