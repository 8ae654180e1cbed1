#!/usr/bin/env bash
# Installs what the browser test (tests/test_serve_browser.py) needs, idempotently:
# Debian's chromium (apt) and the playwright pip package (its driver only: never `playwright install`,
# which would download a browser build). Run as root, or with passwordless sudo.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
if [ ! -x /usr/bin/chromium ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
"$py" -c "import playwright" 2>/dev/null || "$py" -m pip install -q "playwright==1.65.2"
/usr/bin/chromium --version
