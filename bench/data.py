"""Benchmark data.py on this Python's standard library (about 30 MB of .py, no download):

1. end-to-end `prepare` throughput, MB of source per second (with BPE training, and with a given tokenizer);
2. the tokenize step (kept documents -> one uint16 stream with <|endoftext|> between documents) against
   the book's stack: `datasets.Dataset.map(batched=True)` + HF `tokenizers` (GPT2TokenizerFast) loaded
   from our own vocabulary exported as vocab.json + merges.txt, so both produce the same ids (checked);
3. the Loader's cost per batch as a fraction of one training step of the tiny demo model (configs/tiny.py).

    python bench/data.py [--vocab-size 8192] [--steps 20]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bpe  # noqa: E402
import data  # noqa: E402
import train  # noqa: E402
from model import GPT  # noqa: E402


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def ours(tok, texts):
    """The tokenize step of data.write_shards: encode_batch on all threads, eot before each document."""
    ids = tok.encode_batch(texts)
    return np.concatenate([np.array([tok.eot_token, *doc], dtype=np.uint16) for doc in ids])


def theirs(hf_dir, texts, eot):
    """The book's pipeline: datasets.map with a batched fast tokenizer, then the ids flattened."""
    import datasets
    from transformers import GPT2TokenizerFast

    hf = GPT2TokenizerFast(str(hf_dir / "vocab.json"), str(hf_dir / "merges.txt"))  # keywords: ignored in v5
    hf.model_max_length = 1 << 30  # whole files, no truncation warning
    ds = datasets.Dataset.from_dict({"content": texts})
    ds = ds.map(lambda b: {"ids": hf(b["content"])["input_ids"]}, batched=True, remove_columns=["content"])
    return np.concatenate([np.array([eot, *doc], dtype=np.uint16) for doc in ds["ids"]])


def bench_prepare(work, vocab_size):
    sources = data.stdlib_sources("*.py")
    source_mb = sum(len(t.encode()) for t in bpe.read_texts([str(s) for s in sources])) / 1e6
    meta, seconds = timed(data.prepare, work / "trained", vocab_size=vocab_size, progress=False)
    print(
        f"prepare, training a {vocab_size} BPE: {source_mb:.1f} MB in {seconds:.1f} s = "
        f"{source_mb / seconds:.2f} MB/s ({meta['tokens']['train'] + meta['tokens']['valid']:,} tokens)"
    )
    tokenizer = str(work / "trained" / "tokenizer.bpe")
    _, seconds = timed(data.prepare, work / "given", tokenizer=tokenizer, progress=False)
    print(f"prepare, given tokenizer: {source_mb / seconds:.2f} MB/s ({seconds:.1f} s)")
    return meta, sources


def bench_tokenize(work, meta, sources):
    flags = data.scan(sources, data.Options(tokenizer="given"), False)[0]  # "given": no tokenizer sample
    texts = [t for f, t in zip(flags, bpe.read_texts([str(s) for s in sources]), strict=True) if f]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    tok = bpe.Tokenizer.load(work / "trained" / "tokenizer.bpe")
    tok.save_hf(work / "hf")
    theirs(work / "hf", texts[:20], tok.eot_token)  # warm-up: imports, cache set-up
    ours(tok, texts[:20])
    (a, ours_s), (b, theirs_s) = timed(ours, tok, texts), timed(theirs, work / "hf", texts, tok.eot_token)
    theirs_s = min(theirs_s, timed(theirs, work / "hf", texts, tok.eot_token)[1])  # round two, theirs first
    ours_s = min(ours_s, timed(ours, tok, texts)[1])
    assert len(a) == meta["tokens"]["train"] + meta["tokens"]["valid"]
    print(
        f"tokenize {len(texts)} docs, {mb:.1f} MB: ours {mb / ours_s:.2f} MB/s ({ours_s:.2f} s), "
        f"datasets.map + tokenizers {mb / theirs_s:.2f} MB/s ({theirs_s:.2f} s): {theirs_s / ours_s:.1f}x; "
        f"same ids: {np.array_equal(a, b)}"
    )


def loader_ms(path, batch_size, context, n=500):
    loader = data.Loader(path, batch_size=batch_size, context=context)
    loader.next_batch()
    return timed(lambda: [loader.next_batch() for _ in range(n)])[1] / n * 1e3


def bench_loader(work, steps):
    """The tiny demo's training step (configs/tiny.py's model, batch and fused AdamW, at this dataset's
    vocabulary) against the loader's batch for it; and the loader's batch for GPT-2 small's config
    (12 x 1024), whose step on any accelerator takes far longer."""
    cfg = train.load_config(["tiny"])
    train.keep_freed_memory()  # as train.py runs it on a CPU
    torch.manual_seed(0)
    model = GPT(train.model_config(cfg, data.load_meta(work / "trained")["vocab_size"]))
    opt = train.make_optimizer(model, cfg)
    x, y = data.Loader(work / "trained", batch_size=cfg.batch_size, context=cfg.context).next_batch()

    def train_step():
        model(x, y)[1].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    train_step()  # warm-up
    step_ms = timed(lambda: [train_step() for _ in range(steps)])[1] / steps * 1e3
    tiny_ms, small_ms = loader_ms(work / "trained", 16, 128), loader_ms(work / "trained", 12, 1024)
    print(
        f"loader: {tiny_ms:.3f} ms per 16 x 128 batch = {tiny_ms / step_ms:.3%} of a tiny-model training "
        f"step ({step_ms:.0f} ms, {torch.get_num_threads()} threads)\n"
        f"loader: {small_ms:.3f} ms per 12 x 1024 batch (GPT-2 small's config): under 1% of any step "
        f"longer than {small_ms * 100:.0f} ms"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        meta, sources = bench_prepare(work, args.vocab_size)
        bench_tokenize(work, meta, sources)
        bench_loader(work, args.steps)


if __name__ == "__main__":
    main()
