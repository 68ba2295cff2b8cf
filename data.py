"""The data stage: raw Python files in, memory-mapped token shards out, and batches for training.

How data flows through this file:

    sources (directories of .py, JSON Lines, text)  --bpe.read_texts (streamed)-->  documents
    --clean: keywords, size, auto-generated, line lengths, alphanumeric share, duplicates-->
    --stable hash of each document-->  train | valid
    --bpe.Tokenizer (trained on a sample of train, or given), encode_batch on all cores-->
    <|endoftext|> doc <|endoftext|> doc ...  -->  DIR/{train,valid}_NNNNNN.bin  (+ tokenizer.bpe, meta.json)
    --Loader: np.memmap, seeded permutation of non-overlapping T+1 windows-->  (x, y) int64 for train.py

The book's ConstantLengthDataset concatenates tokenized files with an end-of-text token and cuts the
stream into equal lengths so that no token is padding; we do the same once, offline, so training reads
ready tokens from disk and the corpus can be far larger than RAM. The shard layout follows llm.c: a
1 KB header of 256 int32 then uint16 tokens, so a shard is one np.memmap away from a tensor.
"""

import argparse
import hashlib
import heapq
import json
import os
import random
import shutil
import sys
import sysconfig
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import bpe

MAGIC, VERSION, HEADER_INTS = 20261122, 1, 256  # header: magic, version, vocab, n_tokens, doc_end, doc_offset
HEADER_BYTES = 4 * HEADER_INTS
SPLITS = ("train", "valid")


# ---------------------------------------------------------------- shards
def write_shard(path, tokens, vocab_size, doc_end=0, doc_offset=0):
    """Write tokens (uint16) behind the header, under a temporary name renamed when complete.

    doc_end/doc_offset say where the next shard starts (document index in the split, token offset
    in it), so an interrupted prepare resumes after the last complete shard without re-tokenizing."""
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:6] = MAGIC, VERSION, vocab_size, len(tokens), doc_end, doc_offset
    tmp = Path(f"{path}.tmp")
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype="<u2").tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_header(path):
    """The shard's header, checked against the file size: a truncated or foreign file stops here."""
    hint = "re-run `python data.py prepare` with --overwrite to rebuild the dataset"
    size = Path(path).stat().st_size
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS) if size >= HEADER_BYTES else None
    if header is None or header[0] != MAGIC or header[1] != VERSION:
        raise ValueError(f"{path}: not a version-{VERSION} token shard (bad header); {hint}")
    if size != HEADER_BYTES + 2 * int(header[3]):
        raise ValueError(
            f"{path}: truncated or corrupt shard (header says {header[3]} tokens, "
            f"file has {size} bytes); {hint}"
        )
    return header


def open_shard(path):
    """The shard's tokens as a read-only np.memmap: pages are read on demand, never the whole file."""
    n = int(read_header(path)[3])
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n,))


class ShardWriter:
    """Fills fixed-size shards of one split, resuming after the complete shards already on disk."""

    def __init__(self, out_dir, split, vocab_size, shard_tokens):
        self.out_dir, self.split, self.vocab_size = Path(out_dir), split, vocab_size
        self.buf, self.fill, self.index = np.empty(shard_tokens, np.uint16), 0, 0
        self.resume_doc = self.resume_offset = 0
        while (path := self.path(self.index)).exists():  # a shard on disk is complete: writes are atomic
            header = read_header(path)
            self.resume_doc, self.resume_offset = int(header[4]), int(header[5])
            self.index += 1
        if self.index:
            print(f"resuming: reusing {self.index} complete {split} shard(s)")

    def path(self, index):
        return self.out_dir / f"{self.split}_{index:06d}.bin"

    def add(self, doc, tokens):
        """Append the tokens of the split's document number `doc`, less what a reused shard holds."""
        pos = self.resume_offset if doc == self.resume_doc else 0
        while pos < len(tokens):
            take = min(len(tokens) - pos, len(self.buf) - self.fill)
            self.buf[self.fill : self.fill + take] = tokens[pos : pos + take]
            self.fill, pos = self.fill + take, pos + take
            if self.fill == len(self.buf):
                self.flush((doc, pos) if pos < len(tokens) else (doc + 1, 0))

    def flush(self, next_start):
        if self.fill:
            write_shard(self.path(self.index), self.buf[: self.fill], self.vocab_size, *next_start)
            self.index, self.fill = self.index + 1, 0


