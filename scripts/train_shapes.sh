#!/usr/bin/env bash
# Train the embedded ShapesWorld model family with kinema's own trainer and install it into the package.
#
#   bash scripts/train_shapes.sh            # everything; rerun to resume after an interruption
#
# Steps (run folders under runs/shapes/, gitignored; every `kinema train` resumes from its latest
# checkpoint and a finished step is skipped):
#   1. ShapesWorld training set (held-out colour x shape x direction combinations excluded), as many
#      single-object static-camera clips for the T2V base (metadata_t2v.jsonl), trajectory control
#      videos, moving-camera clips with preset-convention poses, metadata variants;
#      the small text encoder, pre-trained on the training scenes' prompts, then frozen (bf16 weights)
#   2. VAE: single frames, then (temporal taps moved into the newest tap: `recipe inflate-vae`)
#      9-frame videos, then fixed log-variance (`recipe finalize-vae`) and two decoder-only stages (the
#      second with the camera clips' floor)
#      (configs/shapes/vae_*.toml)
#   3. gate: held-out 17-frame reconstruction PSNR >= 28 dB, else stop
#   4. transformers: a T2V base at patch size 1 (object cells weighted), then the branches from it:
#      the InP root (T2V + I2V; blended with the base, then continued), Control (trajectory) and Camera
#   5. export the family, benchmark it on held-out prompts (kinema eval), install into
#      src/kinema/shapes/embedded/
# See docs/shapesworld-model.md for the design, the budget and the measurements.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUNS=runs/shapes            # the configs name these folders
CLIPS=${CLIPS:-3000}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

START=$SECONDS
stamp() { printf '== [%3d min] %s\n' $(((SECONDS - START) / 60)) "$*"; }

train() {  # train CONFIG RUN: skip a finished run, resume an interrupted one
    if [ -d "$RUNS/$2/final" ]; then stamp "$2: done"; return; fi
    stamp "$2: kinema train $1"
    "$PY" -m kinema train "$1" --no-progress
}

stamp "data"
# metadata_camera.jsonl is written last (temporary file + rename): its presence means the set is complete
# (a set from before session 9 lacks metadata_t2v.jsonl: `recipe data` then adds only that).
[ -f "$RUNS/data/metadata_camera.jsonl" ] && [ -f "$RUNS/data/metadata_t2v.jsonl" ] &&
    [ -f "$RUNS/data/metadata_vae_floor.jsonl" ] ||
    "$PY" -m kinema.shapes.recipe data "$RUNS/data" --clips "$CLIPS"
# The text encoder (two cycles, 1500 + 3000 steps, ~18 min on one thread) trains beside the VAE stages;
# the T2V base is the first step that reads it. pretrain.json is written last: its presence means done.
TEXT_PID=
# A failing stage must not leave it running (a rerun would start a second one on the same folder).
trap '[ -z "$TEXT_PID" ] || kill "$TEXT_PID" 2>/dev/null || true' EXIT
if [ ! -f "$RUNS/text/pretrain.json" ]; then
    stamp "text encoder (background)"
    OMP_NUM_THREADS=1 "$PY" -m kinema.shapes.recipe text-encoder "$RUNS/text" --data "$RUNS/data" \
        --steps 1500 --more-steps 3000 > "$RUNS/text.log" 2>&1 &
    TEXT_PID=$!
fi
train configs/shapes/vae_image.toml vae_image
[ -f "$RUNS/vae_image_inflated/config.json" ] ||
    "$PY" -m kinema.shapes.recipe inflate-vae "$RUNS/vae_image/final/vae" "$RUNS/vae_image_inflated"
train configs/shapes/vae_video.toml vae_video
# Fixed log-variance + measured scaling factor: the latent space the transformers are trained on.
[ -f "$RUNS/vae/config.json" ] ||
    "$PY" -m kinema.shapes.recipe finalize-vae "$RUNS/vae_video/final/vae_ema" "$RUNS/vae" --data "$RUNS/data"
# Decoder-only refinement (encoder frozen: the latent space above does not move).
train configs/shapes/vae_decoder.toml vae_decoder
# ...then once more with the camera clips' floor in the mix (session 17).
train configs/shapes/vae_decoder_floor.toml vae_decoder_floor
stamp "VAE gate"
"$PY" -m kinema.shapes.vae_check "$RUNS/vae_decoder_floor/final/vae_ema" --clips 32 --min-psnr 28

if [ -n "$TEXT_PID" ]; then
    stamp "waiting for the text encoder"
    wait "$TEXT_PID" || { TEXT_PID=; cat "$RUNS/text.log"; exit 1; }
    TEXT_PID=
fi
train configs/shapes/t2v_p1.toml t2v_p1    # the T2V base every member branches from
train configs/shapes/inp.toml inp
# The InP branch blended half-way with the base (WiSE-FT), then trained on: the member export installs.
[ -f "$RUNS/inp_blend/config.json" ] || "$PY" -m kinema.shapes.recipe blend-inp "$RUNS" "$RUNS/inp_blend"
train configs/shapes/inp_more.toml inp_more
train configs/shapes/control.toml control
train configs/shapes/camera.toml camera

stamp "export + benchmark"
"$PY" -m kinema.shapes.recipe export "$RUNS" "$RUNS/export" --text-encoder "$RUNS/text"
"$PY" -m kinema eval --model "$RUNS/export" --prompts 32 --json "$RUNS/eval.json"
rm -rf src/kinema/shapes/embedded
cp -r "$RUNS/export" src/kinema/shapes/embedded
du -sh src/kinema/shapes/embedded
stamp "done"
