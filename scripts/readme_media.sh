#!/usr/bin/env bash
# The README's example GIFs, made with the embedded ShapesWorld model (`kinema generate`, no --model).
#   bash scripts/readme_media.sh            # writes docs/media/*.gif (+ .json sidecars)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
K=.venv/bin/kinema
out=docs/media
mkdir -p "$out"
$K generate --prompt "一个红色的圆从左向右移动" --seed 1 --out "$out/t2v_zh.gif"
$K generate --prompt "A blue square moves up" --seed 2 --out "$out/t2v_en.gif"
$K generate --prompt "黄色の三角形が右下へ動く" --seed 3 --out "$out/t2v_ja.gif"
# I2V: the start frame of a ShapesWorld clip the model never trained on.
.venv/bin/python - "$out/start.png" <<'PY'
import sys
from PIL import Image
from kinema.shapes.spec import ObjectSpec, SceneSpec
from kinema.shapes.world import render_from_spec
clip = render_from_spec(SceneSpec((ObjectSpec("green", "diamond", "left"),), "checker"), seed=7)
Image.fromarray(clip.frames[0]).save(sys.argv[1])
PY
$K generate --image "$out/start.png" --prompt "A green diamond moves to the left" --seed 4 --out "$out/i2v.gif"
cat > "$out/arc.json" <<'JSON'
{"tracks": [{"normalized": false, "points": [[0, 8, 40], [8, 32, 16], [16, 56, 40]]}]}
JSON
$K generate --trajectory "$out/arc.json" --prompt "A purple circle" --seed 5 --out "$out/trajectory.gif"
$K generate --camera pan_left --prompt "A white star on a checkered background, the camera pans left" \
    --seed 6 --out "$out/camera.gif"
rm -f "$out"/{t2v_zh,t2v_en,t2v_ja,i2v,trajectory,camera}.json  # sidecars name this machine's paths
ls -la "$out"
