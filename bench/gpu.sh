#!/usr/bin/env bash
# Every GPU figure the issues ask for, in one go on a CUDA machine; each log also lands in $LOGS.
#
#   bash bench/gpu.sh [train|train-xl|model|sample|tests|demo ...]     (default: all of them)
#
# Each part runs under its own time limit, so one that fails or hangs does not cost the others.
# The figures go to bench/RESULTS.md by hand, with the device name and date this prints.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
LOGS=${LOGS:-${OUT:-out/gpu}}
mkdir -p "$LOGS"
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(tests train train-xl sample model demo)

part() {  # part NAME SECONDS COMMAND...
  printf '\n== %s (limit %ss)\n$ %s\n' "$1" "$2" "${*:3}"
  timeout "$2" "${@:3}" 2>&1 | tee "$LOGS/$1.log"
  echo "== $1: exit ${PIPESTATUS[0]} after ${SECONDS}s in all"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
for p in "${parts[@]}"; do
  case "$p" in
    tests) part tests 90 python3 -m pytest -q -x -k cuda tests ;;
    train) part train 180 python3 bench/train.py --device cuda --sizes gpt2 --dtype bfloat16 --compile ;;
    train-xl) part train-xl 200 python3 bench/train.py --device cuda --sizes gpt2-xl --dtype bfloat16 --compile ;;
    sample) part sample 110 python3 bench/sample.py --device cuda --dtype bfloat16 --repeat 2 ;;
    model) part model 200 python3 bench/model.py --reps 10 ;;
    demo) part demo 300 bash demo.sh --fresh ;;
    *) echo "unknown part '$p'" >&2 ;;
  esac
done
