#!/usr/bin/env bash
# The main job: the whole CodeParrot pipeline, end to end, on a fresh machine with nothing downloaded.
#
#   raw Python (this interpreter's standard library) -> clean, dedup, split -> our BPE -> uint16 shards
#   -> a tiny GPT-2 trained on the CPU (or the GPU, when there is one) -> completions of the book's prompts
#
# Every stage is one of the project's own commands, printed before it runs, so this file doubles as the
# recipe to copy when moving to a real corpus. Each stage reuses what an earlier run finished: rerunning
# after an interruption continues. `--fresh` starts over.
#
#   bash demo.sh [--fresh] [--out DIR] [--source PATH] [--vocab-size N] [train.py --key=value ...]
set -euo pipefail
cd "$(dirname "$0")"

out=out source=() vocab=4096 train_args=()
needs() { [ "$1" -gt 1 ] || { echo "error: $2 needs a value" >&2; exit 2; }; }
value() { local v=${1#*=}; printf '%s' "${v/#\~/$HOME}"; }  # of --key=VALUE; bash expands ~ only at a word's start
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,/^set /s/^# \{0,1\}//p' "$(basename "$0")"; exit 0 ;;  # this file's opening comment
    --fresh) fresh=1 ;;
    --out) needs $# "$1"; out=$2; shift ;;
    --out=*) out=$(value "$1") ;;
    --source) needs $# "$1"; source+=(--source "$2"); shift ;;
    --source=*) source+=(--source "$(value "$1")") ;;
    --vocab-size) needs $# "$1"; vocab=$2; shift ;;
    --vocab-size=*) vocab=$(value "$1") ;;
    --*=*) train_args+=("$1") ;;  # the rest with '=' is train.py's
    *) echo "error: unknown argument '$1' (see bash demo.sh --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$out" ] || { echo "error: --out needs a folder" >&2; exit 2; }  # else --fresh would clear /stdlib
data="$out/stdlib" run="$out/tiny"
[ -n "${fresh:-}" ] && rm -rf "$data" "$run"

step() { printf '\n\033[1m== %s\033[0m\n$' "$1"; printf ' %q' "${@:2}"; printf '\n'; "${@:2}"; }

step "1. install what is missing" bash .ci/install
step "2-4. corpus -> clean, dedup, split -> BPE -> uint16 shards" \
  python3 data.py prepare --out "$data" --vocab-size "$vocab" "${source[@]}"
step "2-4 (report). the dataset, and the book's tokenizer analysis on held-out code" python3 data.py inspect "$data"
resume=()
[ -f "$run/latest" ] && resume=(--resume=true)
step "5. train configs/tiny.py" \
  python3 train.py tiny --data_dir="$data" --out_dir="$run" "${resume[@]}" "${train_args[@]}"
for prompt in \
  $'def area_of_rectangle(a: float, b: float):\n    """Return the area of the rectangle."""' \
  $'def get_urls_from_html(html):\n    """Get all embedded URLs in a HTML string."""' \
  $'# a function in native python:\ndef mean(a):\n    return sum(a)/len(a)\n\n# the same function using numpy:\nimport numpy as np\ndef mean(a):' \
  $'X = np.random.randn(100, 100)\ny = np.random.randint(0, 1, 100)\n\n# fit random forest classifier with 20 estimators'
do
  step "6. complete the book's example prompt" python3 sample.py --checkpoint "$run" --prompt "$prompt" \
    --num-samples 4 --max-new-tokens 64 --temperature 0.4 --top-p 0.95 --first-block --seed 1
done
