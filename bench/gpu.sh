#!/usr/bin/env bash
# Every GPU figure the issues ask for, on a CUDA machine; each part's log also lands in $LOGS.
#
#   bash bench/gpu.sh [tests|sample|train|train-xl|peer-eager|model|demo ...]   (default: all, ~16 min)
#
# Each part runs under its own time limit, so one that fails or hangs does not cost the others. Times on
# an H100 (2026-11-22), mostly torch.compile: tests 55 s, sample 110 s, train 190 s, train-xl 260 s,
# peer-eager 50 s, model 100 s, demo 100 s; split them over calls where one call is capped at 10 minutes.
# The figures go to bench/RESULTS.md by hand, with the device name and date printed here.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
LOGS=${LOGS:-${OUT:-out/gpu}}
mkdir -p "$LOGS"
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(tests sample train train-xl peer-eager model demo)
train=(python3 bench/train.py --device cuda --dtype bfloat16 --compile)

part() {  # part NAME SECONDS COMMAND...
  printf '\n== %s (limit %ss)\n$ %s\n' "$1" "$2" "${*:3}"
  timeout "$2" "${@:3}" 2>&1 | tee "$LOGS/$1.log"
  echo "== $1: exit ${PIPESTATUS[0]} after ${SECONDS}s in all"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
for p in "${parts[@]}"; do
  case "$p" in
    tests) part tests 120 python3 -m pytest -q -x -k "cuda or top_p" tests ;;
    sample) part sample 200 python3 bench/sample.py --device cuda --dtype bfloat16 --repeat 2 ;;
    train) part train 300 "${train[@]}" --sizes gpt2 ;;
    train-xl) part train-xl 400 "${train[@]}" --sizes gpt2-xl --batch 8 ;;
    peer-eager)
      part peer-eager 100 "${train[@]}" --sides transformers --peer-eager --sizes gpt2
      part peer-eager-xl 120 "${train[@]}" --sides transformers --peer-eager --sizes gpt2-xl --batch 8 ;;
    model) part model 200 python3 bench/model.py --reps 10 ;;
    demo) part demo 300 bash demo.sh --fresh ;;
    *) echo "unknown part '$p'" >&2 ;;
  esac
done
