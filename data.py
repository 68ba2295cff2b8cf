"""The data stage: raw Python files in, memory-mapped token shards out, and batches for training.

How data flows through this file:

    sources (directories of .py, JSON Lines, text)  --bpe.read_texts (streamed)-->  documents
    --clean (on all cores): keywords, size, auto-generated, line lengths, alphanumeric share, duplicates-->
    --stable hash of each document-->  train | valid
    --bpe.Tokenizer (trained on a sample of train, or given), encode_batch on all cores-->
    <|endoftext|> doc <|endoftext|> doc ...  -->  DIR/{train,valid}_NNNNNN.bin  (+ tokenizer.bpe, meta.json)
    --Loader: np.memmap, seeded permutation of non-overlapping T+1 windows-->  (x, y) int64 for train.py

The book's ConstantLengthDataset concatenates tokenized files with an end-of-text token and cuts the
stream into equal lengths so that no token is padding. Here tokenizing and concatenating happen once,
offline, so training reads ready tokens from disk and the corpus can be far larger than RAM; the Loader
cuts the windows at training time, so one dataset serves any context. The shard layout is llm.c's (a
1 KB header of 256 int32, then uint16 tokens) with our own magic and header fields, so a shard is one
np.memmap away from a tensor.
"""

import argparse
import errno
import hashlib
import heapq
import json
import math
import os
import random
import re
import sysconfig
from collections import Counter
from contextlib import nullcontext, suppress
from dataclasses import asdict, dataclass, fields
from functools import partial
from inspect import getsource
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import bpe

MAGIC, VERSION, HEADER_INTS = 20261122, 1, 256  # header: magic, version, vocab, n_tokens, doc_end, doc_offset
HEADER_BYTES = 4 * HEADER_INTS
SPLITS = ("train", "valid")


# ---------------------------------------------------------------- the shard format
def rebuild_hint(data_dir) -> str:
    return f"rebuild with `python data.py prepare --out {data_dir} --overwrite`"


def shard_header(vocab_size, n_tokens, doc_end=0, doc_offset=0) -> np.ndarray:
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:6] = MAGIC, VERSION, vocab_size, n_tokens, doc_end, doc_offset
    return header