# ---------------------------------------------------------------- cleaning and splitting
@dataclass
class Options:
    """Everything that decides a dataset's content; a DIR made with other options is refused."""

    glob: str = "*.py"
    field: str = "content"
    keywords: tuple = ()  # the HF course's data-science subset: pandas,sklearn,matplotlib,seaborn
    min_size: int = 1024  # bytes; the BigQuery export kept files of 1 KB to 1 MB
    max_size: int = 1 << 20
    drop_autogenerated: bool = True  # this and the thresholds below: CodeParrot's cleaning; 0 disables one
    max_mean_line: float = 100.0
    max_line: int = 1000
    min_alnum: float = 0.25
    dedup: bool = True
    valid_share: float = 0.05
    tokenizer: str = ""  # a tokenizer file or a tiktoken name ("gpt2"); empty: train one on the train split
    vocab_size: int = 8192
    tokenizer_sample_mb: float = 20.0
    shard_tokens: int = 100_000_000  # llm.c's FineWeb shard size


# CodeParrot's cleaning marks a file auto-generated when one of these appears in its first 5 lines.
AUTOGEN_MARKERS = ("auto-generated", "autogenerated", "automatically generated")
ASCII_NOT_ALNUM = bytes(b for b in range(128) if not chr(b).isalnum())


def drop_reason(text, size, opts):
    """The first cleaning rule `text` fails, or None to keep it."""
    if opts.keywords and not any(k in text for k in opts.keywords):
        return "keywords"
    if not opts.min_size <= size <= (opts.max_size or size):
        return "size"
    head = text[:4000].lower().split("\n", 5)[:5]
    if opts.drop_autogenerated and any(m in line for line in head for m in AUTOGEN_MARKERS):
        return "autogenerated"
    lengths = [len(line) for line in text.splitlines()] or [0]
    if opts.max_mean_line and sum(lengths) / len(lengths) > opts.max_mean_line:
        return "mean_line"
    if opts.max_line and max(lengths) > opts.max_line:
        return "max_line"
    if opts.min_alnum and alnum_count(text) < opts.min_alnum * len(text):
        return "alnum"
    return None


def alnum_count(text):
    if text.isascii():  # most source files: bytes.translate counts at C speed, 10x faster than the loop
        return len(text.encode().translate(None, ASCII_NOT_ALNUM))
    return sum(map(str.isalnum, text))


