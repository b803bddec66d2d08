#!/usr/bin/env bash
# The GPU checks of the scale issue in one short script, for a session lent a GPU machine (the `device` tool):
#   bash bench/device_check.sh [LOG_DIR] [FASHION_MNIST_DIR] [PART...]  # from the repository root, on the GPU
# machine; PART names the parts to run (environment tests quick precision student_labels fit_projector_cache
# projector_throughput student_archs default), all of them by default. Split them over two or three calls of the
# device tool, each well inside its limit: one call that ran them all timed out with nothing returned.
# It runs the CUDA tests, the quick preset end to end on CUDA (and under torchrun with NCCL when two GPUs are
# visible), every benchmark with --device cuda, then the default params end to end on CUDA when a Fashion-MNIST
# folder is given (stage by stage, the wall seconds of each). Each part has its own time limit and its log in
# LOG_DIR; one failing part does not stop the others, and the exit status counts the failures.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1
if [ "${1:-}" = --pipeline ]; then  # --pipeline NAME PARAMS_FILE LOG_DIR FASHION_MNIST_DIR: one part, below
  name=$2
  work=$(mktemp -d)
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
    for stage in prepare train-teachers select-patches fit-projector refine-images evaluate-students; do
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
  cp "$work/metrics/students.json" "$4/$name-students.json" 2>/dev/null
  exit $status
fi

logs=$(realpath -m "${1:-device-logs}")
fmnist=${2:+$(realpath "$2")}
wanted=("${@:3}")
mkdir -p "$logs"
failures=0

part() {  # part NAME SECONDS COMMAND...: run one part under its limit, its output to the screen and NAME.log
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  [ ${#wanted[@]} -eq 0 ] || [[ " ${wanted[*]} " == *" $name "* ]] || return 0
  echo "## $name"
  timeout "$limit" "$@" 2>&1 | tee "$logs/$name.log"
  local status=${PIPESTATUS[0]}
  echo "## $name: exit $status, $((SECONDS - start)) s"
  [ "$status" -eq 0 ] || failures=$((failures + 1))
}

part environment 60 python -c "import torch, torchvision; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'torchvision', torchvision.__version__)"
part tests 120 python -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_runtime.py tests/test_student.py
part quick 120 bash "$0" --pipeline quick presets/quick.yaml "$logs" ""
part precision 45 python bench/precision.py --device cuda
part student_labels 45 python bench/student_labels.py --device cuda
part fit_projector_cache 45 python bench/fit_projector_cache.py --device cuda
part projector_throughput 45 python bench/projector_throughput.py --device cuda
part student_archs 45 python bench/student_archs.py --device cuda
if [ -n "$fmnist" ]; then
  part default 300 bash "$0" --pipeline default params.yaml "$logs" "$fmnist"
fi
echo "device_check: $failures part(s) failed"
exit "$failures"
