"""data.py toward codeparrot's size without its 50 GB: a corpus of that shape, and the loader at 35B tokens.

The inputs behind bench/RESULTS.md's "Toward codeparrot's size":

    python bench/scale.py corpus OUT --mb 2000     # a codeparrot-shaped corpus made from the standard library
    /usr/bin/time -v python data.py prepare --out DS --source OUT/*.json.gz --vocab-size 32768
    python bench/scale.py loader --tokens 35e9     # the loader over 35B tokens of sparse shards

`corpus` cuts each standard-library file into documents of 4-16 KB (codeparrot averages ~10 KB) and
writes copies as file-NNNNN.json.gz with codeparrot's fields; each copy renames its functions and classes
and gets a comment of its own, so deduplication keeps it, and 3% are written twice, 2% again with trailing
spaces (duplicates up to whitespace). `loader` writes shards that are all header and holes (a sparse file
costs no disk), then times what a training run does with them at its start and at a resume.
"""

import argparse
import gzip
import hashlib
import io
import json
import random
import re
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bpe  # noqa: E402
import data  # noqa: E402

DEF = re.compile(r"\b(def|class) (\w+)")


def documents() -> list[tuple[str, str]]:
    """(name, text) of 4-16 KB pieces of the standard library's .py files, cut at line ends."""
    out = []
    for number, text in enumerate(bpe.read_texts(data.stdlib_sources("*.py"))):
        rnd, piece, size = random.Random(number), [], 0
        goal = rnd.randint(4000, 16000)
        for line in text.splitlines(keepends=True):
            piece.append(line)
            size += len(line)
            if size >= goal:
                out.append((f"module_{number}.py", "".join(piece)))
                piece, size, goal = [], 0, rnd.randint(4000, 16000)
        if piece:
            out.append((f"module_{number}.py", "".join(piece)))
    return out


def record(path, text, copy):
    return json.dumps({"repo_name": f"user{copy % 9973}/repo{copy}", "path": path, "copies": "1",
                       "size": str(len(text)), "content": text, "license": "mit",
                       "hash": hashlib.md5(text.encode()).hexdigest()})  # fmt: skip


def write_file(args) -> int:
    """One file-NNNNN.json.gz of about `mb` MB of text; returns its documents."""
    out, index, mb, docs = args
    rnd, chars, written, copy = random.Random(index), 0, 0, index * 1000
    with gzip.open(out / f"file-{index:05d}.json.gz", "wt", compresslevel=1) as f:
        while chars < mb * 1e6:
            copy += 1
            for path, text in docs:
                if chars >= mb * 1e6:
                    break
                text = f"# {path} variant {copy}\n" + DEF.sub(rf"\1 \2_{copy}", text)
                draw = rnd.random()
                again = [text] if draw < 0.03 else [text.replace("\n", "  \n")] if draw < 0.05 else []
                for i, t in enumerate([text, *again]):
                    f.write(record(path, t, copy + i) + "\n")
                    chars, written = chars + len(t), written + 1
    return written


def corpus(out: Path, mb: float, file_mb: float):
    out.mkdir(parents=True, exist_ok=True)
    docs, files = documents(), max(1, round(mb / file_mb))
    with Pool(2) as pool:
        written = pool.map(write_file, [(out, i + 1, mb / files, docs) for i in range(files)])
    print(f"{out}: {files} files, {sum(written):,} documents, about {mb:,.0f} MB of text")


def sparse_dataset(out: Path, tokens: float, shard_tokens: int):
    """A complete dataset whose shards are headers and holes: token 0 everywhere, no disk."""
    tok = bpe.Tokenizer.train(["def f(x):\n    return x\n"] * 20, vocab_size=260, progress=False)
    tok.save(out / "tokenizer.bpe")
    shards, counts = {}, {"train": int(tokens), "valid": int(tokens) // 19}  # 5% held out
    for split, left in counts.items():
        shards[split] = []
        while left > 0:
            n, path = min(shard_tokens, left), out / f"{split}_{len(shards[split]):06d}.bin"
            with open(path, "wb") as f:
                f.write(data.shard_header(tok.vocab_size, n).tobytes())
                f.truncate(data.HEADER_BYTES + 2 * n)
            shards[split].append(path.name)
            left -= n
    meta = dict(
        complete=True,
        format_version=data.VERSION,
        tokenizer="tokenizer.bpe",
        tokens=counts,
        vocab_size=tok.vocab_size,
        eot_token=tok.eot_token,
        shards=shards,
        documents={},
        read={},
        tokenizer_sha256=data.file_sha256(out / "tokenizer.bpe"),
        docs={s: 1 for s in counts},
        bytes={s: 4 * n for s, n in counts.items()},
        bytes_per_token=dict.fromkeys(counts, 4.0),
    )
    (out / "meta.json").write_text(json.dumps(meta))


def timed(what, fn):
    start = time.perf_counter()
    result = fn()
    print(f"{what}: {time.perf_counter() - start:.2f} s")
    return result


def loader(tokens: float, shard_tokens: int, context: int, world: int, batch: int, accum: int):
    with tempfile.TemporaryDirectory() as tmp:
        sparse_dataset(Path(tmp), tokens, shard_tokens)
        args = dict(batch_size=batch, context=context, grad_accum=accum, world_size=world)
        one = timed("open", lambda: data.Loader(tmp, "train", rank=0, **args))
        timed("first batch (builds the epoch's order)", one.next_batch)
        order = one.permutation(0)
        print(f"windows: {one.n_windows:,}; order: {order.dtype}, {order.nbytes / 1e6:,.0f} MB a rank")
        state = one.state_dict()
        saved = io.BytesIO()
        torch.save(state, saved)
        print(f"loader state in a checkpoint: {len(saved.getvalue()):,} bytes")
        other = data.Loader(tmp, "train", rank=world - 1, **args)
        late = dict(state, position=49_999 * one.global_batch)
        timed(
            "resume at step 49,999 and its first batch",
            lambda: (other.load_state_dict(late), other.next_batch()),
        )
        val = data.TokenStream(tmp, "valid").n_tokens
        windows = data.val_windows(tmp, val, context, 1_000_000, 0, world)
        print(f"validation windows for 1M eval_tokens: {len(windows) * world} ({len(windows)} a rank)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("corpus", help="a codeparrot-shaped corpus from the standard library")
    c.add_argument("out", type=Path)
    c.add_argument("--mb", type=float, default=500, help="MB of text (default: 500)")
    c.add_argument("--file-mb", type=float, default=100, help="MB of text a file (default: 100)")
    s = commands.add_parser("loader", help="the loader over a sparse dataset of this many tokens")
    s.add_argument("--tokens", type=float, default=35e9, help="train tokens (default: 35e9)")
    s.add_argument("--shard-tokens", type=int, default=100_000_000, help="default: 100,000,000")
    s.add_argument("--context", type=int, default=1024)
    s.add_argument("--world", type=int, default=16, help="ranks (default: 16, the recipes')")
    s.add_argument("--batch", type=int, default=2, help="per rank (default: 2, configs/xl.py's)")
    s.add_argument("--accum", type=int, default=16, help="default: 16, configs/xl.py's")
    args = vars(parser.parse_args())
    if args.pop("command") == "corpus":
        corpus(args["out"], args["mb"], args["file_mb"])
    else:
        loader(**args)


if __name__ == "__main__":
    main()
