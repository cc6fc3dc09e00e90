#!/usr/bin/env bash
# Creates .venv in the repository root and installs the project with its test tools.
# Safe to run again: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned to the CPU build this machine carries: an unpinned "torch" would
# pull a multi-GB CUDA build. GPU users may install their own torch before this script.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test,napari]"
# Qt (napari's tests run it offscreen) needs a few system libraries that slim images lack.
if ! ldconfig -p | grep -q "libEGL.so.1" || ! ldconfig -p | grep -q "libxkbcommon.so.0"; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libgl1 libxkbcommon0 \
      libfontconfig1 libdbus-1-3 >/dev/null
  else
    echo "note: Qt's system libraries (libegl1, libgl1, libxkbcommon0) are missing; the napari tests will fail" >&2
  fi
fi
# The live-view tests drive a real headless Chromium (Debian's packages); install it where we can.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "note: chromium and chromium-driver are not installed; the live-view browser tests will be skipped" >&2
  fi
fi
# Compile the numba kernels now rather than in the first session or refusion (10-15 s there);
# they are cached beside their sources (README, "Warm start"). About half a minute, once.
.venv/bin/python scripts/warm_cache.py || echo "note: warming the numba cache failed; the first run will compile its kernels" >&2
