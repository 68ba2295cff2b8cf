"""The completion stage: code completions from a trained checkpoint, as the book's complete_code() does.

How a prompt becomes text:
    prompt text --Tokenizer.encode--> ids, cropped from the left to the model's context
    --> the same ids n times, one batch --> GPT.stream: one new token per sample per step (key/value cache)
    --> each sample's token bytes through an incremental UTF-8 decoder, so only whole characters come out
    --> a sample ends at <|endoftext|> or, with first_block, where the next top-level block starts;
        generation stops when every sample has ended
    --> one sample streams to the terminal; several are printed between rules, as in the book.

The functions to call from Python (evaluate.py and bench/sample.py do; the demo runs the command line):
    load_model(checkpoint, tokenizer=None, device="cpu", dtype="float32") -> (GPT, Tokenizer)
    complete(model, tokenizer, prompt, n=1, max_new_tokens=64, temperature=0.4, top_k=None, top_p=0.95,
             seed=1, stop_at_first_block=False, start_of_file=False) -> list[str]  # n completions, no prompt
    completion_steps(...same arguments as complete...) -> Iterator[list[str]]   # new text per sample per step
    first_block(text) -> str                                        # the completion up to the next block
evaluate.py also shares the command line's model flags: add_model_args, load_model_from_args, check_seed.

    python sample.py --prompt 'def area_of_rectangle(a: float, b: float):' [--checkpoint out/tiny]

The book's complete_code passes max_length=64 to the pipeline, which counts the prompt's tokens too;
--max-new-tokens counts only new ones, as transformers' max_new_tokens does.
"""

import argparse
import codecs
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from bpe import HF_FILES, Tokenizer, run_cli
from model import GPT, check_sampling
from train import keep_freed_memory, latest_checkpoint

DEFAULT_RUN = "out/tiny"  # where demo.sh / `python train.py tiny` write the main job's model
RULE = "\n" + "=" * 80 + "\n"  # the book's separator between completions

# The book's regex has typos ('n#'; '\n\n' before @, print and if; no closing parenthesis); what it means
# is: a new top-level class, def, comment, decorator, print or if at the start of a line ends the first
# block. \b keeps names such as `ifs = 1` or `printer()` from cutting (CodeParrot's harness cuts them).
BLOCK_START = re.compile(r"\n(?=(?:class|def|print|if)\b|#|@)")


def first_block(text: str) -> str:
    """The completion up to where the next top-level block starts, trailing whitespace removed."""
    return BLOCK_START.split(text, maxsplit=1)[0].rstrip()


def load_model(checkpoint, tokenizer=None, device="cpu", dtype="float32") -> tuple[GPT, Tokenizer]:
    """A run folder (its latest checkpoint), a checkpoint folder or an HF-format GPT-2 folder -> model in
    eval mode on `device` in `dtype`, and its tokenizer: `tokenizer` (a file, or a folder with HF's
    vocab.json + merges.txt), else tokenizer.bpe beside the weights, else their folder's vocab.json."""
    folder = latest_checkpoint(checkpoint)
    try:
        model, tok = load_folder(folder, tokenizer)
    except (OSError, ValueError):
        # A run that saves often deletes old checkpoints (keep_last), after moving `latest` on: if it has
        # moved, the one being read was being deleted, and the newer one is read instead.
        newer = latest_checkpoint(checkpoint)
        if newer == folder:
            raise
        model, tok = load_folder(newer, tokenizer)
    return model.to(device=device, dtype=getattr(torch, dtype)).eval(), tok


def load_folder(folder, tokenizer) -> tuple[GPT, Tokenizer]:
    """load_model's work on one checkpoint folder: the model as saved (float32, CPU) and its tokenizer."""
    tok_path = Path(tokenizer) if tokenizer else folder / "tokenizer.bpe"
    if not tokenizer and not tok_path.exists() and (folder / HF_FILES[0]).is_file():
        tok_path = folder  # an HF GPT-2 folder
    need = "a tokenizer.bpe file or an HF folder with vocab.json + merges.txt"
    if tokenizer and not tok_path.exists():
        raise FileNotFoundError(f"--tokenizer {tokenizer}: no such file or folder; give {need}")
    if not tok_path.exists():
        raise FileNotFoundError(f"no tokenizer {tok_path}: pass --tokenizer ({need})")
    tok = Tokenizer.load(tok_path)
    model = GPT.from_pretrained(folder)
    if tok.vocab_size != model.config.vocab_size:
        raise ValueError(
            f"tokenizer {tok_path} has {tok.vocab_size} tokens but the model in {folder} has "
            f"{model.config.vocab_size}: pass the tokenizer.bpe the model was trained with (--tokenizer FILE)"
        )
    return model, tok