def write_shard(path, tokens, vocab_size, doc_end=0, doc_offset=0):
    """Write tokens (uint16) behind the header, under a temporary name renamed when complete.

    doc_end/doc_offset say where the next shard starts (document index in the split, token offset
    in it), so an interrupted prepare resumes after the last complete shard without tokenizing again the
    documents those shards hold."""
    header = shard_header(vocab_size, len(tokens), doc_end, doc_offset)
    # Not bpe.write_atomic: two writes rather than one 200 MB bytes object, and an fsync, because a resumed
    # prepare takes every shard on disk as complete, also after a power cut.
    tmp = Path(f"{path}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(header.tobytes())
            f.write(np.asarray(tokens, dtype="<u2").tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when writing failed (a full disk: up to 200 MB back)


def read_header(path):
    """The shard's header, checked against the file size: a truncated or foreign file stops here."""
    hint = rebuild_hint(Path(path).parent)
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


# ---------------------------------------------------------------- cleaning and splitting
@dataclass
class Options:
    """Everything that decides a dataset's content; a DIR made with other options is refused. Each field's
    comment is its --help (field_comments); the lines above a field say where its value comes from."""

    glob: str = "*.py"  # files to read in --source folders
    field: str = "content"  # the text field of JSON Lines records
    keywords: tuple = ()  # keep files holding one, e.g. the HF course's pandas,sklearn,matplotlib,seaborn
    # the book's BigQuery export: size BETWEEN 1024 AND 1048575
    min_size: int = 1024  # drop files of fewer bytes
    max_size: int = 1 << 20  # drop files of this many bytes or more; 0: off
    # CodeParrot's cleaning
    drop_autogenerated: bool = True  # drop files marked auto-generated in their first 5 lines
    max_mean_line: float = 100.0  # drop files whose mean line is longer; 0: off
    max_line: int = 1000  # drop files with a longer line; 0: off
    min_alnum: float = 0.25  # drop files with a smaller share of letters and digits; 0: off
    dedup: bool = True  # drop exact duplicates, up to whitespace
    # off, as the BookCorpus blog post joins its rows (sentences: an eot before each would be 7% of the
    # tokens, and each a "new file")
    eot_between: bool = True  # <|endoftext|> before each document; off: documents run together
    valid_share: float = 0.05  # share of documents held out for validation
    tokenizer: str = ""  # a tokenizer file, an HF vocab.json + merges.txt folder or a tiktoken name
    # demo.sh passes 4,096 for its tiny model; the book's 32,768 is for codeparrot
    vocab_size: int = 8192  # of the tokenizer trained
    tokenizer_sample_mb: float = 20.0  # MB of training documents the tokenizer is trained on
    shard_tokens: int = 100_000_000  # tokens per shard file (llm.c's FineWeb shard size)


def field_comments(cls) -> dict[str, str]:
    """Each field's comment in a dataclass's source, for --help (Options here, train.py's TrainConfig):
    what an option means is written once, beside it."""
    lines = getsource(cls).splitlines()
    return {m[1]: m[2] for line in lines if (m := re.match(r"    (\w+): [^#]+# (.+)", line))}


# CodeParrot's cleaning marks a file auto-generated when one of these appears in its first 5 lines.
AUTOGEN_MARKERS = ("auto-generated", "autogenerated", "automatically generated")
ASCII_NOT_ALNUM = bytes(b for b in range(128) if not chr(b).isalnum())
ASCII_WHITESPACE = bytes(b for b in range(128) if chr(b).isspace())  # what str.split() splits ASCII on


def drop_reason(text, size, opts):
    """The first cleaning rule `text` fails, or None to keep it."""
    if opts.keywords and not any(k in text for k in opts.keywords):
        return "keywords"
    if not opts.min_size <= size < (opts.max_size or size + 1):
        return "size"
    # The first 5 of str.splitlines' lines, as CodeParrot reads them; a longer line is dropped below
    # anyway, so a prefix that holds 5 lines of max_line spares splitting a whole 1 MB file here.
    head = (text[: 5 * (opts.max_line + 2)] if opts.max_line else text).lower().splitlines()[:5]
    if opts.drop_autogenerated and any(m in line for line in head for m in AUTOGEN_MARKERS):
        return "autogenerated"
    lengths = list(map(len, text.splitlines())) or [0]
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
    """64-bit hash of the text with all whitespace removed, as CodeParrot's preprocessing hashes it (so
    files that differ only in whitespace, even indentation, are duplicates): the duplicate and split key."""
    if text.isascii():  # most source files: the same bytes as below (so the same keys and split), 2.3x faster
        bare = text.encode().translate(None, ASCII_WHITESPACE)
    else:
        bare = "".join(text.split()).encode()
    digest = hashlib.blake2b(bare, digest_size=8).digest()
    return int.from_bytes(digest, "little")


def judge(texts, opts) -> list[tuple[int, int, str | None]]:
    """In a worker: each document's size in bytes, content key, and the cleaning rule it fails (or None)."""
    verdicts = []
    for text in texts:
        size = len(text.encode())
        verdicts.append((size, content_key(text), drop_reason(text, size, opts)))
    return verdicts


def read_documents(sources, opts, stats=None):
    """The documents of the sources, in the same order on both passes: flags[i] is document i's fate."""
    return bpe.read_texts(sources, glob=opts.glob, field=opts.field, stats=stats)


def scan(sources, opts, progress):
    """First pass: decide every document (0 dropped, 1 train, 2 valid), count why, sample for the tokenizer.

    One byte per document lets the second pass replay these decisions without filtering again. A
    document is valid when its content key falls in the first valid_share of the hash range: a key of
    the content alone, so re-runs and added sources never move it (and whitespace variants go together).
    The tokenizer sample keeps the smallest keys: train documents that fit the byte budget, the largest key
    evicted first while the sample is over it: close to uniform, the same for the same corpus (which
    documents stay depends on their order), bounded memory. The duplicate set costs ~70 bytes per kept
    document (1.8 GB were all 26.8M files of the book's BigQuery export kept). Inputs that leave nothing to
    build from (no documents, all dropped, a sample budget below every document) are refused here."""
    stats, read_stats, flags, seen = Counter(), Counter(), bytearray(), set()
    sample, sample_bytes, budget = [], 0, opts.tokenizer_sample_mb * 1e6
    threshold = opts.valid_share * 2**64
    texts = read_documents(sources, opts, read_stats)
    # The filters and keys run on all cores; what depends on the documents before (duplicates, the
    # sample) runs here, in order.
    judged = bpe.in_workers(partial(judge, opts=opts), texts, os.cpu_count())
    verdicts = ((text, *v) for chunk, vs in judged for text, v in zip(chunk, vs, strict=True))
    # disable=None: the bar hides itself when stderr is not a terminal (a job's log file)
    for text, size, key, reason in tqdm(
        verdicts, desc="scan", unit=" docs", disable=None if progress else True
    ):
        reason = reason or ("duplicate" if opts.dedup and key in seen else None)
        stats["seen"] += 1
        stats[f"dropped_{reason}" if reason else "kept"] += 1
        flags.append(0 if reason else 2 if key < threshold else 1)
        if opts.dedup and not reason:
            seen.add(key)
        if flags[-1] == 1 and not opts.tokenizer and size <= budget:  # a larger one would evict them all
            heapq.heappush(sample, (-key, text))
            sample_bytes += size
            while sample_bytes > budget:
                sample_bytes -= len(heapq.heappop(sample)[1].encode())
    if stats["seen"] == 0:
        raise ValueError(f"no documents found in {', '.join(map(str, sources))}; check --source and --glob")
    if 1 in flags and not sample and not opts.tokenizer:  # each train document alone is over the budget
        raise ValueError(
            f"--tokenizer-sample-mb {opts.tokenizer_sample_mb}: smaller than every train document; "
            f"pass a larger one (default {Options.tokenizer_sample_mb})"
        )
    if opts.keywords:  # the HF course prints this share: 3.26% of codeparrot for its four libraries
        print(f"keyword filter kept {1 - stats['dropped_keywords'] / stats['seen']:.2%} of documents")
    if not stats["kept"]:
        raise ValueError(f"the filters dropped all {stats['seen']} documents ({dict(stats)}); relax them")
    if 2 not in flags:  # the split goes by content hash: a few documents may all land in train
        print(f"note: no document fell in the valid split (--valid-share {opts.valid_share}), which "
              "train.py evaluates on: raise --valid-share or add sources")  # fmt: skip
    return flags, [text for _, text in sample], stats, read_stats


# ---------------------------------------------------------------- tokenizer
def file_sha256(*paths):
    """sha256 of the files' bytes, one after the other."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def given_tokenizer(opts):
    """The tokenizer named by --tokenizer (a file, an HF vocab.json + merges.txt folder, or a tiktoken
    name), or None when we train one."""
    if not opts.tokenizer:
        return None
    tok = bpe.Tokenizer.open(opts.tokenizer)
    if tok.vocab_size > 1 << 16:
        raise ValueError(
            f"{opts.tokenizer}: {tok.vocab_size} tokens do not fit the uint16 shards "
            "(at most 65,536); use a tokenizer with a smaller vocabulary"
        )
    if bpe.EOT not in tok.special_tokens:
        raise ValueError(f"{opts.tokenizer}: has no {bpe.EOT} token, which separates documents in the shards")
    return tok


def install_tokenizer(out_dir, opts, given, sample, progress):
    """DIR/tokenizer.bpe: reused when resuming, else a copy of the given one, else trained on the sample."""
    target = Path(out_dir) / "tokenizer.bpe"
    if target.exists():
        print(f"resuming: reusing {target}")
    elif Path(opts.tokenizer).is_file():  # a byte-for-byte copy, so its sha256 names the original
        bpe.write_atomic(target, Path(opts.tokenizer).read_bytes())
    elif given is not None:
        given.save(target)
    elif not sample:
        raise ValueError(
            "no train documents left to train a tokenizer on; relax the filters, lower --valid-share "
            "or add sources"
        )
    else:
        bpe.Tokenizer.train(sample, vocab_size=opts.vocab_size, progress=progress).save(target)
    return bpe.Tokenizer.load(target)


# ---------------------------------------------------------------- prepare
def stdlib_sources(glob):
    """The running Python's standard library: its modules and packages, without site-packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    entries = [p for p in sorted(root.iterdir()) if p.name != "site-packages"]
    return [p for p in entries if (p.match(glob) if p.is_file() else any(p.rglob(glob)))]


def make_recipe(sources, options):
    """Checked options, resolved sources, and the recipe that identifies a dataset (kept in meta.json)."""
    opts = Options(**options)
    if nan := [f.name for f in fields(opts) if f.type is float and math.isnan(getattr(opts, f.name))]:
        raise ValueError(f"--{nan[0].replace('_', '-')} nan: give a number")
    if not opts.tokenizer and not 257 <= opts.vocab_size <= 1 << 16:  # 256 bytes + <|endoftext|>; uint16
        raise ValueError(f"--vocab-size {opts.vocab_size}: need 257 (bytes + <|endoftext|>) to 65,536")
    for ok, need in [
        (0 < opts.valid_share < 1, f"0 < --valid-share < 1 (training validates), got {opts.valid_share}"),
        (1 <= opts.shard_tokens < 1 << 31, f"1 <= --shard-tokens < 2**31, got {opts.shard_tokens}"),
        (opts.tokenizer_sample_mb > 0, f"--tokenizer-sample-mb > 0, got {opts.tokenizer_sample_mb}"),
        (not Path(opts.glob).is_absolute(), f"a --glob relative to each source directory, got {opts.glob}"),
    ]:
        if not ok:
            raise ValueError(f"need {need}")
    # realpath, not Path.resolve: on Python 3.11 a symlink loop raises RuntimeError there, while here it
    # stays a path that read_texts reports as missing.
    sources = [Path(os.path.realpath(s)) for s in sources] if sources else stdlib_sources(opts.glob)
    given, given_sha256 = Path(opts.tokenizer), None
    if opts.tokenizer and given.exists():  # a path, not a tiktoken name ("" is not ".")
        opts.tokenizer = str(given.resolve())
        files = [given] if given.is_file() else [given / name for name in bpe.HF_FILES]
        given_sha256 = file_sha256(*(f for f in files if f.is_file()))  # an edited tokenizer: another recipe
    recipe = {"sources": [str(s) for s in sources], "options": asdict(opts)}
    recipe["tokenizer_source_sha256"] = given_sha256
    return opts, sources, json.loads(json.dumps(recipe))  # tuples become lists, as meta.json gives them back


def dataset_files(out_dir) -> list[Path]:
    patterns = ("meta.json*", "tokenizer.bpe*", "train_??????.bin*", "valid_??????.bin*")
    return [p for pattern in patterns for p in out_dir.glob(pattern)]


def claim_out_dir(out_dir, recipe, overwrite):
    """The meta of a dataset with this recipe already in DIR, to reuse or finish; else None, once DIR may
    take a new one: another dataset is refused, or with --overwrite replaced later (prepare clears it only
    once the new inputs have been read, so a mistake in them costs nothing)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir}: is a file; a dataset is a directory")
    meta_path = out_dir / "meta.json"
    # not the .tmp files a write cut short by a crash leaves: the rerun writes over them
    ours = [p for p in dataset_files(out_dir) if not p.name.endswith(".tmp")]
    # meta.json is written first of all: without it, a tokenizer.bpe is someone else's (a checkpoint's)
    if not meta_path.exists() and (foreign := [p.name for p in ours if not p.name.startswith("meta.json")]):
        raise ValueError(f"--out {out_dir}: holds {foreign[0]} but no meta.json, so it is no dataset of "
                         "data.py's; use another --out")  # fmt: skip
    try:
        old = json.loads(meta_path.read_text()) if meta_path.exists() else None
    except ValueError:
        old = {}  # an unreadable meta.json: some other dataset, never silently reused
    old = old if old is None or isinstance(old, dict) else {}  # JSON, but no meta.json of ours
    if old and isinstance(old.get("options"), dict):  # an option added since: it was its default then
        old["options"] = asdict(Options()) | old["options"]
    if not overwrite and old is not None and {k: old.get(k) for k in recipe} == recipe:
        return old
    if overwrite:
        return None
    if ours and old and old.get("complete") is False:  # e.g. a --vocab-size needing more merges
        raise ValueError(
            f"{out_dir} holds an unfinished prepare made with other sources or options; "
            "pass --overwrite to discard it, or use another --out"
        )
    if ours:
        raise ValueError(
            f"{out_dir} holds a dataset made with other sources or options; "
            "use another --out or pass --overwrite to replace it"
        )
    return None


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


def write_shards(out_dir, sources, opts, flags, tok, progress):
    """Second pass: tokenize the kept documents in batches on all cores and fill the shards of each split.
    (Two passes, because the tokenizer is trained on the first pass's sample before any document can be
    encoded, and the corpus need not fit in memory.)

    Every document is preceded by <|endoftext|> (as llm.c does; the book and the HF course append it,
    the same stream but for its two ends), so the stream is
    eot doc eot doc ... with no padding, and a prompt of one eot asks the model for a fresh file."""
    writers = {s: ShardWriter(out_dir, s, tok.vocab_size, opts.shard_tokens) for s in SPLITS}
    docs, nbytes, batch, batch_bytes = Counter(), Counter(), [], 0
    bar = tqdm(total=sum(map(bool, flags)), desc="tokenize", unit=" docs", disable=None if progress else True)
    texts = read_documents(sources, opts)
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
        if batch_bytes > 8e6:  # ~8 MB per encode_batch: enough to keep every core busy, bounded memory
            encode_into_writers(batch, tok, opts.eot_between)
            batch, batch_bytes = [], 0
    encode_into_writers(batch, tok, opts.eot_between)
    bar.close()
    for w in writers.values():
        w.flush((docs[w.split], 0))
        for stale in set(w.out_dir.glob(f"{w.split}_??????.bin*")) - {w.path(i) for i in range(w.index)}:
            stale.unlink()  # leftovers of an interrupted run
    return {s: [w.path(i).name for i in range(w.index)] for s, w in writers.items()}, docs, nbytes


def encode_into_writers(batch, tok, eot_between=True):
    ids, eot = tok.encode_batch([text for _, _, text in batch]), [tok.eot_token] * eot_between
    for (w, doc, _), doc_ids in zip(batch, ids, strict=True):
        w.add(doc, np.array([*eot, *doc_ids], dtype=np.uint16))


def lock_folder(folder, wait=False):
    """Hold folder/.lock (flock) until the returned file is closed; the kernel drops it when the process
    ends, however it ends. While another process holds it: wait, or raise BlockingIOError. None where
    nothing can be locked (Windows has no flock; Lustre without -o flock or NFS without a lock daemon fail
    with another OSError), after a note."""
    try:
        import fcntl
    except ImportError:
        return None
    lock = open(Path(folder) / ".lock", "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError as e:
        lock.close()
        if isinstance(e, BlockingIOError):
            raise
        print(f"note: {folder} cannot be locked ({e.strerror}); make sure one process at a time writes there")
        return None
    return lock


def wait_for_lock(out_dir, waited=False):
    """The dataset's lock (the folder made if need be), once no other prepare holds it, and whether one
    did: a job script that runs the same prepare on every node before torchrun then builds the dataset
    once, and the other nodes reuse it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = lock_folder(out_dir, wait=waited)
    except BlockingIOError:
        print(f"{out_dir} is in use by another data.py prepare; waiting for it to end", flush=True)
        return wait_for_lock(out_dir, waited=True)
    # A prepare that fails on its inputs removes the folder it made, lock file and all: a lock taken on that
    # file meanwhile guards nothing, so take the new folder's.
    with suppress(FileNotFoundError):
        if lock is None or os.path.samestat(os.fstat(lock.fileno()), os.stat(out_dir / ".lock")):
            return lock, waited
    lock.close()
    return wait_for_lock(out_dir, waited)


def prepare(out_dir, sources=None, *, overwrite=False, progress=True, **options):
    """Build (or finish) the dataset in out_dir from sources; returns its meta dict, also in meta.json:
    the recipe (sources, options, tokenizer_source_sha256), complete, format_version, vocab_size,
    eot_token, tokenizer (file name) and tokenizer_sha256, documents {seen, kept, dropped_<filter>}, read
    {files, bad_json, missing_field, invalid_utf8, first_<problem>: "file:line"}, per split: docs, bytes,
    tokens, shards, bytes_per_token."""
    opts, sources, recipe = make_recipe(sources, options)
    out_dir = Path(out_dir)
    if meta := complete_meta(out_dir, recipe, overwrite):
        return meta
    given = given_tokenizer(opts)  # before anything is written: a bad --tokenizer costs nothing
    made = [p for p in (out_dir, *out_dir.parents) if not p.exists()]  # to remove if the inputs are wrong
    before = meta_stamp(out_dir)
    lock, waited = wait_for_lock(out_dir)
    with lock or nullcontext():
        # another prepare made it while we waited (this command on another node): reused, also with
        # --overwrite, which replaces what was there when this command began, not what its twin just built.
        # A twin that wrote nothing (it failed, or was killed, while reading its inputs) built nothing.
        waited = waited and meta_stamp(out_dir) != before
        if meta := complete_meta(out_dir, recipe, overwrite and not waited, waited):
            return meta
        try:  # read under the lock: the other nodes wait here rather than each reading the whole corpus
            flags, sample, stats, read_stats = scan(sources, opts, progress)
        except BaseException:
            if made:  # a mistake in the inputs leaves nothing behind
                (out_dir / ".lock").unlink(missing_ok=True)
            for folder in made:  # innermost first
                with suppress(OSError):  # not empty after all: keep it, and the error that matters
                    folder.rmdir()
            raise
        if overwrite:
            clear_dataset(out_dir)
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


def clear_dataset(out_dir):
    """Delete the dataset's own files (--out may hold other things). meta.json goes last, first marked
    unfinished with no recipe, so a crash while deleting leaves a folder that --overwrite takes again,
    not one refused as someone else's and never one reused."""
    if (out_dir / "meta.json").is_file():
        write_json(out_dir / "meta.json", {"complete": False})
    for p in sorted(dataset_files(out_dir), key=lambda p: p.name == "meta.json"):
        p.unlink()


def complete_meta(out_dir, recipe, overwrite, waited=False):
    """The meta of a complete dataset with this recipe in out_dir, to reuse; else None."""
    old = claim_out_dir(out_dir, recipe, overwrite)
    if not (old and old.get("complete")):
        return None
    meta = load_meta(out_dir)  # checked as readers check it: version, keys, tokenizer
    how = "was just made by the prepare this one waited for" if waited else "is already complete"
    print(f"{out_dir} {how}; reusing it" + ("" if waited else " (--overwrite starts over)"))
    return meta


def meta_stamp(out_dir):
    """Which meta.json out_dir holds, or None: every prepare writes a new one before its dataset files."""
    with suppress(FileNotFoundError):
        stat = (out_dir / "meta.json").stat()
        return stat.st_ino, stat.st_mtime_ns
    return None


def write_json(path, obj):
    bpe.write_atomic(path, json.dumps(obj, indent=1))


# What readers (inspect, train.py, evaluate.py) take from meta.json, checked once when a dataset is opened.
META_KEYS = ("vocab_size", "tokenizer", "tokenizer_sha256", "documents", "read")
SPLIT_KEYS = ("docs", "tokens", "shards", "bytes_per_token")  # each {"train": ..., "valid": ...}


def load_meta(data_dir):
    """The meta.json of a complete dataset whose tokenizer is the one its shards were made with, or a
    ValueError saying how to make the dataset. The tokenizer is hashed here, at open, so a missing or
    replaced one stops a training run before its first step, not at its first save."""
    path, rebuild = Path(data_dir) / "meta.json", rebuild_hint(data_dir)
    try:
        meta = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):  # NotADirectoryError: data_dir is a file
        hint = f"make it with `python data.py prepare --out {data_dir} --source FILES` (without --source: "
        hint += "from the standard library, as the demo does; the README gives each config's command)"
        raise ValueError(f"{data_dir}: no dataset here (no meta.json); {hint}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{path}: not valid JSON; {rebuild}") from None
    if not isinstance(meta, dict) or not meta.get("complete"):
        raise ValueError(
            f"{data_dir}: dataset is incomplete; re-run the prepare command that made it to finish it "
            "(or --overwrite)"
        )
    if meta.get("format_version") != VERSION:
        found = meta.get("format_version")
        raise ValueError(f"{data_dir}: dataset format version {found}, this code reads {VERSION}; {rebuild}")
    lacking = [k for k in META_KEYS if k not in meta] + [
        f"{k}.{s}" if isinstance(meta.get(k), dict) else k
        for k in SPLIT_KEYS
        for s in SPLITS
        if not isinstance(meta.get(k), dict) or s not in meta[k]
    ]
    if lacking:
        raise ValueError(f"{path} lacks {lacking[0]!r}; {rebuild}")
    if type(meta["vocab_size"]) is not int or not 0 < meta["vocab_size"] <= 1 << 16:  # a hand edit, say
        raise ValueError(f"{path}: vocab_size {meta['vocab_size']!r} is not a uint16 vocabulary's; {rebuild}")
    tokenizer = Path(data_dir) / meta["tokenizer"]
    if not tokenizer.is_file():
        raise ValueError(f"{data_dir} has no {meta['tokenizer']}; restore it or {rebuild}")
    if file_sha256(tokenizer) != meta["tokenizer_sha256"]:
        raise ValueError(
            f"{tokenizer} differs from the one the shards were made with (sha256 in meta.json); "
            f"restore it or {rebuild}"
        )
    return meta


# ---------------------------------------------------------------- loading
def open_shards(paths, what):
    """Memory-map a split's shards. Each map keeps a file descriptor, and ~100B tokens are 1,000 shards a
    split, past the usual soft limit of 1,024: raise that limit as far as the hard one lets, as `ulimit -n`
    would, and if the shards still do not fit, say what to raise rather than fail with a bare EMFILE."""
    need = len(paths) + 256  # headroom for the rest of the process: the other split, torch, NCCL's sockets
    raise_open_file_limit(need)
    try:
        return [open_shard(path) for path in paths]
    except OSError as e:
        if e.errno != errno.EMFILE:
            raise
        raise ValueError(
            f"{what}, each an open file: raise `ulimit -n` to {need}, or prepare with a larger --shard-tokens"
        ) from None


def raise_open_file_limit(need):
    """The soft open-file limit up to `need`, within the hard one: a hard limit below `need` may still hold
    the shards, so it is no reason to refuse them."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
    with suppress(ValueError, OSError):  # macOS refuses more than OPEN_MAX even under an unlimited hard one
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class TokenStream:
    """The shards of one split seen as one array of tokens, read through memory maps."""

    def __init__(self, data_dir, split):
        meta = load_meta(data_dir)
        self.data_dir, self.vocab_size = data_dir, meta["vocab_size"]
        self.paths = [Path(data_dir) / name for name in meta["shards"][split]]
        self.shards = open_shards(self.paths, f"{data_dir}: {len(self.paths)} {split} shards")
        self.ends = np.cumsum([len(s) for s in self.shards], dtype=np.int64)
        self.n_tokens = int(self.ends[-1]) if self.shards else 0

    def windows(self, ids, length):
        """Windows number `ids` of `length` tokens as a (len(ids), length) uint16 array.

        Windows cross shard boundaries, so the split is one stream and nothing is lost at shard ends."""
        out = np.empty((len(ids), length), np.uint16)
        for row, window in zip(out, ids, strict=True):
            start, pos = int(window) * length, 0  # int: the Loader's ids may be uint8, where this wraps
            i = int(np.searchsorted(self.ends, start, side="right"))
            while pos < length:
                lo = start + pos - (int(self.ends[i]) - len(self.shards[i]))
                take = min(length - pos, len(self.shards[i]) - lo)
                piece = row[pos : pos + take]
                piece[:] = self.shards[i][lo : lo + take]
                if piece.max(initial=0) >= self.vocab_size:  # a corrupt shard, not an IndexError mid-run
                    raise ValueError(
                        f"{self.paths[i]}: token {piece.max()} >= vocab_size {self.vocab_size}: corrupt "
                        f"shard; {rebuild_hint(self.data_dir)}"
                    )
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
    the next G = batch_size * grad_accum * world_size windows; micro-step a of rank r takes the
    batch_size of them that start at (r * grad_accum + a) * batch_size. So a step is the same set of
    windows for any split between processes and accumulation, steps may straddle epochs, and no window
    is ever dropped."""

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
        if epoch not in self.perms:  # a rank's positions only grow, so no earlier epoch is asked for again
            self.perms.clear()  # before the next is made: two at once would double the peak
            # permutation(n)'s order (it shuffles an arange) in the smallest dtype that holds the ids: at
            # most 4 bytes a window, not 8; 137 MB a rank for 35B tokens at context 1,024 (1.1 GB at 128)
            ids = np.arange(self.n_windows, dtype=np.min_scalar_type(self.n_windows))
            np.random.default_rng([self.seed, epoch]).shuffle(ids)
            self.perms[epoch] = ids
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


def val_windows(data_dir, n_tokens, context, max_tokens, rank=0, world_size=1):
    """This rank's fixed validation windows: spread evenly over the n_tokens of data_dir's valid split,
    within max_tokens of input.

    Each rank gets every world_size-th window, so ranks are disjoint and get the same number of
    batches of the same sizes (collective calls in evaluation then line up)."""
    n = n_tokens // (context + 1)
    use = min(n, max(world_size, max_tokens // context))
    use -= use % world_size
    if use == 0:
        raise ValueError(
            f"{data_dir}: the valid split has {n} windows of {context + 1} tokens, fewer than "
            f"the {world_size} rank(s); use a smaller context or a larger --valid-share"
        )
    return (np.arange(use) * n // use)[rank::world_size]


def val_batches(data_dir, batch_size, context, max_tokens, rank=0, world_size=1, device="cpu"):
    """The batches (x, y) of val_windows, in order."""
    stream = TokenStream(data_dir, "valid")
    mine = val_windows(data_dir, stream.n_tokens, context, max_tokens, rank, world_size)
    return (
        to_batch(stream.windows(mine[i : i + batch_size], context + 1), device)
        for i in range(0, len(mine), batch_size)
    )


# ---------------------------------------------------------------- command line
ANALYSIS_TOKENS = 2_000_000  # enough held-out code for the tokenizer analysis, quick to decode


def inspect(data_dir, tokens=200, seed=None):
    """The dataset's counts, a random train window decoded back to text, and the book's tokenizer
    analysis measured on held-out code: the first documents of the valid split, decoded."""
    if tokens < 1:
        raise ValueError(f"--tokens {tokens}: need at least 1")
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
    held_out = valid.windows([0], min(ANALYSIS_TOKENS, valid.n_tokens))[0].tolist()
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
    notes = field_comments(Options)
    for field, value in asdict(Options()).items():  # one flag per Options field
        if field == "keywords":  # added above: a comma-separated list
            continue
        if isinstance(value, bool):
            kind, shown = {"action": argparse.BooleanOptionalAction}, "on" if value else "off"
        else:
            kind, shown = {"type": type(value)}, repr(value) if value != "" else "train one"  # --tokenizer
        flag = "--" + field.replace("_", "-")
        p.add_argument(flag, **kind, default=value, help=f"{notes[field]} (default: {shown})")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset made with other options")
    i = commands.add_parser(
        "inspect", help="counts, a random window decoded back to text, the tokenizer on held-out code"
    )
    i.add_argument("dir", help="a dataset folder made by prepare")
    i.add_argument("--tokens", type=int, default=200, help="length of the window shown (default: 200)")
    i.add_argument("--seed", type=int, default=None, help="picks the window (default: a new one each time)")
    args = vars(parser.parse_args(argv))
    if args.pop("command") == "inspect":
        inspect(args["dir"], args["tokens"], args["seed"])
        return
    if "" in (args["out"], *(args["source"] or ())):  # an unset shell variable: not the current folder
        raise ValueError("--out and --source need a path, not an empty string")
    meta = prepare(args.pop("out"), args.pop("source"), overwrite=args.pop("overwrite"), **args)
    print(f"read: {bpe.describe_read(Counter(meta['read']))}")
    for key in ("documents", "tokens", "bytes_per_token"):
        print(f"{key}: {meta[key]}")


if __name__ == "__main__":
    bpe.run_cli(main)
