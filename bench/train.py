"""Benchmark: tokens/s of one full training step, train.py's against a transformers + torch AdamW loop.

    python bench/train.py                                  # CPU: fp32 eager, sizes "small" and "medium"
    python bench/train.py --device cuda --sizes gpt2 gpt2-xl --dtype bfloat16 --compile   # GPU: + MFU
    python bench/train.py --as-run     # CPU: each side in its own process, as its users run it

A step is forward, backward, gradient clipping and the AdamW update, for the same model shape, batch,
precision and compile setting on both sides, dropout 0. Ours is exactly what the training loop runs:
train.optimizer_step on a train.Run (model.GPT, fused AdamW) fed by a stand-in loader of random tokens.
Theirs is the loop of the book and the HF course: GPT2LMHeadModel(input_ids, labels=input_ids).loss,
backward, clip_grad_norm_, torch AdamW (the book's name-filter groups, torch's default implementation:
foreach on CPU, fused on CUDA; `--peer-fused` gives it the fused kernel on CPU too), zero_grad.
On CPU the two alternate and the fastest of each is kept (other jobs only ever add time); wall time and
this process's CPU time are both printed, the CPU-time ratio being the steadier one on a crowded machine.
On CUDA each side is measured on its own (gpt2-xl twice would not fit) and MFU is reported against the
dense bf16 peak of the device, looked up by name as train.py does.
"""

import argparse
import gc
import os
import re
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

USER_OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")
# As train.py (before torch loads OpenMP): no spinning threads on a shared machine. Both sides share it in
# one process; --as-run gives it to ours only, and sets up its children before they start.
if "BENCH_AS_RUN_CHILD" not in os.environ:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import train  # noqa: E402
from model import GPT  # noqa: E402

SIZES = {  # name -> knobs, batch size; the CPU sizes keep the whole run to a few minutes on 2 cores
    "tiny": (dict(n_layer=4, n_head=4, n_embd=128, context=128), 16),  # configs/tiny.py (use --vocab 4096)
    "small": (dict(n_layer=4, n_head=4, n_embd=256, context=128), 8),
    "medium": (dict(n_layer=6, n_head=8, n_embd=512, context=128), 4),
    "gpt2": (dict(model="gpt2", context=1024), 16),
    "gpt2-xl": (dict(model="gpt2-xl", context=1024), 4),
}


class RandomTokens:
    """Stands in for data.Loader: the same (x, y) batch every time, so both sides see equal work."""

    def __init__(self, batch):
        self.batch = batch

    def next_batch(self):
        return self.batch


def ours(cfg, vocab, batch, device, dtype):
    torch.manual_seed(0)
    model = GPT(train.model_config(cfg, vocab)).to(device)
    train_model = torch.compile(model) if cfg.compile else model
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    run = train.Run(
        cfg,
        0,
        1,
        device,
        dtype,
        model,
        train_model,
        train.make_optimizer(model, cfg),
        scaler,
        RandomTokens((batch[:, :-1], batch[:, 1:])),
        torch.zeros(0, dtype=torch.long),
        b"",  # no tokenizer: the benchmark never saves
    )
    return model, lambda: train.optimizer_step(run)


def theirs(cfg, vocab, batch, device, dtype, fused=False, eager=False):
    from transformers import GPT2Config, GPT2LMHeadModel

    shape = train.model_config(cfg, vocab)
    config = GPT2Config(
        vocab_size=vocab,
        n_positions=shape.context,
        n_layer=shape.n_layer,
        n_head=shape.n_head,
        n_embd=shape.n_embd,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        use_cache=False,
        bos_token_id=None,  # its defaults, 50256, lie outside a 32,768 vocabulary and it warns
        eos_token_id=None,
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).to(device).train()
    train_model = torch.compile(model) if cfg.compile and not eager else model
    named = list(model.named_parameters())
    exempt = {n for n, _ in named if any(nd in n for nd in ("bias", "LayerNorm.weight"))}  # the book's filter
    groups = [
        {"params": [p for n, p in named if n not in exempt], "weight_decay": 0.1},
        {"params": [p for n, p in named if n in exempt], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, fused=device.type == "cuda" or fused)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    x = batch[:, :-1]  # labels shift inside: the same (B, T, V) logits as ours

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = train_model(input_ids=x, labels=x).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return model, step


def timed(step, device):
    """(wall seconds, CPU seconds of this process) of one training step."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(steps, device, reps, warmup):
    """Fastest (wall, cpu) per side over `reps` alternating rounds, after `warmup` steps each."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {who: [timed(step, device) for _ in range(reps)] for who, step in steps.items()}
    return {who: (min(w for w, _ in t), min(c for _, c in t)) for who, t in times.items()}


def profile(step, steps=3):
    """Where a step's GPU time goes: the kernels that take the most of it, over a few steps."""
    from torch.profiler import ProfilerActivity

    with torch.profiler.profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=70))


