#!/usr/bin/env bash
# Sets up .venv (idempotent) and runs the main job: generate a video with the embedded model.
# Extra args go to `kinema generate` (e.g. --prompt "a blue square moves up" --out outputs/x.mp4).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ $# -eq 0 ]; then
  set -- --prompt "一个红色的圆从左向右移动" --out outputs/demo.mp4
fi
exec .venv/bin/kinema generate "$@"
