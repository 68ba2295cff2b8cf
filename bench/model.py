"""Benchmark: forward+backward time of model.GPT against transformers' GPT2LMHeadModel.

    python bench/model.py [--reps 4] [--threads N] [--sizes small medium]

Both models get the same config, the same weights (ours saved with save_pretrained, loaded by
GPT2LMHeadModel.from_pretrained), the same batch and the same threads, in train mode with dropout 0.
Runs alternate between the two and the fastest of each is reported: on a shared machine other jobs
only ever add time, so the minimum is the least disturbed estimate. Wall time and this process's CPU
time are both printed; when other jobs crowd the cores, the CPU-time ratio is the steadier one.
CPU: fp32 eager. CUDA: also bf16 autocast + torch.compile (flash attention through SDPA).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from model import GPT, GPTConfig  # noqa: E402

CONFIGS = {  # name -> (config, batch size); sized so the whole run stays under two minutes on 2 cores
    "small": (GPTConfig(vocab_size=32768, context=128, n_layer=4, n_head=4, n_embd=256), 4),
    "medium": (GPTConfig(vocab_size=32768, context=128, n_layer=6, n_head=8, n_embd=512), 2),
}


def ours_step(model, idx):
    _, loss = model(idx[:, :-1], idx[:, 1:])
    loss.backward()


def theirs_step(model, idx):
    model(idx[:, :-1], labels=idx[:, :-1]).loss.backward()  # shifts labels inside: same (B,T,V) logits


def timed(step, model, idx, device, dtype):
    """(wall seconds, CPU seconds of this process) for one forward+backward."""
    model.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
        step(model, idx)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(name, device, dtype, compile, reps):
    from transformers import GPT2LMHeadModel

    config, batch = CONFIGS[name]
    torch.manual_seed(0)
    ours = GPT(config)
    with tempfile.TemporaryDirectory() as tmp:
        ours.save_pretrained(tmp)
        theirs = GPT2LMHeadModel.from_pretrained(tmp, use_cache=False)  # training: no key/value cache
    ours, theirs = ours.to(device).train(), theirs.to(device).train()
    params, attention = ours.num_params(), theirs.config._attn_implementation
    if compile:
        ours, theirs = torch.compile(ours), torch.compile(theirs)
    idx = torch.randint(0, config.vocab_size, (batch, config.context + 1), device=device)
    times = {"ours": [], "transformers": []}
    for rep in range(reps + 1):  # rep 0 warms up (allocator, compile) and is dropped
        for who, step, model in (("ours", ours_step, ours), ("transformers", theirs_step, theirs)):
            t = timed(step, model, idx, device, dtype)
            if rep:
                times[who].append(t)
    label = f"{name} {device} {str(dtype).removeprefix('torch.')}{' compiled' if compile else ''}"
    print(f"{label} ({params / 1e6:.1f}M params, batch {batch}x{config.context}, theirs: {attention})")
    kinds = ("wall", "CPU ") if device == "cpu" else ("wall",)  # on GPU the CPU time says nothing
    for i, kind in enumerate(kinds):
        a, b = (min(t[i] for t in times[who]) for who in ("ours", "transformers"))
        print(f"  {kind} ours {a * 1e3:6.0f} ms  transformers {b * 1e3:6.0f} ms  speed-up {b / a:4.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--sizes", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    keep = "keep freed memory for reuse (train.keep_freed_memory), for both models"
    parser.add_argument("--keep-freed-memory", action="store_true", help=keep)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.keep_freed_memory:
        from train import keep_freed_memory

        keep_freed_memory()
    import transformers

    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {threads} threads for both")
    for name in args.sizes:
        compare(name, "cpu", torch.float32, False, args.reps)
    if torch.cuda.is_available():
        for name in args.sizes:
            compare(name, "cuda", torch.bfloat16, True, args.reps)


if __name__ == "__main__":
    main()
