# Sourced (not run) by the evaluation scripts: linear, knn, semi, finetune, transfer and tsne.sh.
# With fewer than three arguments it prints the calling script's header comment and exits 2.
# Otherwise it moves to the repository root, takes <checkpoint-folder> <dataset> <protocol> off the
# calling script's arguments into $folder, $dataset and $protocol, and sets `evaluated`: the flags
# every evaluation passes (the folder's last checkpoint, the dataset and protocol). For dataset
# custom the third argument is the prepared folder (data_gen/custom_gendata.py --out-folder), whose
# metadata.json names the protocol: it becomes --data-root, and $protocol its folder name, for the
# run folder's name ($target keeps the argument as given). Paths given relative to the repository
# root stay valid after the cd.
if [ $# -lt 3 ]; then
  sed -n '2,/^set /p' "$0" | sed -n 's/^# \{0,1\}//p'
  exit 2
fi
cd "$(dirname "$0")/.."
folder=$1 dataset=$2 protocol=$3 target=$3  # target: the third argument as given
shift 3
data=(--finetune-dataset "$dataset" --protocol "$protocol")
if [ "$dataset" = custom ]; then  # the third argument is the prepared folder; its name names the run
  data=(--finetune-dataset custom --data-root "$protocol")
  protocol=$(basename "$protocol")
fi
evaluated=(--pretrained "$folder/checkpoint_0450.pth.tar" "${data[@]}")
