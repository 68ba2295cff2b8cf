"""New tokens per second of sample.complete against transformers' generate, same weights, same settings.

Both sides load one checkpoint written by GPT.save_pretrained and sample with the book's complete_code
settings (temperature 0.4, top_p 0.95, no top-k). transformers, given no end-of-text id, runs exactly
--new-tokens steps (min_new_tokens would add two logits processors to each of its steps); ours stops at
<|endoftext|> once every sample has reached it, so we count the steps it really ran. Runs alternate
between the two and the best of --repeat is kept, because other jobs share the machine.

    python bench/sample.py [--sizes tiny gpt2] [--samples 1 8] [--new-tokens 128] [--threads N] [--device cpu]
                           [--checkpoint out/tiny/ckpt-0001200]

Random weights give a nearly flat next-token distribution, the costliest case for top-p (its nucleus is
most of the vocabulary); a trained model's is peaked. `--checkpoint` adds a row for a trained checkpoint
folder (the demo's, say), read by both sides from the same config.json + model.safetensors.
"""

import argparse
import platform
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bpe import EOT, Tokenizer  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from sample import completion_steps, load_model  # noqa: E402

PROMPT = 'def area_of_rectangle(a: float, b: float):\n    """Return the area of the rectangle."""'
SIZES = {  # (n_layer, n_head, n_embd, context, vocab): the demo's scale and codeparrot-small's
    "tiny": (4, 4, 256, 256, 4096),
    "gpt2": (12, 12, 768, 1024, 32768),
}


def synthetic_tokenizer(vocab_size) -> Tokenizer:
    """Random weights emit random ids, so only the cost of decoding matters: any distinct byte strings do."""
    printable = [bytes([b]) for b in range(32, 127)]
    pairs = (a + b for a in printable for b in printable)
    triples = (a + b + c for a in printable for b in printable for c in printable)
    ranks = {bytes([b]): b for b in range(256)}
    for token in (*pairs, *triples):
        if len(ranks) == vocab_size - 1:
            break
        ranks[token] = len(ranks)
    return Tokenizer(ranks, special_tokens={EOT: len(ranks)})


def ours(model, tok, n, new_tokens, seed):
    steps = sum(1 for _ in completion_steps(model, tok, PROMPT, n, new_tokens, 0.4, None, 0.95, seed))
    return steps * n


def theirs(hf, tok, n, new_tokens, seed):
    from transformers import set_seed

    set_seed(seed)
    ids = torch.tensor([tok.encode(PROMPT)] * n, device=hf.device)
    out = hf.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.4, top_p=0.95, top_k=0,
        max_new_tokens=new_tokens, pad_token_id=tok.eot_token, eos_token_id=None,
    )  # fmt: skip
    return (out.shape[1] - ids.shape[1]) * n


def best_rates(fns, repeat, sync) -> list[float]:
    """Tokens per second of each fn, best of `repeat`; the fns take turns so load spikes hit both."""
    best = [0.0] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            tokens = fn()
            sync()
            best[i] = max(best[i], tokens / (time.perf_counter() - start))
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--samples", nargs="+", type=int, default=[1, 8])
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch threads; 1 is steadier when other jobs share the cores")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--checkpoint", help="a trained checkpoint folder to measure as well")
    plain = "ours without model.Linear's sliced few-row products (nn.Linear's one call): what the slices gain"
    p.add_argument("--plain-linear", action="store_true", help=plain)
    args = p.parse_args()
    if args.plain_linear:
        import model as model_module

        model_module.Linear.forward = torch.nn.Linear.forward
    from transformers import GPT2LMHeadModel

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else lambda: None
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {args.device} {args.dtype}, {args.new_tokens} new tokens"
          f"{', plain nn.Linear' if args.plain_linear else ''}")  # fmt: skip
    print(f"{'model':<6} {'samples':>7} {'ours tok/s':>11} {'HF tok/s':>9} {'ratio':>6}")
    for name, (model, tok, folder) in models(args):
        model = model.to(args.device, dtype).eval()
        hf = GPT2LMHeadModel.from_pretrained(folder, dtype=dtype).to(args.device).eval()
        new_tokens = min(args.new_tokens, model.config.context - len(tok.encode(PROMPT)))  # HF cannot slide
        for n in args.samples:
            ours(model, tok, n, 8, 0), theirs(hf, tok, n, 8, 0)  # warm-up: allocator, kernels, caches
            runs = [
                partial(ours, model, tok, n, new_tokens, 1),
                partial(theirs, hf, tok, n, new_tokens, 1),
            ]
            mine, hf_rate = best_rates(runs, args.repeat, sync)
            print(f"{name:<6} {n:>7} {mine:>11.1f} {hf_rate:>9.1f} {mine / hf_rate:>5.2f}x", flush=True)


def models(args):
    """(name, (GPT, Tokenizer, HF-format folder)) for each size asked for, then the checkpoint if given."""
    for size in args.sizes:
        n_layer, n_head, n_embd, context, vocab = SIZES[size]
        torch.manual_seed(0)
        cfg = GPTConfig(vocab_size=vocab, context=context, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
        with tempfile.TemporaryDirectory() as tmp:
            GPT(cfg).save_pretrained(tmp)
            yield size, (GPT.from_pretrained(tmp), synthetic_tokenizer(vocab), tmp)
    if args.checkpoint:
        yield "ckpt", (*load_model(args.checkpoint), args.checkpoint)


if __name__ == "__main__":
    main()
