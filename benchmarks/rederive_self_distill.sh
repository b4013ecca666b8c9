#!/usr/bin/env bash
# Re-derives docs/results.md's self-distillation claim (FRL §5.4: the student beats plain fine-tuning)
# under the paired-bootstrap rule (issue 23): MoCo-v2 with views that keep the face's geometry,
# 405 steps of 128 on the unlabelled pool, then configs/eval/self_distill_5pct.yaml, whose records
# hold the student and, as its own row, the teacher (plain fine-tuning from the same weights on the
# same 5 % subset); results.md's "Gap to the reference row" is the student's gain over it.
#
#   FACEREP_DATA=../shared/data bash benchmarks/rederive_self_distill.sh [OUT]   # default work_dirs/rederive
#
# Resumable as benchmarks/rederive_vit_cpu_claims.sh: a stage whose output exists is skipped; wall
# times go to OUT/times.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${FACEREP_DATA:?set FACEREP_DATA to the data folder (../shared/data)}"
OUT=${1:-work_dirs/rederive}
FACEREP=${FACEREP:-.venv/bin/facerep}
mkdir -p "$OUT"

stage() {  # stage NAME DONE_FILE CMD...: run CMD unless DONE_FILE exists, timing it
  local name=$1 done_file=$2; shift 2
  if [[ -e $done_file ]]; then echo "skip $name ($done_file exists)"; return; fi
  local t0=$SECONDS
  "$@"
  echo "$name $((SECONDS - t0)) s" | tee -a "$OUT/times.txt"
}

stage "pretrain moco_geom_405" "$OUT/moco_geom_405/backbone.safetensors" \
  "$FACEREP" run configs/experiments/moco_v2_geometry_faces.yaml --work-dir "$OUT/moco_geom_405" \
  -o train.max_steps=405 -o 'evaluate=[]' -o compare_random_init=false
stage "eval self_distill" "$OUT/self_distill/results.json" \
  "$FACEREP" eval configs/eval/self_distill_5pct.yaml --weights "$OUT/moco_geom_405/backbone.safetensors" --work-dir "$OUT/self_distill"
cat "$OUT/times.txt"