def compare(size, args, device, dtype):
    knobs, batch_size = SIZES[size]
    cfg = train.TrainConfig(device=device.type, compile=args.compile, lr=1e-4, **knobs)
    batch = torch.randint(0, args.vocab, (args.batch or batch_size, cfg.context + 1), device=device)
    tokens = batch.size(0) * cfg.context
    sides = {"ours": ours, "transformers": partial(theirs, fused=args.peer_fused, eager=args.peer_eager)}
    sides = {who: build for who, build in sides.items() if who in args.sides}
    label = f"{size} {device.type} {str(dtype).removeprefix('torch.')}{' compiled' if args.compile else ''}"
    print(f"{label}: batch {batch.size(0)}x{cfg.context}")
    results = {}
    if device.type == "cuda":  # one side at a time: two gpt2-xl with optimizer state do not fit
        peak = train.peak_flops(device)
        with torch.device("meta"):  # the same FLOPs for both sides: one architecture
            flops_per_token = GPT(train.model_config(cfg, args.vocab)).flops_per_token()
        for who, build in sides.items():
            model, step = build(cfg, args.vocab, batch, device, dtype)
            results.update(measure({who: step}, device, args.reps, args.warmup))
            rate = tokens / results[who][0]
            mfu = f"  MFU {rate * flops_per_token / peak:.1%}" if peak else ""
            name = f"{who}{' (eager)' if who == 'transformers' and args.peer_eager else ''}"
            print(f"  {name:20} {rate:10,.0f} tok/s{mfu}  ({torch.cuda.get_device_name(device)})", flush=True)
            if args.profile:
                profile(step)
            del model, step
            gc.collect()
            torch.cuda.empty_cache()
    else:
        built = {who: build(cfg, args.vocab, batch, device, dtype) for who, build in sides.items()}
        for _ in range(args.rounds):  # alternate whole rounds so a burst of other jobs hits both sides
            for who, (_, step) in built.items():
                wall, cpu = measure({who: step}, device, args.reps, args.warmup)[who]
                best = results.get(who, (wall, cpu))
                results[who] = (min(wall, best[0]), min(cpu, best[1]))
        for who in built:
            wall, cpu = (tokens / t for t in results[who])
            print(f"  {who:12} wall {wall:10,.0f} tok/s  CPU {cpu:10,.0f}")
    if len(results) == 2:
        (wall_a, cpu_a), (wall_b, cpu_b) = results["ours"], results["transformers"]
        cpu = f", CPU time {cpu_b / cpu_a:.2f}x" if device.type == "cpu" else ""
        print(f"  ours / transformers: wall {wall_b / wall_a:.2f}x{cpu}")


def as_run(args):
    """CPU: each side in a process of its own, as its users run it: train.py keeps freed memory and lets
    idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE), the book's loop does neither. The two processes
    alternate --rounds times and the best rate of each is kept."""
    if args.device != "cpu" or args.dtype != "float32" or args.compile or args.peer_fused or args.peer_eager:
        sys.exit("--as-run measures the CPU in float32, eager, each side as shipped: drop the other flags")
    common = ["--vocab", str(args.vocab), "--batch", str(args.batch), "--reps", str(args.reps),
              "--warmup", str(args.warmup), "--threads", str(args.threads), "--rounds", "1"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | {"BENCH_AS_RUN_CHILD": "1"}
    peer_env = env if USER_OMP_WAIT_POLICY is None else env | {"OMP_WAIT_POLICY": USER_OMP_WAIT_POLICY}
    ours_env = env | {"OMP_WAIT_POLICY": USER_OMP_WAIT_POLICY or "PASSIVE"}
    sides = (("ours", ["--keep-freed-memory"], ours_env), ("transformers", [], peer_env))
    for size in args.sizes:
        best = {}
        for _ in range(args.rounds):
            for who, extra, child_env in sides:
                cmd = [sys.executable, __file__, "--sizes", size, "--sides", who, *common, *extra]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=child_env).stdout
                rate = float(re.search(rf"{who} +wall +([\d,]+) tok/s", out)[1].replace(",", ""))
                best[who] = max(rate, best.get(who, 0.0))
        ours_rate, theirs_rate = best["ours"], best["transformers"]
        print(f"{size} cpu float32, each as run: ours {ours_rate:,.0f} tok/s, transformers "
              f"{theirs_rate:,.0f} tok/s: {ours_rate / theirs_rate:.2f}x", flush=True)  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--sizes", nargs="+", default=["small", "medium"], choices=list(SIZES))
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--batch", type=int, default=0, help="sequences per step (default: per size)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (CPU)")
    parser.add_argument("--peer-fused", action="store_true", help="fused AdamW for transformers on CPU too")
    parser.add_argument("--peer-eager", action="store_true", help="transformers uncompiled, as the book")
    parser.add_argument("--profile", action="store_true", help="CUDA: the costliest kernels of each side")
    sides = ["ours", "transformers"]
    parser.add_argument("--sides", nargs="+", default=sides, choices=sides, help="measure only these")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    keep = "this process keeps freed memory, as train.py does on the CPU (both sides)"
    parser.add_argument("--keep-freed-memory", action="store_true", help=keep)
    parser.add_argument("--as-run", action="store_true", help="CPU: each side in its own process, as run")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.as_run:
        return as_run(args)
    if args.keep_freed_memory:
        train.keep_freed_memory()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d %H:%M')}")
    for size in args.sizes:
        compare(size, args, device, getattr(torch, args.dtype))


if __name__ == "__main__":
    main()
