#!/usr/bin/env bash
# Creates .venv and installs kinema with its test dependencies, idempotently.
# Source it or run it; a second run only checks a stamp and returns.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
stamp="$venv/.kinema-setup-stamp"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
PY="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
# torch first, pinned, so nothing below can pull a multi-GB CUDA build.
# GPU users: install your CUDA torch into .venv first and set KINEMA_TORCH=keep.
if [ "${KINEMA_TORCH:-}" != "keep" ]; then
  "${pip[@]}" "torch==${KINEMA_TORCH_VERSION:-2.13.0}"
fi
"${pip[@]}" -e ".[test]"
echo "$want" > "$stamp"
