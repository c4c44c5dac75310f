#!/usr/bin/env bash
# Installs what mmtrader needs to build, once: libtorch from the `torch` wheel that the pinned
# tch release expects, into a project-local venv, linked as .libtorch for .cargo/config.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION="2.13.0" # the version tch 0.26 (torch-sys) checks for
VENV=".venv"
STAMP="$VENV/.torch-$TORCH_VERSION"

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust with rustup (https://rustup.rs) first" >&2
  exit 1
fi

if [ ! -f "$STAMP" ]; then
  PY="${PYTHON:-python3}"
  if ! command -v "$PY" >/dev/null 2>&1; then
    echo "setup: $PY not found; install Python 3.10+ (needed only to fetch the torch wheel)" >&2
    exit 1
  fi
  echo "setup: installing torch==$TORCH_VERSION into $VENV (libtorch for tch)…"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
  touch "$STAMP"
fi

TORCH_DIR="$("$VENV/bin/python" -W ignore -c 'import os, torch; print(os.path.relpath(os.path.dirname(torch.__file__)))')"
if [ "$(readlink .libtorch 2>/dev/null || true)" != "$TORCH_DIR" ]; then
  ln -sfn "$TORCH_DIR" .libtorch
fi
echo "setup: libtorch ready at .libtorch -> $TORCH_DIR"