def content_key(text):
    """64-bit hash of the text with all whitespace removed: the duplicate key and the split key."""
    digest = hashlib.blake2b("".join(text.split()).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def scan(sources, opts, progress):
    """First pass: decide every document (0 dropped, 1 train, 2 valid), count why, sample for the tokenizer.

    One byte per document lets the second pass replay these decisions without filtering again. A
    document is valid when its content key falls in the first valid_share of the hash range: a key of
    the content alone, so re-runs and added sources never move it (and whitespace variants go together).
    The tokenizer sample is the train documents with the smallest keys that fit in the byte budget: a
    uniform random sample, deterministic, held in bounded memory while streaming. The duplicate set
    costs ~70 bytes per kept document (~1.8 GB for all 26M files of the BigQuery export)."""
    stats, read_stats, flags, seen = Counter(), Counter(), bytearray(), set()
    sample, sample_bytes, budget = [], 0, opts.tokenizer_sample_mb * 1e6
    threshold = opts.valid_share * 2**64
    texts = bpe.read_texts([str(s) for s in sources], glob=opts.glob, field=opts.field, stats=read_stats)
    for text in tqdm(texts, desc="scan", unit=" docs", disable=None if progress else True):
        size, key = len(text.encode()), content_key(text)
        reason = drop_reason(text, size, opts) or ("duplicate" if opts.dedup and key in seen else None)
        stats["seen"] += 1
        stats[f"dropped_{reason}" if reason else "kept"] += 1
        flags.append(0 if reason else 2 if key < threshold else 1)
        if opts.dedup and not reason:
            seen.add(key)
        if flags[-1] == 1 and not opts.tokenizer:
            heapq.heappush(sample, (-key, text))
            sample_bytes += size
            while sample_bytes > budget:
                sample_bytes -= len(heapq.heappop(sample)[1].encode())
    if stats["seen"] == 0:
        raise ValueError(f"no documents found in {', '.join(map(str, sources))}; check --source and --glob")
    return flags, [text for _, text in sample], stats, read_stats


# ---------------------------------------------------------------- tokenizer
def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def given_tokenizer(opts):
    """The tokenizer named by --tokenizer (a file or a tiktoken name), or None when we train one."""
    if not opts.tokenizer:
        return None
    is_file = Path(opts.tokenizer).is_file()
    tok = bpe.Tokenizer.load(opts.tokenizer) if is_file else bpe.Tokenizer.from_tiktoken(opts.tokenizer)
    if tok.vocab_size > 1 << 16:
        raise ValueError(
            f"{opts.tokenizer}: {tok.vocab_size} tokens do not fit the uint16 shards "
            "(at most 65,536); use a tokenizer with a smaller vocabulary"
        )
    return tok


def install_tokenizer(out_dir, opts, given, sample, progress):
    """DIR/tokenizer.bpe: reused when resuming, else a copy of the given one, else trained on the sample."""
    target = Path(out_dir) / "tokenizer.bpe"
    if target.exists():
        print(f"resuming: reusing {target}")
    elif Path(opts.tokenizer).is_file():  # a byte-for-byte copy, so its sha256 names the original
        shutil.copyfile(opts.tokenizer, f"{target}.tmp")
        os.replace(f"{target}.tmp", target)
    elif given is not None:
        given.save(target)
    elif not sample:
        raise ValueError("no train documents left to train a tokenizer on; relax the filters or add sources")
    else:
        bpe.Tokenizer.train(sample, vocab_size=opts.vocab_size, progress=progress).save(target)
    return bpe.Tokenizer.load(target)


# ---------------------------------------------------------------- prepare
def write_shards(out_dir, sources, opts, flags, tok, progress):
    """Second pass: tokenize the kept documents in batches on all cores and fill the shards of each split.

    Every document is preceded by <|endoftext|> (GPT-2 and llm.c do the same), so the stream is
    eot doc eot doc ... with no padding, and a prompt of one eot asks the model for a fresh file."""
    writers = {s: ShardWriter(out_dir, s, tok.vocab_size, opts.shard_tokens) for s in SPLITS}
    docs, nbytes, batch, batch_bytes = Counter(), Counter(), [], 0
    bar = tqdm(total=sum(map(bool, flags)), desc="tokenize", unit=" docs", disable=None if progress else True)
    texts = bpe.read_texts([str(s) for s in sources], glob=opts.glob, field=opts.field)
    for flag, text in zip(flags, texts, strict=True):
        if not flag:
            continue
        w = writers[SPLITS[flag - 1]]
        doc, size = docs[w.split], len(text.encode())
        docs[w.split], nbytes[w.split] = doc + 1, nbytes[w.split] + size
        bar.update()
        if doc >= w.resume_doc:  # earlier documents are in the reused shards: not tokenized again
            batch.append((w, doc, text))
            batch_bytes += size
        if batch_bytes > 8e6:
            encode_into_writers(batch, tok)
            batch, batch_bytes = [], 0
    encode_into_writers(batch, tok)
    bar.close()
    for w in writers.values():
        w.flush((docs[w.split], 0))
        for stale in set(w.out_dir.glob(f"{w.split}_*.bin*")) - {w.path(i) for i in range(w.index)}:
            stale.unlink()  # leftovers of an interrupted run
    return {s: [w.path(i).name for i in range(w.index)] for s, w in writers.items()}, docs, nbytes


def encode_into_writers(batch, tok):
    ids = tok.encode_batch([text for _, _, text in batch], num_threads=os.cpu_count())
    for (w, doc, _), doc_ids in zip(batch, ids, strict=True):
        w.add(doc, np.array([tok.eot_token, *doc_ids], dtype=np.uint16))


def stdlib_sources(glob):
    """The running Python's standard library: its modules and packages, without site-packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    entries = [p for p in sorted(root.iterdir()) if p.name != "site-packages"]
    return [p for p in entries if (p.match(glob) if p.is_file() else any(p.rglob(glob)))]


def check_out_dir(out_dir, recipe, overwrite):
    """Refuse a DIR holding something else; say whether a dataset with this recipe is there."""
    meta_path = out_dir / "meta.json"
    patterns = ("meta.json*", "tokenizer.bpe*", "train_??????.bin*", "valid_??????.bin*")
    ours = [p for pattern in patterns for p in out_dir.glob(pattern)]
    try:
        old = json.loads(meta_path.read_text()) if meta_path.exists() else None
    except ValueError:
        old = {}  # an unreadable meta.json: some other dataset, never silently reused
    if old is not None and {k: old.get(k) for k in recipe} == recipe:
        return old
    if overwrite:  # only our own files: --out may hold other things
        for p in ours:
            p.unlink()
    elif ours:
        raise ValueError(
            f"{out_dir} holds a dataset made with other sources or options; "
            "use another --out or pass --overwrite to replace it"
        )
    return None


def make_recipe(sources, options):
    """Checked options, resolved sources, and the recipe that identifies a dataset (kept in meta.json)."""
    opts = Options(**options)
    if opts.vocab_size > 1 << 16:
        raise ValueError(f"--vocab-size {opts.vocab_size} does not fit the uint16 shards (at most 65,536)")
    if not 0 <= opts.valid_share < 1 or opts.shard_tokens < 1:
        raise ValueError(f"need 0 <= --valid-share < 1 (got {opts.valid_share}) and --shard-tokens >= 1")
    sources = [Path(s).resolve() for s in sources] if sources else stdlib_sources(opts.glob)
    is_file = Path(opts.tokenizer).is_file()
    opts.tokenizer = str(Path(opts.tokenizer).resolve()) if is_file else opts.tokenizer
    recipe = {"sources": [str(s) for s in sources], "options": asdict(opts)}
    recipe["tokenizer_source_sha256"] = file_sha256(opts.tokenizer) if is_file else None
    return opts, sources, json.loads(json.dumps(recipe))  # tuples become lists, as meta.json gives them back


def prepare(out_dir, sources=None, *, overwrite=False, progress=True, **options):
    """Build (or finish) the dataset in out_dir from sources; returns its meta dict, also in meta.json:
    the recipe (sources, options, tokenizer_source_sha256), vocab_size, eot_token, tokenizer (file name)
    and tokenizer_sha256, documents {seen, kept, dropped_<filter>}, read {files, bad_json, missing_field,
    invalid_utf8, first_<problem>: "file:line"}, per split: docs, bytes, tokens, shards, bytes_per_token."""
    opts, sources, recipe = make_recipe(sources, options)
    out_dir = Path(out_dir)
    old = check_out_dir(out_dir, recipe, overwrite)
    if old and old.get("complete"):
        print(f"{out_dir} is already complete; reusing it (--overwrite starts over)")
        return old
    given = given_tokenizer(opts)  # before anything is written: a bad --tokenizer costs nothing
    flags, sample, stats, read_stats = scan(sources, opts, progress)
    if opts.keywords:  # the HF course prints this share: 3.26% of codeparrot for its four libraries
        print(f"keyword filter kept {1 - stats['dropped_keywords'] / stats['seen']:.2%} of documents")
    if not stats["kept"]:
        raise ValueError(f"the filters dropped all {stats['seen']} documents ({dict(stats)}); relax them")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "meta.json", {**recipe, "complete": False})
    tok = install_tokenizer(out_dir, opts, given, sample, progress)
    shards, docs, nbytes = write_shards(out_dir, sources, opts, flags, tok, progress)
    tokens = {s: sum(int(read_header(out_dir / n)[3]) for n in shards[s]) for s in SPLITS}
    meta = {
        **recipe,
        "complete": True,
        "format_version": VERSION,
        "vocab_size": tok.vocab_size,
        "eot_token": tok.eot_token,
        "tokenizer": "tokenizer.bpe",
        "tokenizer_sha256": file_sha256(out_dir / "tokenizer.bpe"),
        "documents": dict(stats),
        "read": dict(read_stats),
        "docs": {s: docs[s] for s in SPLITS},
        "bytes": {s: nbytes[s] for s in SPLITS},
        "tokens": tokens,
        "shards": shards,
        "bytes_per_token": {s: nbytes[s] / tokens[s] if tokens[s] else None for s in SPLITS},
    }
    write_json(out_dir / "meta.json", meta)
    return meta


def write_json(path, obj):
    Path(f"{path}.tmp").write_text(json.dumps(obj, indent=1))
    os.replace(f"{path}.tmp", path)


def load_meta(data_dir):
    """The dataset's meta.json, or a ValueError saying how to make the dataset."""
    path, hint = Path(data_dir) / "meta.json", f"make it with `python data.py prepare --out {data_dir}`"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{data_dir}: no dataset here (no meta.json); {hint}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{path}: not valid JSON; {hint} --overwrite") from None
    if not meta.get("complete") or meta.get("format_version") != VERSION:
        raise ValueError(
            f"{data_dir}: dataset is incomplete or of another version; re-run the prepare command "
            "that made it to finish it (or --overwrite)"
        )
    return meta


# ---------------------------------------------------------------- loading
class TokenStream:
    """The shards of one split seen as one array of tokens, read through memory maps."""

    def __init__(self, data_dir, split):
        meta = load_meta(data_dir)
        self.shards = [open_shard(Path(data_dir) / name) for name in meta["shards"][split]]
        self.ends = np.cumsum([len(s) for s in self.shards], dtype=np.int64)
        self.n_tokens = int(self.ends[-1]) if self.shards else 0

    def windows(self, ids, length):
        """Windows number `ids` of `length` tokens as a (len(ids), length) uint16 array.

        Windows cross shard boundaries, so the split is one stream and nothing is lost at shard ends."""
        out = np.empty((len(ids), length), np.uint16)
        for row, window in zip(out, ids, strict=True):
            start, pos = int(window) * length, 0
            i = int(np.searchsorted(self.ends, start, side="right"))
            while pos < length:
                lo = start + pos - (int(self.ends[i]) - len(self.shards[i]))
                take = min(length - pos, len(self.shards[i]) - lo)
                row[pos : pos + take] = self.shards[i][lo : lo + take]
                pos, i = pos + take, i + 1
        return out


def to_batch(windows, device):
    """(B, T+1) uint16 windows -> x, y (B, T) int64 on device; y is x shifted by one."""
    batch = torch.from_numpy(windows.astype(np.int64))
    if torch.device(device).type == "cuda":  # pinned pages let the copy run asynchronously
        batch = batch.pin_memory().to(device, non_blocking=True)
    return batch[:, :-1].contiguous(), batch[:, 1:].contiguous()


class Loader:
    """Training batches: every T+1 window once per epoch, in a seeded random order, shared out by ranks.

    `position` counts windows over an endless stream of per-epoch permutations. Optimizer step s takes
    the next G = batch_size * grad_accum * world_size windows; micro-step a of rank r takes the slice
    (r * grad_accum + a) * batch_size of them. So a step is the same set of windows for any split
    between processes and accumulation, steps may straddle epochs, and no window is ever dropped."""

    def __init__(
        self,
        data_dir,
        split="train",
        batch_size=8,
        context=1024,
        grad_accum=1,
        rank=0,
        world_size=1,
        seed=0,
        device="cpu",
    ):
        if min(batch_size, context, grad_accum, world_size) < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need batch_size, context, grad_accum, world_size >= 1 and 0 <= rank < "
                f"world_size (got {batch_size}, {context}, {grad_accum}, {world_size}, rank {rank})"
            )
        self.stream = TokenStream(data_dir, split)
        self.n_windows = self.stream.n_tokens // (context + 1)
        if self.n_windows == 0:
            raise ValueError(
                f"{data_dir}: the {split} split has {self.stream.n_tokens} tokens, fewer than "
                f"one window of context+1 = {context + 1}; use a smaller context or more data"
            )
        self.split, self.batch_size, self.context, self.grad_accum = split, batch_size, context, grad_accum
        self.rank, self.world_size, self.seed, self.device = rank, world_size, seed, device
        self.position, self.micro, self.perms = 0, 0, {}

    @property
    def global_batch(self):
        return self.batch_size * self.grad_accum * self.world_size

    @property
    def epoch(self):
        return self.position // self.n_windows

    def permutation(self, epoch):
        if epoch not in self.perms:
            # a step straddles at most two epochs: keep the previous permutation only
            self.perms = {e: p for e, p in self.perms.items() if e == epoch - 1}
            self.perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
        return self.perms[epoch]

    def next_batch(self):
        """The next micro-batch of this rank: x, y of shape (batch_size, context), int64."""
        first = self.position + (self.rank * self.grad_accum + self.micro) * self.batch_size
        positions = np.arange(first, first + self.batch_size)
        ids = [self.permutation(p // self.n_windows)[p % self.n_windows] for p in positions]
        self.micro += 1
        if self.micro == self.grad_accum:
            self.position, self.micro = self.position + self.global_batch, 0
        return to_batch(self.stream.windows(ids, self.context + 1), self.device)

    def state_dict(self):
        keys = "seed position micro split context n_windows global_batch batch_size grad_accum world_size"
        return {k: getattr(self, k) for k in keys.split()}

    def load_state_dict(self, state):
        """Continue exactly where `state` stopped; other world sizes work at the same global batch."""
        mine = self.state_dict()
        for key in ("split", "context", "n_windows", "global_batch"):
            if state[key] != mine[key]:
                raise ValueError(
                    f"cannot resume the data loader: {key} was {state[key]}, now {mine[key]} "
                    "(keep the dataset, context and batch_size * grad_accum * world_size)"
                )
        if state["micro"] and any(state[k] != mine[k] for k in ("batch_size", "grad_accum", "world_size")):
            raise ValueError(
                "cannot resume the data loader mid-step with another batch_size/grad_accum/world_size;"
                " resume from a checkpoint taken at a step boundary"
            )
        self.seed, self.position, self.micro = state["seed"], state["position"], state["micro"]
        self.perms = {}


def val_batches(data_dir, batch_size, context, max_tokens, rank=0, world_size=1, device="cpu"):
    """Fixed validation batches: windows spread evenly over the valid split, within max_tokens of input.

    Each rank gets every world_size-th window, so ranks are disjoint and get the same number of
    batches of the same sizes (collective calls in evaluation then line up)."""
    stream = TokenStream(data_dir, "valid")
    n = stream.n_tokens // (context + 1)
    use = min(n, max(world_size, max_tokens // context))
    use -= use % world_size
    if use == 0:
        raise ValueError(
            f"{data_dir}: the valid split has {n} windows of {context + 1} tokens, fewer than "
            f"the {world_size} rank(s); use a smaller context or a larger --valid-share"
        )
    mine = (np.arange(use) * n // use)[rank::world_size]
    return (
        to_batch(stream.windows(mine[i : i + batch_size], context + 1), device)
        for i in range(0, len(mine), batch_size)
    )


# ---------------------------------------------------------------- command line
def inspect(data_dir, tokens=200, seed=None, analysis_tokens=2_000_000):
    """The dataset's counts, a random train window decoded back to text, and the book's tokenizer
    analysis measured on held-out code: the first documents of the valid split, decoded."""
    meta = load_meta(data_dir)
    counts = {k: meta[k] for k in ("documents", "read", "docs", "tokens", "bytes_per_token")}
    print(json.dumps(counts, indent=1))
    shards = ", ".join(f"{s} {len(meta['shards'][s])}" for s in SPLITS)
    print(f"vocab_size {meta['vocab_size']}, shards: {shards}")
    stream = TokenStream(data_dir, "train")
    length = min(tokens, stream.n_tokens)
    window = random.Random(seed).randrange(stream.n_tokens // length) if length else 0
    tok_path = Path(data_dir) / meta["tokenizer"]
    tok = bpe.Tokenizer.load(tok_path)
    print(f"--- train window {window} of {length} tokens ---")
    print(tok.decode(stream.windows([window], length)[0].tolist()) if length else "(empty)")
    valid = TokenStream(data_dir, "valid")
    held_out = valid.windows([0], min(analysis_tokens, valid.n_tokens))[0].tolist()
    docs = [d for d in tok.decode(held_out).split(bpe.EOT) if d]
    print("--- the tokenizer on held-out code ---")
    bpe.report(tok_path, docs, f"{len(docs)} documents of the valid split")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="clean, split, tokenize and shard a corpus")
    p.add_argument("--out", required=True, help="dataset directory")
    sources = "dirs, .jsonl[.gz]/.json.gz, text files (default: this Python's standard library)"
    p.add_argument("--source", nargs="+", action="extend", help=sources)
    keywords = "comma-separated: keep only files containing one (the HF course's subset)"
    p.add_argument("--keywords", type=lambda s: tuple(filter(None, s.split(","))), default=(), help=keywords)
    for field, value in asdict(Options()).items():  # one flag per Options field; see its comments
        flag, hint = "--" + field.replace("_", "-"), f"default: {value!r}"
        if isinstance(value, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        elif field != "keywords":
            p.add_argument(flag, type=type(value), default=value, help=hint)
    p.add_argument("--overwrite", action="store_true", help="replace a dataset made with other options")
    i = commands.add_parser("inspect", help="counts and a random window decoded back to text")
    i.add_argument("dir")
    i.add_argument("--tokens", type=int, default=200)
    i.add_argument("--seed", type=int, default=None)
    args = vars(parser.parse_args(argv))
    if args.pop("command") == "inspect":
        inspect(args["dir"], args["tokens"], args["seed"])
        return
    meta = prepare(args.pop("out"), args.pop("source"), overwrite=args.pop("overwrite"), **args)
    for key in ("read", "documents", "tokens", "bytes_per_token"):  # read: bad lines and where
        print(f"{key}: {meta[key]}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError) as e:
        sys.exit(print(f"error: {e}", file=sys.stderr) or 2)
