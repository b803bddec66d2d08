#!/usr/bin/env bash
# Installs everything helio needs on a fresh Debian/Ubuntu machine: the Fashion-MNIST package,
# the Python package with its pinned torch, and DVC's repository setup. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
fi

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
command -v pyenv >/dev/null 2>&1 && pyenv rehash

if [ ! -d .dvc ]; then
  dvc init --quiet
fi
