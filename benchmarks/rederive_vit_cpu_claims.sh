#!/usr/bin/env bash
# Re-derives the MCF / ProS / LAFS / FaRL rows of docs/results.md ("Which claims hold") under the
# paired-bootstrap rule (issue 23): pretrain each CPU preset, evaluate it, then write one report per
# method against the same seeded random-weight ViT (`facerep report --merge`), so the random-init
# evaluation runs once for the three core/vit_cpu presets instead of once per method.
#
#   FACEREP_DATA=../shared/data bash benchmarks/rederive_vit_cpu_claims.sh [OUT]   # default work_dirs/rederive
#
# One heavy job at a time (2 cores): the stages run in order, each timed into OUT/times.txt; a stage
# whose output already exists is skipped, so the script resumes after an interruption. On a 2-core
# host with AMX bf16 kernels (2026-12-06) the stages up to LAFS's evaluation took 47 min (each preset
# 6-9 min, each five-family evaluation 75 s, LAFS's six fine-tunings 10 min); without bf16 kernels
# the presets fall back to fp32, about 2x slower (MCF: 966 s). Then read OUT/<method>_vs_random/results.md (the
# gap table) and OUT/eval_lafs*/results.md into docs/results.md.
source "$(dirname "$0")/rederive_stages.sh" "$@"

EVAL=configs/eval/five_tasks_r18_64.yaml
for m in mcf pros farl; do
  stage "pretrain $m" "$OUT/$m/backbone.safetensors" "$FACEREP" run "$m/${m}_vit_cpu" --work-dir "$OUT/$m"
done
# The random-weight row: the same seeded backbone the presets start from, as MCF's sidecar names it
# (JSON is YAML, so the override takes it as written).
SPEC=$(.venv/bin/python -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))["backbone"]))' "$OUT/mcf/backbone.json")
stage "eval random" "$OUT/eval_random/results.json" \
  "$FACEREP" eval "$EVAL" --work-dir "$OUT/eval_random" -o "backbone=$SPEC"
for m in mcf pros farl; do
  stage "eval $m" "$OUT/eval_$m/results.json" "$FACEREP" eval "$EVAL" --weights "$OUT/$m/backbone.safetensors" --work-dir "$OUT/eval_$m"
  stage "report $m" "$OUT/${m}_vs_random/results.json" "$FACEREP" report "$OUT/${m}_vs_random" --merge "$OUT/eval_random" "$OUT/eval_$m"
done
stage "farl zero-shot" "$OUT/farl_zero_shot/results.json" \
  "$FACEREP" eval configs/eval/farl_zero_shot.yaml --weights "$OUT/farl/backbone.safetensors" --work-dir "$OUT/farl_zero_shot" \
  -o "evaluate.0.protocols.0.params.joint=$OUT/farl/joint_embedding.safetensors"
# LAFS: its own landmark ViT, fine-tuned; the random row comes from the same run.
stage "pretrain lafs" "$OUT/lafs/backbone.safetensors" "$FACEREP" run lafs/lafs_vit_cpu --work-dir "$OUT/lafs"
stage "eval lafs" "$OUT/eval_lafs/results.json" \
  "$FACEREP" eval configs/eval/lafs_lfw_finetune.yaml --weights "$OUT/lafs/backbone.safetensors" --work-dir "$OUT/eval_lafs" \
  -o compare_random_init=true
# LAFS on a trained landmarks model's points (notebook, "LAFS with a trained landmarks model"): the
# landmarks plugin's AFW model is the landmark source of both the pool and the backbone. Its own
# random-init row: the same seeded fine-tunings as eval_lafs's, run again so the two stay disjoint.
stage "afw landmark model" "$OUT/afw_landmark_model/results.json" \
  "$FACEREP" eval configs/eval/afw_landmark_model.yaml --work-dir "$OUT/afw_landmark_model"
M=$(ls "$OUT"/afw_landmark_model/models/*/model.safetensors | head -1)
stage "pretrain lafs_model" "$OUT/lafs_model/backbone.safetensors" \
  "$FACEREP" run lafs/lafs_vit_cpu --work-dir "$OUT/lafs_model" -o data.params.source=model -o "data.params.path=$M" \
  -o "backbone.params.landmarker={source: model, path: $M}"
stage "eval lafs_model" "$OUT/eval_lafs_model/results.json" \
  "$FACEREP" eval configs/eval/lafs_lfw_finetune.yaml --weights "$OUT/lafs_model/backbone.safetensors" --work-dir "$OUT/eval_lafs_model" \
  -o compare_random_init=true
cat "$OUT/times.txt"