def add_model_args(parser, required=True, dtype_default="bfloat16 on CUDA, else float32"):
    """--checkpoint, --tokenizer, --device and --dtype: how sample.py and evaluate.py pick a model."""
    where = "" if required else f" (default {DEFAULT_RUN})"
    parser.add_argument(
        "--checkpoint", required=required, help=f"run folder, checkpoint folder or HF GPT-2 folder{where}"
    )
    parser.add_argument(
        "--tokenizer",
        help="tokenizer.bpe, or a folder with HF's vocab.json + merges.txt "
        "(default: tokenizer.bpe, else vocab.json, in the checkpoint folder)",
    )
    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default, help=f"cpu, cuda, cuda:1, mps... (default: {default})")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help=f"default: {dtype_default}"
    )


def load_model_from_args(args) -> tuple[GPT, Tokenizer]:
    """load_model with the command line's checks: an unknown or absent device is one line, not a crash
    deep in torch, and the dtype defaults to bfloat16 on CUDA (args.dtype is set to what was used). On the
    CPU the process keeps freed memory for reuse (train.keep_freed_memory), as training does."""
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise ValueError(f"--device {args.device}: not a device name (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: this machine has no CUDA device; use --device cpu")
    try:  # a well-formed name can still be absent here (mps on Linux, cuda:3 on a 1-GPU machine)
        torch.empty(0, device=device)
    except Exception:  # RuntimeError, AssertionError, ModuleNotFoundError (hpu): torch raises all kinds
        raise ValueError(f"--device {args.device}: this machine or torch build cannot use it") from None
    args.dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    if device.type == "cpu":
        keep_freed_memory()
    return load_model(args.checkpoint, args.tokenizer, args.device, args.dtype)


def check_seed(seed):
    # torch takes [-2**63, 2**64) but maps a negative seed onto a positive one; staying below 2**63 also
    # leaves evaluate.py room to add a batch number to the seed.
    if not 0 <= seed < 2**63:
        raise ValueError(f"--seed must be an integer in [0, 2**63), got {seed}")


def check_settings(prompt, n, max_new_tokens, temperature, top_k, top_p, seed):
    """Refuse, in one line each, the settings that would fail deep inside generation or mean nothing."""
    if not prompt:
        raise ValueError(
            "the prompt is empty: give code to complete (--prompt TEXT, --prompt-file FILE, --prompt -)"
        )
    if n < 1 or max_new_tokens < 1:
        raise ValueError(
            f"need at least one sample and one new token, got n={n}, max_new_tokens={max_new_tokens}"
        )
    check_sampling(temperature, top_k, top_p)
    check_seed(seed)


def prompt_ids(tokenizer, prompt, start_of_file=False) -> list[int]:
    """The prompt's ids, all of them (the model sees the last `context`; the commands say so when there are
    more); start_of_file puts <|endoftext|> first, which precedes every training document."""
    return [tokenizer.eot_token] * start_of_file + tokenizer.encode(prompt)


def visible_text(text: str, ended: bool, stop_at_first_block: bool) -> tuple[str, bool]:
    """What of a sample's text may be shown now, and whether the sample is finished.

    With first_block, a block start can only be judged on a complete line (`\\nde` may become `\\ndef` or
    `\\ndefault = 1`), so until the sample ends we look only up to the last newline and hold back trailing
    whitespace, which the cut would strip. What is shown this way only ever grows."""
    if not stop_at_first_block:
        return text, ended
    settled = text if ended else text[: text.rfind("\n") + 1]
    return first_block(settled), ended or BLOCK_START.search(settled) is not None


