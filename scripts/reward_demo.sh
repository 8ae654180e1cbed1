#!/usr/bin/env bash
# Reward post-training demo on ShapesWorld (docs/reward.md): evaluate the model on held-out prompts, train a
# reward LoRA with configs/reward_shapes.toml, evaluate again with the LoRA, compare.
#
#   scripts/reward_demo.sh                      # the embedded ShapesWorld model (once it exists)
#   MODEL=path/to/model scripts/reward_demo.sh  # any diffusers-format V5.1-class folder
#
# Environment: MODEL, OUT (default runs/reward_shapes), MAX_STEPS (cap on optimizer steps; default: the
# config's), EVAL_PROMPTS (held-out prompts scored, default 64), EXTRA (more `kinema train` arguments).
# Exit status 1 when the reward did not rise by 0.05 or an evaluator accuracy fell by more than 3 points.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
py=.venv/bin/python

if [ -z "${MODEL:-}" ]; then
  MODEL="$($py -c 'from kinema.shapes import embedded_model_path as p; print(p() or "")' 2>/dev/null || true)"
  if [ -z "$MODEL" ]; then
    echo "reward_demo: the embedded ShapesWorld model is not installed (not trained yet); set MODEL=FOLDER" >&2
    exit 2
  fi
fi
OUT="${OUT:-runs/reward_shapes}"
EVAL_PROMPTS="${EVAL_PROMPTS:-64}"
train_args=(configs/reward_shapes.toml --set "model.pretrained=$MODEL" --output-dir "$OUT" --no-progress)
if [ -n "${MAX_STEPS:-}" ]; then train_args+=(--max-steps "$MAX_STEPS"); fi
# shellcheck disable=SC2206
if [ -n "${EXTRA:-}" ]; then train_args+=($EXTRA); fi

start=$(date +%s)
$py scripts/reward_eval.py --model "$MODEL" --max-prompts "$EVAL_PROMPTS" --out "$OUT/eval_before.json" >/dev/null
t0=$(date +%s)
.venv/bin/kinema train "${train_args[@]}"
t1=$(date +%s)
$py scripts/reward_eval.py --model "$MODEL" --lora "$OUT/final/lora.safetensors" --max-prompts "$EVAL_PROMPTS" \
  --out "$OUT/eval_after.json" >/dev/null
echo "reward training: $((t1 - t0)) s; whole demo: $(($(date +%s) - start)) s"
$py scripts/reward_eval.py --compare "$OUT/eval_before.json" "$OUT/eval_after.json"
