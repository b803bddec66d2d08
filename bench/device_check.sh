#!/usr/bin/env bash
# The GPU checks of the scale issue in one short script, for a session lent a GPU machine (the `device` tool):
#   bash bench/device_check.sh            # from the repository root, on the GPU machine
# It runs the CUDA-relevant tests, the quick preset end to end on CUDA (and under torchrun with NCCL when two
# GPUs are visible), then the benchmarks with --device cuda. Everything it prints goes in the closing note.
set -euo pipefail
export PYTHONPATH="$PWD" DVC_NO_ANALYTICS=1
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(), torch.__version__)"
python -m pytest -q tests/test_runtime.py tests/test_student.py tests/test_errors.py -k "runtime or precision or cuda"

work=$(mktemp -d)
cp -r helio_core stages "$work"/
python - "$work" <<'PY'
import sys, yaml
params = yaml.safe_load(open("presets/quick.yaml"))
params["runtime"] = {"device": "cuda", "precision": "auto"}
yaml.safe_dump(params, open(f"{sys.argv[1]}/params.yaml", "w"))
PY
(
  cd "$work"
  for stage in prepare train_teachers select_patches fit_projector refine_images evaluate_students; do
    start=$SECONDS
    python -m "stages.$stage" | tail -n 3
    echo "$stage: $((SECONDS - start)) s on $(python -c 'import torch; print(torch.cuda.get_device_name())')"
  done
  if [ "$(python -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
    for stage in train_teachers fit_projector evaluate_students; do
      torchrun --standalone --nproc_per_node 2 -m "stages.$stage" | tail -n 3
    done
  fi
)
python bench/precision.py --device cuda
python bench/student_labels.py --device cuda
python bench/fit_projector_cache.py --device cuda
python bench/projector_throughput.py --device cuda
