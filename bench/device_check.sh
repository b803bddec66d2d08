#!/usr/bin/env bash
# The GPU check of the scale issue in one call of the `device` tool (a session lent a GPU machine), from the
# repository root there:  bash bench/device_check.sh OUT_DIR [PART...]
# Before, here: bash bench/device_prepare.sh, and name .device in the call's carry (the wheels the machine's image
# lacks, installed below into /tmp/site, and Fashion-MNIST). Parts run in priority order, each under its own limit,
# each writing its log (and the default run's metrics) into OUT_DIR as it finishes, so a call cut short keeps what
# finished; all of them fit in 8 minutes. PART names the parts to run, by default environment default shared_gpu
# precision student_labels tests; full_data (after default, in its work folder: the full-data reference's hard-label
# rows), quick, fit_projector_cache, projector_throughput and student_archs run when named.
# The default part runs the default params stage by stage on CUDA (the wall seconds of each): the pipeline's
# stages in dvc.yaml's order, so a new stage is never left out. shared_gpu trains the default run's students again
# as four processes on GPU 0 (runtime.ranks_per_gpu=4): its seconds against the default part's evaluate-students.
set -uo pipefail
if [ "${1:-}" = --pipeline ]; then  # --pipeline NAME PARAMS_FILE LOG_DIR FASHION_MNIST_DIR: one part, below, in
  # the environment the call set up; its work folder stays for the parts after it
  name=$2
  work=/tmp/helio-device-$name
  rm -rf "$work" && mkdir -p "$work"
  stages=$(python -c "import yaml; print(*(s.replace('_', '-') for s in yaml.safe_load(open('dvc.yaml'))['stages']))")
  cp -r helio_core helio_app stages "$work"/
  python - "$3" "$work/params.yaml" "$5" <<'PY'
import sys, yaml
params = yaml.safe_load(open(sys.argv[1]))
params["runtime"].update(device="cuda", precision="auto")
if sys.argv[3]:
    params["data"]["root"] = sys.argv[3]
yaml.safe_dump(params, open(sys.argv[2], "w"))
PY
  (
    cd "$work" || exit 1
    total=0
    for stage in $stages; do
      start=$SECONDS
      python -m helio_app "$stage" | tail -n 12 || exit 1
      echo "$name $stage: $((SECONDS - start)) s"
      total=$((total + SECONDS - start))
    done
    echo "$name total: $total s on $(python -c 'import torch; print(torch.cuda.get_device_name())')"
    if [ "$(python -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
      for stage in train-teachers fit-projector evaluate-students; do
        torchrun --standalone --nproc_per_node 2 -m helio_app "$stage" | tail -n 3 || exit 1
      done
    fi
  )
  status=$?
  for file in "$work"/metrics/*.json; do [ -f "$file" ] && cp "$file" "$4/$name-$(basename "$file")"; done
  exit $status
fi

if [ "${1:-}" = --shared-gpu ]; then  # --shared-gpu LOG_DIR: the default part's students, four processes on GPU 0
  cd /tmp/helio-device-default || exit 1
  start=$SECONDS
  CUDA_VISIBLE_DEVICES=0 torchrun --standalone --nproc_per_node 4 -m helio_app evaluate-students \
    -S runtime.ranks_per_gpu=4 | tail -n 12 || exit 1
  echo "shared_gpu evaluate-students: $((SECONDS - start)) s as 4 processes on one GPU"
  cp metrics/students.json "$2/shared_gpu-students.json"
  exit 0
fi

if [ "${1:-}" = --full-data ]; then  # --full-data LOG_DIR: the full-data reference's hard-label rows, every arch of
  # full_data.archs, on the default part's prepared splits (this CPU needs hours per row; HLR and LRS need them)
  cd /tmp/helio-device-default 2>/dev/null || { echo "full_data: no /tmp/helio-device-default: run the default part first"; exit 1; }
  start=$SECONDS
  python -m helio_app evaluate-students --full-data -S 'full_data.label_modes=[hard]' | tail -n 12 || exit 1
  echo "full_data evaluate-students --full-data: $((SECONDS - start)) s"
  cp metrics/full_data.json "$2/full_data.json"
  exit 0
fi

if [ -d .device/wheels ] && [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/wheels/*.whl
fi
[ ! -d /tmp/site ] || PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
if ! command -v python >/dev/null; then  # the machine has python3 only: a wrapper, not a link (venv paths)
  mkdir -p /tmp/helio-bin && printf '#!/bin/sh\nexec python3 "$@"\n' >/tmp/helio-bin/python && chmod +x /tmp/helio-bin/python
  export PATH="/tmp/helio-bin:$PATH"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1
logs=$(realpath -m "${1:-device-logs}")
fmnist=$( [ -d .device/fashion-mnist ] && realpath .device/fashion-mnist)
wanted=("${@:2}")
[ ${#wanted[@]} -gt 0 ] || wanted=(environment default shared_gpu precision student_labels tests)
mkdir -p "$logs"
failures=0

part() {  # part NAME SECONDS COMMAND...: run one part under its limit, its output to the screen and NAME.log
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  [[ " ${wanted[*]} " == *" $name "* ]] || return 0
  echo "## $name"
  timeout "$limit" "$@" 2>&1 | tee "$logs/$name.log"
  local status=${PIPESTATUS[0]}
  echo "## $name: exit $status, $((SECONDS - start)) s"
  [ "$status" -eq 0 ] || failures=$((failures + 1))
}

part environment 20 python -c "import torch, torchvision, open_clip, pydantic; assert torch.cuda.is_available(), \
'no CUDA device'; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'torchvision', torchvision.__version__)"
part default 240 bash "$0" --pipeline default params.yaml "$logs" "$fmnist"  # no folder: prepare names the missing one
part shared_gpu 75 bash "$0" --shared-gpu "$logs"
part precision 40 python bench/precision.py --device cuda --profile 8
part student_labels 40 python bench/student_labels.py --device cuda
part tests 45 python -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_runtime.py tests/test_student.py
part full_data 240 bash "$0" --full-data "$logs"
part quick 60 bash "$0" --pipeline quick presets/quick.yaml "$logs" ""
part fit_projector_cache 45 python bench/fit_projector_cache.py --device cuda
part projector_throughput 45 python bench/projector_throughput.py --device cuda
part student_archs 45 python bench/student_archs.py --device cuda
echo "device_check: $failures part(s) failed"
exit "$failures"
