"""bench/: each benchmark still runs end to end, at toy sizes, so a GPU session spends its time measuring.

The figures themselves are not asserted (speed lives in bench/RESULTS.md); what is checked is that every
script gets as far as printing the ratio against its peer.
"""

import importlib.util
import os
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

import bpe

ROOT = Path(__file__).resolve().parent.parent
PEERS = all(importlib.util.find_spec(m) for m in ("transformers", "tokenizers"))
TOY_TRAIN = "--sizes tiny --vocab 512 --batch 2 --reps 1 --rounds 1 --warmup 1".split()


@pytest.mark.skipif(not PEERS, reason="the benchmarks compare with transformers (requirements-dev.txt)")
@pytest.mark.parametrize(
    "script, args, ratio",
    [
        ("train.py", TOY_TRAIN, r"ours / transformers: wall [\d.]+x"),
        ("train.py", ["--as-run", *TOY_TRAIN], r"each as run: ours .*: [\d.]+x"),
        ("model.py", ["--reps", "1", "--sizes", "small"], r"small .*\n.*speed-up +[\d.]+x"),
        ("sample.py", ["--sizes", "tiny", "--samples", "2", "--new-tokens", "4", "--repeat", "1"],
         r"tiny +2 +[\d,.]+ +[\d,.]+ +[\d.]+x"),
        # --no-gpt2: tiktoken would download GPT-2's ranks (CI may be offline, or hang on a slow network)
        ("bpe.py", ["--limit-mb", "1", "--vocab-size", "600", "--rounds", "1", "--no-gpt2"],
         r"encode MB/s: ours .* ratio [\d.]+"),
    ],
)  # fmt: skip
def test_benchmark_runs_to_its_ratio(script, args, ratio):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, f"bench/{script}", *args]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(ratio, result.stdout), result.stdout[-3000:]


def test_scale_bench_makes_its_corpus_and_times_the_loader(tmp_path):
    """bench/scale.py needs no peer: a 0.2 MB corpus that prepare reads, and a sparse 2M-token dataset."""
    run = partial(subprocess.run, cwd=ROOT, capture_output=True, text=True, timeout=300)
    made = run([sys.executable, "bench/scale.py", "corpus", tmp_path / "c", "--mb", ".2", "--file-mb", ".1"])
    assert made.returncode == 0, made.stderr[-3000:]
    files = sorted(tmp_path.glob("c/file-*.json.gz"))
    assert [f.name for f in files] == ["file-00001.json.gz", "file-00002.json.gz"]
    texts = list(bpe.read_texts(files))  # codeparrot's `content` field, as prepare reads it
    assert len(texts) > 10 and all(re.match(r"# module_\d+\.py variant \d+\n", t) for t in texts)
    timed = run([sys.executable, "bench/scale.py", "loader", "--tokens", "2e6", "--shard-tokens", "300000"])
    assert timed.returncode == 0, timed.stderr[-3000:]
    assert "windows: 1,951; order: uint16, 0 MB a rank" in timed.stdout, timed.stdout
