"""Benchmark bpe.py against Hugging Face `tokenizers` (Rust BpeTrainer, ByteLevel pre-tokenizer).

Same corpus (the local Python standard library's .py files, site-packages excluded; every 20th file is
held out for chars per token), same vocabulary size, same special token. Prints:
  training wall time of each and the ratio ours / HF (goal <= 1.0), peak memory of each,
  chars per token on the held-out files (ours vs HF: the merges are the same, so ~equal; GPT-2's if
  tiktoken can load it, which needs network or a cache), encoding MB/s ours (tiktoken) vs HF encode_batch.
Each training runs in a fresh subprocess so ru_maxrss is its own peak (ours: max of main and workers)
and CPU seconds (user + system, all threads and workers) are its own: on a machine shared with other
jobs, wall time is noisy and CPU time is the steadier comparison.

    python bench/bpe.py [--vocab-size 32768] [--limit-mb 0 (= all)]
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import bpe  # noqa: E402


def corpus(limit_mb: float) -> tuple[list[Path], list[Path]]:
    """(training files, held-out files) from the standard library, the first limit_mb MB (0 = all)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts and p.is_file())
    if limit_mb:
        total, kept = 0, []
        for p in files:
            total += p.stat().st_size
            if total > limit_mb * 1e6:
                break
            kept.append(p)
        files = kept
    return [p for i, p in enumerate(files) if i % 20], files[::20]


def train_child(which: str, vocab_size: int, limit_mb: float, out: str):
    """Runs in its own process: train from the files (reading included for both), print time and peak."""
    train_files, _ = corpus(limit_mb)
    start = time.perf_counter()
    if which == "ours":
        tok = bpe.Tokenizer.train(bpe.read_texts(train_files), vocab_size, progress=False)
        tok.save(out)
    else:
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=2, special_tokens=[bpe.EOT], show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )  # fmt: skip
        tok.train_from_iterator(bpe.read_texts(train_files), trainer)
        tok.save(out)
    seconds = time.perf_counter() - start
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(u.ru_utime + u.ru_stime for u in usage)  # all threads and worker processes
    print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_mb": max(u.ru_maxrss for u in usage) / 1024}))


def run_child(which, args, out) -> dict:
    cmd = [sys.executable, __file__, "--child", which, "--vocab-size", str(args.vocab_size)]
    cmd += ["--limit-mb", str(args.limit_mb), "--out", out]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def chars_per_token(encode_batch, texts) -> float:
    return sum(map(len, texts)) / sum(map(len, encode_batch(texts)))


def throughput(encode_batch, texts) -> float:
    start = time.perf_counter()
    encode_batch(texts)
    return sum(len(t.encode()) for t in texts) / 1e6 / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab-size", type=int, default=32768)
    parser.add_argument("--limit-mb", type=float, default=0)
    parser.add_argument("--rounds", type=int, default=3, help="trainings per side, alternating")
    parser.add_argument("--no-gpt2", action="store_true", help="no GPT-2 figure (tiktoken downloads it)")
    parser.add_argument("--child", choices=["ours", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return train_child(args.child, args.vocab_size, args.limit_mb, args.out)
    from tokenizers import Tokenizer

    train_files, held_files = corpus(args.limit_mb)
    train_texts, held_texts = list(bpe.read_texts(train_files)), list(bpe.read_texts(held_files))
    mb = sum(len(t.encode()) for t in train_texts) / 1e6
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{when}, {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"corpus: {len(train_files)} stdlib .py files, {mb:.1f} MB (+ {len(held_files)} held out)")
    with tempfile.TemporaryDirectory() as tmp:
        outs, runs = {"hf": f"{tmp}/hf.json", "ours": f"{tmp}/ours.bpe"}, {"hf": [], "ours": []}
        for round_ in range(args.rounds):  # alternating, so that a burst of load elsewhere hits both sides
            for who in ("hf", "ours") if round_ % 2 == 0 else ("ours", "hf"):
                runs[who].append(run_child(who, args, outs[who]))
        hf_run, ours_run = (min(runs[who], key=lambda run: run["seconds"]) for who in ("hf", "ours"))
        ours, hf = bpe.Tokenizer.load(outs["ours"]), Tokenizer.from_file(outs["hf"])
    print(f"vocab size {args.vocab_size}: ours {ours.vocab_size}, HF {hf.get_vocab_size()}")
    hf_batch = lambda texts: [e.ids for e in hf.encode_batch(texts)]  # noqa: E731
    print(f"train seconds: ours {ours_run['seconds']:.1f}, HF {hf_run['seconds']:.1f}, "
          f"ratio {ours_run['seconds'] / hf_run['seconds']:.2f} (goal <= 1.0)")  # fmt: skip
    print(f"train CPU seconds (steadier under load): ours {ours_run['cpu']:.1f}, HF {hf_run['cpu']:.1f}")
    print(f"peak memory MB: ours {ours_run['peak_mb']:.0f}, HF {hf_run['peak_mb']:.0f}")
    ours_cpt, hf_cpt = chars_per_token(ours.encode_batch, held_texts), chars_per_token(hf_batch, held_texts)
    print(f"held-out chars/token: ours {ours_cpt:.3f}, HF {hf_cpt:.3f}, ratio {ours_cpt / hf_cpt:.4f}")
    gpt2 = None
    if not args.no_gpt2:
        try:
            gpt2 = bpe.Tokenizer.from_tiktoken("gpt2")
        except ValueError as e:  # tiktoken could not fetch GPT-2's ranks
            print(f"GPT-2 comparison skipped: {e}")
    if gpt2:
        gpt2_cpt = chars_per_token(gpt2.encode_batch, held_texts)
        print(f"GPT-2 chars/token {gpt2_cpt:.3f}: ours has {ours_cpt / gpt2_cpt:.2f}x fewer tokens")
    ours_mbs, hf_mbs = throughput(ours.encode_batch, train_texts), throughput(hf_batch, train_texts)
    ratio = ours_mbs / hf_mbs
    print(f"encode MB/s: ours (tiktoken) {ours_mbs:.1f}, HF {hf_mbs:.1f}, ratio {ratio:.2f} (goal >= 2)")


if __name__ == "__main__":
    main()
