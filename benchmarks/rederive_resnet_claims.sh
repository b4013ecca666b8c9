#!/usr/bin/env bash
# Re-derives docs/results.md's ResNet-18 claims that need a pretraining of their own, under the
# paired-bootstrap rule (issue 23):
# - self-distillation (FRL §5.4: the student beats plain fine-tuning): MoCo-v2 with views that keep
#   the face's geometry, 405 steps of 128 on the unlabelled pool, then
#   configs/eval/self_distill_5pct.yaml, whose records hold the student and, as its own row, the
#   teacher (plain fine-tuning from the same weights on the same 5 % subset); results.md's "Gap to
#   the reference row" is the student's gain over it;
# - the issue-2 run: frl/moco_v2_tiny for 1,000 steps, then linear probes on FER2013 and CelebA
#   attributes with all labels beside the same ResNet-18 with random weights (one seed: with all
#   labels there is no subset to draw; the interval counts the test items).
#
#   FACEREP_DATA=../shared/data bash benchmarks/rederive_resnet_claims.sh [OUT]   # default work_dirs/rederive
#
# Resumable as benchmarks/rederive_vit_cpu_claims.sh: a stage whose output exists is skipped; wall
# times go to OUT/times.txt.
source "$(dirname "$0")/rederive_stages.sh" "$@"

stage "pretrain moco_geom_405" "$OUT/moco_geom_405/backbone.safetensors" \
  "$FACEREP" run configs/experiments/moco_v2_geometry_faces.yaml --work-dir "$OUT/moco_geom_405" \
  -o train.max_steps=405 -o 'evaluate=[]' -o compare_random_init=false
stage "eval self_distill" "$OUT/self_distill/results.json" \
  "$FACEREP" eval configs/eval/self_distill_5pct.yaml --weights "$OUT/moco_geom_405/backbone.safetensors" --work-dir "$OUT/self_distill"
stage "moco_v2 1000 steps + probes" "$OUT/moco_v2_1000/results.json" \
  "$FACEREP" run configs/experiments/moco_v2_tiny_faces.yaml --work-dir "$OUT/moco_v2_1000"
cat "$OUT/times.txt"