@torch.inference_mode()
def completion_steps(model, tokenizer, prompt, n=1, max_new_tokens=64, temperature=0.4, top_k=None,
                     top_p=0.95, seed=1, stop_at_first_block=False,
                     start_of_file=False) -> Iterator[list[str]]:  # fmt: skip
    """After every decoding step, yield the new text of each of the n samples ('' when nothing new)."""
    check_settings(prompt, n, max_new_tokens, temperature, top_k, top_p, seed)
    device = next(model.parameters()).device
    ids = prompt_ids(tokenizer, prompt, start_of_file)[-model.config.context :]
    idx = torch.tensor([ids] * n, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    # A token can end mid-character (byte-level BPE); the incremental decoder keeps the partial bytes.
    decoders = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in range(n)]
    texts, shown, done = [""] * n, [""] * n, [False] * n
    steps = model.stream(
        idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
    )
    for step, tokens in enumerate(steps, start=1):
        pieces = [""] * n
        for i, token in enumerate(tokens.tolist()):
            if done[i]:  # finished samples keep being computed with the batch; their tokens are dropped
                continue
            ended = step == max_new_tokens or token == tokenizer.eot_token
            piece = b"" if token == tokenizer.eot_token else tokenizer.decode_bytes([token])
            texts[i] += decoders[i].decode(piece, final=ended)
            visible, done[i] = visible_text(texts[i], ended, stop_at_first_block)
            pieces[i], shown[i] = visible[len(shown[i]) :], visible
        yield pieces
        if all(done):
            return


def complete(model, tokenizer, prompt, n=1, max_new_tokens=64, temperature=0.4, top_k=None, top_p=0.95,
             seed=1, stop_at_first_block=False, start_of_file=False) -> list[str]:  # fmt: skip
    """The n completions of `prompt` (without it), sampled together as one batch; same seed, same text."""
    steps = completion_steps(model, tokenizer, prompt, n, max_new_tokens, temperature, top_k, top_p, seed,
                             stop_at_first_block, start_of_file)  # fmt: skip
    return ["".join(pieces) for pieces in zip(*steps, strict=True)]  # per step -> per sample


def read_prompt(args) -> str:
    """Used exactly as given: no unescaping of a literal \\n, no added or stripped newline."""
    if args.prompt == "-":
        return sys.stdin.read()
    if args.prompt is not None:
        return args.prompt
    try:
        return Path(args.prompt_file).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"--prompt-file {args.prompt_file}: not UTF-8 text") from None
    except OSError as e:  # missing, a directory, unreadable: say so without errno's brackets
        problem = (e.strerror or str(e)).lower()
        raise ValueError(f"--prompt-file {args.prompt_file}: {problem}; check the path") from None


def resolve_checkpoint(path):
    """--checkpoint, else the main job's model: out/tiny here (`python train.py tiny` writes it in the
    current folder), else beside this file (demo.sh writes it there, wherever it is run from)."""
    if path is not None:
        return path
    here, beside = Path(DEFAULT_RUN), Path(__file__).resolve().parent / DEFAULT_RUN
    for run in (here, beside):
        if run.exists():
            return str(run)
    raise ValueError(
        f"no trained model in {here} or {beside} yet: train one with `bash demo.sh` "
        "(or `python train.py tiny`), or pass --checkpoint PATH"
    )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Complete Python code with a trained GPT-2 checkpoint.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="the code to complete, as given; '-' reads standard input")
    source.add_argument("--prompt-file", help="a UTF-8 file holding the code to complete")
    add_model_args(p, required=False)
    p.add_argument("--num-samples", type=int, default=1, help="completions, generated as one batch")
    p.add_argument("--max-new-tokens", type=int, default=64, help="default: 64")
    # The book's complete_code settings: temperature 0.4, top_p 0.95, no top-k, seed 1.
    p.add_argument("--temperature", type=float, default=0.4, help="0 = greedy (default: 0.4)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k likeliest tokens (0 = all)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling, in (0, 1] (default: 0.95)")
    p.add_argument("--seed", type=int, default=1, help="default: 1")
    p.add_argument("--first-block", action="store_true", help="cut where the next top-level block starts")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    prompt = read_prompt(args)
    settings = dict(n=args.num_samples, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                    top_k=args.top_k or None, top_p=args.top_p, seed=args.seed)  # fmt: skip
    check_settings(prompt, **settings)  # before the slow part, loading the model
    args.checkpoint = resolve_checkpoint(args.checkpoint)
    model, tok = load_model_from_args(args)
    if (length := len(prompt_ids(tok, prompt))) > (context := model.config.context):
        print(f"note: the prompt is {length} tokens, the model sees {context}: keeping the last {context}",
              file=sys.stderr)  # fmt: skip
    steps = completion_steps(model, tok, prompt, **settings, stop_at_first_block=args.first_block)
    if args.num_samples == 1:
        sys.stdout.write(prompt)
        for (piece,) in steps:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    texts = [""] * args.num_samples
    for pieces in tqdm(steps, total=args.max_new_tokens, unit="step", leave=False, file=sys.stderr):
        texts = [t + p for t, p in zip(texts, pieces, strict=True)]
    print(RULE.join(texts))


if __name__ == "__main__":
    run_cli(main)
