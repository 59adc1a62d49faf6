#!/usr/bin/env bash
# The whole pipeline on generated data, on a CPU, in a few minutes: synthetic NTU-format raw files ->
# data_gen/ntu_gendata.py -> pretrain.py -> linear probe, kNN and t-SNE, for the pretrained encoder
# and for the same encoder with random weights. The same scripts and code paths as on NTU RGB+D,
# only smaller sizes.
#
#   bash scripts/quickstart.sh [output-folder]        (default: ./runs/quickstart)
#
# Installs the requirements first (pip). Set QUICKSTART_EPOCHS to pretrain longer (default 30) and
# QUICKSTART_SEED to change the seed of pretraining and evaluation (default 0; the data stay the same).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-runs/quickstart}
epochs=${QUICKSTART_EPOCHS:-30}
seed=${QUICKSTART_SEED:-0}
last=$(printf 'checkpoint_%04d.pth.tar' $((epochs - 1)))
raw=$out/raw data=$out/data run=$out/pretrain
# Small model: hidden 64 instead of 1024, projector 256 instead of 4096; one layer, one head as released.
# Given to pretraining only: its checkpoints record the sizes, and the evaluations read them from there.
# The random-weight baseline has no checkpoint, so it takes the same encoder sizes from here.
encoder=(--hidden-size 64)
model=("${encoder[@]}" --projector-dim 256)
run_options=(--device cpu --seed "$seed")
start=$(date +%s)
step() { printf '\n== %s (%ds)\n' "$1" $(( $(date +%s) - start )); }

step "installing requirements"
python -m pip install --quiet --disable-pip-version-check -r requirements.txt

step "writing synthetic NTU-format .skeleton files (10 actions x 40 samples)"
python data_gen/synthetic.py --out_folder "$raw" --num_classes 10 --samples_per_class 40 --seed 0

step "preparing them with the NTU preprocessing (data_gen/ntu_gendata.py)"
python data_gen/ntu_gendata.py --data_path "$raw" --out_folder "$data" --dataset demo --workers 2

step "pretraining UmURL without labels ($epochs epochs)"
rm -rf "$run"  # a fresh run each time (pretrain.py would otherwise resume a finished run)
bash scripts/pretrain.sh demo cross_subject 0 "${model[@]}" "${run_options[@]}" --data-root "$data" \
  --checkpoint-path "$run" --epochs "$epochs" --batch-size 32 --lr 1e-3 --schedule $((epochs * 5 / 6)) \
  --workers 2 --save-freq 10

results=$out/results.txt
: > "$results"
# Evaluations replace their own earlier results (--overwrite), so the quickstart can be run again.
evaluate() {  # evaluate <name> <checkpoint or "random">: linear probe (released settings) and kNN
  local name=$1 checkpoint=$2 weights=("${encoder[@]}")
  [ "$checkpoint" != random ] && weights=(--pretrained "$checkpoint")
  step "linear probe and kNN, $name encoder"
  python action_recognition.py --lr 0.03 --batch-size 512 --epochs 150 --schedule 120 140 --wd 0 \
    --finetune-dataset demo --protocol cross_subject --data-root "$data" "${run_options[@]}" --workers 2 \
    --checkpoint-path "$out/linear_$name" --overwrite "${weights[@]}" | tee "$out/linear_$name.log" | grep '^RESULT' \
    | sed "s/^RESULT/RESULT $name/" >> "$results"
  python action_retrieval.py --knn-neighbours 1 --finetune-dataset demo --protocol cross_subject \
    --data-root "$data" "${run_options[@]}" --workers 2 --checkpoint-path "$out/knn_$name" --overwrite "${weights[@]}" \
    | tee "$out/knn_$name.log" | grep '^RESULT' | sed "s/^RESULT/RESULT $name/" >> "$results"
}
evaluate pretrained "$run/$last"
evaluate random random

step "t-SNE of the pretrained encoder's features"
python tsne.py --pretrained "$run/$last" --finetune-dataset demo --protocol cross_subject --data-root "$data" \
  "${run_options[@]}" --workers 2 --num-classes 10 --checkpoint-path "$out/tsne" --overwrite

step "done"
python - "$results" <<'EOF'
import sys

rows = {}
for line in open(sys.argv[1]):
    _, encoder, kind, *fields = line.split()
    rows.setdefault(encoder, {})[kind] = dict(field.split("=", 1) for field in fields)
# Linear: the best top-1 over the probe's evaluations, as the released script reports it ("Final best
# accuracy", the figure papers compare), with its top-5; the last epoch's top-1 beside it.
print("| encoder | linear top-1 (%) | linear top-5 (%) | kNN top-1 (%) | linear, last epoch (%) |")
print("|---|---|---|---|---|")
for encoder, result in rows.items():
    linear = result["linear"]
    print(f"| {encoder} | {linear['best_top1']} | {linear['best_top5']} | {result['knn']['top1']} "
          f"| {linear['final_top1']} |")
EOF
cat <<EOF

Pretraining run (checkpoints, config.json, log.jsonl): $run
TensorBoard logs:                                      tensorboard --logdir $out
Linear-probe and kNN runs (results.json each):         $out/linear_* $out/knn_*
t-SNE figure:                                          $(ls "$out"/tsne/*.png 2>/dev/null | head -1)
Total time: $(( $(date +%s) - start )) s
EOF
