"""The tokenizer stage: a byte-level BPE trained on the code corpus (book ch.10), used by data.py.

Data flow:  files --read_texts--> documents (str) --regex pre-tokenizer--> word counts
            --incremental merges--> ranks {token bytes: id} --> tokenizer.bpe (JSON)
            text --tiktoken.Encoding built from the ranks--> token ids (data.py, sample.py)

Why train our own: GPT-2's vocabulary was learned on web text and has no tokens for runs of spaces, so
each space of indentation costs a token (the book's example: 'Ċ', 'Ġ', 'Ġ', 'Ġ', 'Ġprint'). A
vocabulary learned on Python gives indentation and common identifiers tokens of their own and about
halves the sequence length (book ch.10), which doubles the context the model sees for the same compute.

Byte-level (GPT-2): the 256 byte values are the base vocabulary, so any string is encodable and no
token is ever unknown. In a tokenizer trained here ids 0..255 are the bytes, 256.. the merges in the
order learned, then the special tokens (`<|endoftext|>` separates documents); loaded tokenizers keep
their own ids. Lone surrogates (no UTF-8 form) become U+FFFD.
A tokenizer also goes out to and comes back from tiktoken's ranks files and HF's vocab.json + merges.txt
(what GPT-2 folders on the hub hold), so existing GPT-2 tokenizers load too.

Known divergence: the `regex` package (training, encode_reference) knows newer Unicode than the Rust
regex inside tiktoken (encode): ~4,600 letters assigned in Unicode 16-17 (e.g. U+0C5C, CJK extension J)
are letters to the first only, so text holding them may split, hence encode, differently.
"""

import argparse
import base64
import errno
import gzip
import heapq
import io
import json
import keyword
import math
import os
import re
import signal
import sys
import threading
import zlib
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from multiprocessing import get_context
from pathlib import Path

import regex
import tiktoken
from tqdm import tqdm

# GPT-2's pre-tokenizer (also HF's ByteLevel one): a leading space sticks to the next word, and a run of
# whitespace before a word is one piece except its last space, which joins the word
# ("\n        print" -> "\n       ", " print"): indentation stays a piece of its own.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# GPT-4's (cl100k): case-insensitive contractions, numbers in groups of at most 3 digits.
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
PATTERNS = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}
EOT = "<|endoftext|>"
HF_FILES = ("vocab.json", "merges.txt")  # an HF GPT-2 tokenizer folder's, read by from_hf, written by save_hf
JSON_LINES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")  # one document a line, as codeparrot's files

# --------------------------------------------------------------------------------------------- reading


def read_texts(paths, glob="*.py", field="content", stats=None) -> Iterator[str]:
    """Documents one by one from directories, JSON Lines files or text files (never the whole corpus).
    Paths are checked now, so a typo fails before hours of work, not in the middle (hence a plain
    function handing over to a generator: a generator's body would run only at the first next())."""
    files = []
    for path in [Path(paths)] if isinstance(paths, str | os.PathLike) else map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob(glob) if p.is_file())  # sorted: same order on every OS
            if not found:  # codeparrot's download is a folder of .json.gz files: say how to read it
                lines = [p for p in path.iterdir() if p.name.endswith(JSON_LINES)]
                fix = f", or its JSON Lines files: {path}/*{''.join(lines[0].suffixes)}" if lines else ""
                raise ValueError(
                    f"{path}: no file matching {glob!r} in this directory; pass another path{fix}"
                )
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"{path}: no such file or directory; check the path")
    return _read_files(files, field, Counter() if stats is None else stats)


def _read_files(files: list[Path], field: str, stats) -> Iterator[str]:
    read = 0
    for file in files:
        stats["files"] += 1
        if file.name.endswith(JSON_LINES):
            for text in _read_jsonl(file, field, stats):
                read += 1
                yield text
        else:
            read += 1
            yield _decode(file.read_bytes(), file, 1, stats)
    if not read and stats["missing_field"]:  # records of another dataset's shape: say which field is missing
        file = stats["first_missing_field"].rpartition(":")[0]
        raise ValueError(f"{file}: no record has field {field!r} ({stats['missing_field']} skipped); "
                         "data.py prepare reads another with --field NAME")  # fmt: skip


def _decode(data: bytes, file, line: int, stats) -> str:
    """UTF-8 text; invalid bytes become U+FFFD and are counted, so a bad file never stops a long run."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad_line = line + data[: e.start].count(b"\n")
        _count(stats, "invalid_utf8", f"{file}:{bad_line}")
        return data.decode("utf-8", errors="replace")


def _count(stats, key, where):
    """Count a problem and remember where it first happened, for a message the user can act on."""
    stats[key] += 1
    stats.setdefault(f"first_{key}", where)


def _read_jsonl(file: Path, field: str, stats) -> Iterator[str]:
    try:
        yield from _jsonl_records(file, field, stats)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:  # a download cut short, a damaged archive
        raise ValueError(f"{file}: corrupt or truncated gzip ({e}); fetch the file again") from None


def _jsonl_records(file: Path, field: str, stats) -> Iterator[str]:
    with gzip.open(file) if file.suffix == ".gz" else open(file, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if lineno == 1 and line.lstrip().startswith(b"["):  # read by lines it would be mostly skipped
                raise ValueError(f"{file}: a JSON array, not JSON Lines (one object a line); convert it, "
                                 "e.g. with `jq -c '.[]'`")  # fmt: skip
            try:
                record = json.loads(_decode(line, file, lineno, stats))
            except ValueError:
                _count(stats, "bad_json", f"{file}:{lineno}")
                continue
            text = record.get(field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                _count(stats, "missing_field", f"{file}:{lineno}")
                continue
            clean = _no_surrogates(text)  # JSON may escape half an emoji ("\ud83d"): no UTF-8 form
            if clean is not text:
                _count(stats, "invalid_utf8", f"{file}:{lineno}")
            yield clean


# ------------------------------------------------------------------------------------------- training

# HF's BpeTrainer numbers its 256 byte symbols in the code-point order of GPT-2's printable stand-ins
# (bytes_to_unicode: printable bytes keep their code point, the 68 others become U+0100..U+0143).
# Training on ids in that order makes our tie rule pick exactly the merge HF picks.
_PRINTABLE = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
HF_BYTE_ORDER = _PRINTABLE + [b for b in range(256) if b not in _PRINTABLE]
_TO_HF_ORDER = bytes(HF_BYTE_ORDER.index(b) for b in range(256))  # for bytes.translate
BYTE_TO_UNICODE = {b: chr(b) for b in _PRINTABLE} | {
    b: chr(256 + i) for i, b in enumerate(HF_BYTE_ORDER[len(_PRINTABLE) :])
}


# On ASCII text GPT-2's pattern reduces to ASCII classes (`regex`'s \s is these 6 characters there), and
# the stdlib `re` runs that ~2.5x faster; str.isascii() is O(1) and most code is ASCII. Tests check that
# both split alike.
_WS = r"\t\n\x0b\x0c\r "
GPT2_ASCII = re.compile(
    rf"""'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]+| ?[0-9]+| ?[^{_WS}A-Za-z0-9]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+"""
)


def _set_pattern(pattern: str):
    # per-worker globals, set once by the Pool's initializer rather than sent along with every chunk
    global _pattern, _ascii_fast_path
    _pattern, _ascii_fast_path = regex.compile(pattern), pattern == GPT2_PATTERN


def _count_words(texts: list[str]) -> Counter:
    counts = Counter()
    for text in texts:
        counts.update((GPT2_ASCII if _ascii_fast_path and text.isascii() else _pattern).findall(text))
    return counts


def count_words(texts: Iterable[str], pattern: str, processes: int, progress: bool) -> Counter:
    """Pre-tokenize the stream on all cores; keep only distinct words."""
    words = Counter()
    with tqdm(desc="pre-tokenize", unit="char", unit_scale=True, disable=not progress) as bar:
        for chunk, counts in in_workers(_count_words, texts, processes, _set_pattern, (pattern,)):
            words.update(counts)
            bar.update(sum(map(len, chunk)))
    return words


CHUNK_CHARS = 1 << 20  # per task sent to a worker: large enough to amortise the pickling
# The pools below fork while a progress bar runs, and tqdm's monitor thread would make that a fork of a
# multi-threaded process, which can deadlock the child (Python 3.12+ warns). Our bars update often enough.
tqdm.monitor_interval = 0


def in_workers(fn, texts: Iterable[str], processes: int, setup=None, args=()) -> Iterator[tuple]:
    """(chunk, fn(chunk)) for the stream cut into chunks of ~1M characters, computed in `processes` worker
    processes and yielded in order; a few chunks in flight: bounded memory, unlike Pool.imap, which reads
    ahead. setup(*args) runs once in each worker (data that every chunk would otherwise carry along)."""
    # fork: workers start in milliseconds with the module already imported (spawn would re-import it).
    # exit_on_sigterm comes last, after the fork: the workers keep the default SIGTERM, which Pool's exit
    # sends them, and so end quietly.
    with get_context("fork").Pool(processes, _start_worker, (setup, args)) as pool, exit_on_sigterm():
        pending = deque()
        for chunk in _chunks(texts, CHUNK_CHARS):
            pending.append((chunk, pool.apply_async(fn, (chunk,))))
            if len(pending) > 2 * processes:
                chunk, result = pending.popleft()
                yield chunk, result.get()
        for chunk, result in pending:
            yield chunk, result.get()


def _start_worker(setup, args):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: no worker tracebacks
    if setup:
        setup(*args)


@contextmanager
def exit_on_sigterm():
    """SIGTERM exits through the `with` blocks while this one runs, so Pool's __exit__ ends the workers.
    Killed outright, this process would leave them sending their counts into its closed pipe, each
    printing a BrokenPipeError traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python lets only the main thread set a handler: Tokenizer.train works from any thread
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk, n = [], 0
    for text in texts:
        chunk.append(text)
        n += len(text)
        if n >= size:
            yield chunk
            chunk, n = [], 0
    if chunk:
        yield chunk


def learn_merges(words: dict[bytes, int], n_merges: int, min_frequency: int, progress: bool) -> list[tuple]:
    """The BPE merge loop: repeatedly fuse the most frequent adjacent pair, updating counts incrementally.

    Each distinct word is a list of ids with its frequency. pair_counts holds the total count of every
    adjacent pair, `where` the words holding it, a heap the best pair. Merging (a, b) into `new` visits
    only the words in where[(a, b)] and only the neighbours of each occurrence: x a b y loses (x, a) and
    (b, y) and gains (x, new) and (new, y). Those fallen counts stay stale in the heap and are fixed
    when popped (lazy invalidation); the gained pairs all contain `new` and are pushed.
    Speed: a pair (a, b) is the int a << 20 | b and a heap entry the int -count << 40 | pair, because
    hashing and comparing one int is several times cheaper than a tuple.

    Tie rule (HF BpeTrainer's): highest count, then the smallest pair of ids (ids of the bytes in
    HF_BYTE_ORDER, merges numbered as created). Counts are Python ints: on big code corpora the pair
    (space, space) occurs more than 2**31 times, which overflows the i32 counters of some trainers.
    """
    seqs = [list(w.translate(_TO_HF_ORDER)) for w in words if len(w) > 1]  # a lone byte has no pair
    freqs = [n for w, n in words.items() if len(w) > 1]
    pair_counts = defaultdict(int)
    where = defaultdict(list)  # pair -> words that may hold it; a stale or repeated entry costs a no-op visit
    for i, (seq, freq) in enumerate(zip(seqs, freqs, strict=True)):
        for a, b in pairwise(seq):
            pair_counts[a << 20 | b] += freq
            where[a << 20 | b].append(i)
    heap = [-count << 40 | pair for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    merges = []
    bar = tqdm(total=n_merges, desc="merge", unit="merge", disable=not progress)
    while len(merges) < n_merges and heap:
        entry = heapq.heappop(heap)
        pair, count = entry & (1 << 40) - 1, -(entry >> 40)
        if count != pair_counts[pair]:  # stale entry: requeue at the current count
            if pair_counts[pair] > 0:
                heapq.heappush(heap, -pair_counts[pair] << 40 | pair)
            continue
        if count < min_frequency:
            break
        a, b, new = pair >> 20, pair & (1 << 20) - 1, 256 + len(merges)
        merges.append((a, b))
        gained = set()
        for i in where.pop(pair):
            seq, freq = seqs[i], freqs[i]
            k = 0
            while True:
                try:
                    k = seq.index(a, k)  # scanning in C
                except ValueError:
                    break
                if k + 1 < len(seq) and seq[k + 1] == b:
                    if k > 0:
                        x = seq[k - 1] << 20
                        pair_counts[x | a] -= freq
                        p = x | new
                        pair_counts[p] += freq
                        gained.add(p)
                        where[p].append(i)
                    if k + 2 < len(seq):
                        y = seq[k + 2]
                        pair_counts[b << 20 | y] -= freq
                        p = new << 20 | y
                        pair_counts[p] += freq
                        gained.add(p)
                        where[p].append(i)
                    seq[k : k + 2] = (new,)
                k += 1
        pair_counts[pair] = 0  # every occurrence is merged (left to right, so a a a -> new a)
        for p in gained:
            if pair_counts[p] > 0:
                heapq.heappush(heap, -pair_counts[p] << 40 | p)
        bar.update()
    bar.close()
    return merges


# ------------------------------------------------------------------------------------------ tokenizer


class Tokenizer:
    """Ranks {token bytes: id} + pre-tokenizer pattern + special tokens; encodes with tiktoken."""

    def __init__(self, ranks: dict[bytes, int], pattern=GPT2_PATTERN, special_tokens=None):
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:  # tiktoken would panic on the first text that needs one
            raise ValueError(f"lacks {len(missing)} of the 256 single-byte tokens: not a byte-level BPE")
        if len(set(ranks.values())) != len(ranks) or b"" in ranks:
            raise ValueError("two tokens share a rank, or a token is empty")
        self.ranks = ranks
        self.pattern = pattern
        self.special_tokens = dict(special_tokens or {})
        ids = [*ranks.values(), *self.special_tokens.values()]
        if not all(isinstance(i, int) and 0 <= i < 1 << 32 for i in ids):
            raise ValueError("token ids must be integers from 0 to 2**32 - 1 (tiktoken's ranks are u32)")
        self._bytes = {i: t for t, i in ranks.items()} | {
            i: s.encode() for s, i in self.special_tokens.items()
        }
        self._regex = regex.compile(pattern)
        self._tiktoken = tiktoken.Encoding(
            "bpe.py", pat_str=pattern, mergeable_ranks=ranks, special_tokens=self.special_tokens
        )

    @classmethod
    def train(
        cls, texts, vocab_size=32768, pattern=GPT2_PATTERN, min_frequency=2, special_tokens=(EOT,),
        processes=None, progress=True,
    ) -> "Tokenizer":  # fmt: skip
        """Learn vocab_size - 256 - len(special_tokens) merges from a stream of documents. Pairs seen
        fewer than min_frequency times are never merged; if that leaves too few merges, ValueError
        rather than a silently smaller vocabulary than asked for."""
        n_merges = vocab_size - 256 - len(special_tokens)
        if not 0 <= n_merges <= (1 << 20) - 256:  # merged ids (256 + i) must fit learn_merges' 20 bits
            need = 256 + len(special_tokens)
            raise ValueError(f"vocab_size {vocab_size} is out of range: bytes and special tokens need "
                             f"{need}, and merges may number at most {(1 << 20) - 256}")  # fmt: skip
        # Train on the text encode will see: lone surrogates as U+FFFD, or their tokens are never used.
        words = count_words(map(_no_surrogates, texts), pattern, processes or os.cpu_count(), progress)
        if not words:
            raise ValueError("the corpus is empty: no text to train on; check the input paths")
        words = {w.encode("utf-8"): n for w, n in words.items()}
        merges = learn_merges(words, n_merges, min_frequency, progress)
        if len(merges) < n_merges:
            raise ValueError(
                f"the corpus only supports {len(merges)} merges of frequency >= {min_frequency}: "
                f"use a vocab_size <= {256 + len(merges) + len(special_tokens)} or more text"
            )
        # learn_merges numbered the bytes in HF_BYTE_ORDER: tokens[i] is the bytes of its id i. In the ranks
        # each byte gets its own value as id again; merges keep theirs.
        tokens = [bytes([b]) for b in HF_BYTE_ORDER]
        for a, b in merges:
            tokens.append(tokens[a] + tokens[b])
        ranks = {bytes([b]): b for b in range(256)} | {t: 256 + i for i, t in enumerate(tokens[256:])}
        return cls(ranks, pattern, {s: 256 + len(merges) + i for i, s in enumerate(special_tokens)})

    @property
    def vocab_size(self) -> int:
        return max(self._bytes) + 1

    @property
    def eot_token(self) -> int:
        if EOT not in self.special_tokens:
            raise ValueError(f"this tokenizer has no {EOT} special token")
        return self.special_tokens[EOT]

    def encode(self, text: str, allowed_special=()) -> list[int]:
        """Special-token text is plain text unless allowed ("all" or a set), unlike tiktoken's default."""
        allowed = allowed_special if allowed_special == "all" else set(allowed_special)
        return self._tiktoken.encode(text, allowed_special=allowed, disallowed_special=())

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._tiktoken.encode_ordinary_batch(texts, num_threads=os.cpu_count())

    def encode_reference(self, text: str) -> list[int]:
        """GPT-2's encoder in a few lines: split by the pattern, then BPE each piece (no special tokens)."""
        pieces = self._regex.findall(_no_surrogates(text))
        return [self.ranks[part] for piece in pieces for part in self._bpe(piece.encode())]

    def _bpe(self, piece: bytes, max_rank=math.inf) -> list[bytes]:
        """Merge the adjacent pair whose concatenation has the lowest rank (= was learned first), the
        leftmost on ties as tiktoken does, until no concatenation is a token of rank < max_rank."""
        parts = [bytes([b]) for b in piece]
        while len(parts) > 1:
            pair_ranks = [self.ranks.get(x + y, max_rank) for x, y in pairwise(parts)]
            i = min(range(len(pair_ranks)), key=pair_ranks.__getitem__)
            if pair_ranks[i] >= max_rank:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        return parts

    def decode_bytes(self, ids) -> bytes:
        try:
            return b"".join(self._bytes[i] for i in ids)
        except KeyError as e:
            raise ValueError(f"token id {e} is not in the vocabulary (size {self.vocab_size})") from None

    def decode(self, ids) -> str:
        """Ids that split a UTF-8 character decode to U+FFFD rather than raising (a sampler emits those)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ------------------------------------------------------------------------------------------ files

    def save(self, path):
        """One JSON file: pattern, special tokens and {base64(token): rank} (bytes are not JSON text)."""
        ranks = {base64.b64encode(t).decode(): r for t, r in sorted(self.ranks.items(), key=lambda x: x[1])}
        data = {"pattern": self.pattern, "special_tokens": self.special_tokens, "ranks": ranks}
        write_atomic(path, json.dumps(data, indent=0, ensure_ascii=False))

    @classmethod
    def load(cls, path) -> "Tokenizer":
        """Our JSON file, a tiktoken ranks file ("base64 rank" lines, taken with GPT-2's pattern and
        <|endoftext|> after the last rank), or a folder holding HF's vocab.json + merges.txt."""
        if Path(path).is_dir():
            return cls.from_hf(path)
        text = Path(path).read_bytes().decode("utf-8", errors="replace")
        try:
            if text.startswith("{"):
                data = json.loads(text)
                ranks = {base64.b64decode(t, validate=True): r for t, r in data["ranks"].items()}
                return cls(ranks, data["pattern"], data["special_tokens"])
            lines = (line.split() for line in text.splitlines())
            ranks = {base64.b64decode(t, validate=True): int(r) for t, r in lines}
            return cls(ranks, GPT2_PATTERN, {EOT: max(ranks.values()) + 1})
        except (ValueError, KeyError, TypeError, AttributeError, regex.error) as e:
            raise ValueError(
                f"{path}: not a usable bpe.py tokenizer or tiktoken ranks file ({type(e).__name__}: {e})"
            ) from None

    @classmethod
    def from_hf(cls, folder) -> "Tokenizer":
        """GPT-2's vocab.json {token in printable stand-ins: id} + merges.txt, as HF GPT-2 folders (and
        save_hf) hold them. The ids become tiktoken's ranks, so each merge must make a higher id than the
        merges before it, as BPE trainers number them; what is neither a byte nor a merge is special."""
        vocab_file, merges_file = (Path(folder) / name for name in HF_FILES)
        from_stand_ins = {c: b for b, c in BYTE_TO_UNICODE.items()}
        try:
            vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
            lines = merges_file.read_text(encoding="utf-8").splitlines()
            merged = ["".join(line.split(" ")) for line in lines if line and not line.startswith("#version")]
            ids = [vocab[token] for token in merged]
            regular = set(BYTE_TO_UNICODE.values()) | set(merged)
            ranks = {bytes(from_stand_ins[c] for c in t): i for t, i in vocab.items() if t in regular}
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:  # JSONDecodeError: ValueError
            problem = f"{type(e).__name__}: {e}"
            raise ValueError(f"{folder}: no usable vocab.json + merges.txt ({problem})") from None
        if any(a >= b for a, b in pairwise(ids)):
            raise ValueError(f"{folder}: vocab.json's ids must rise in merges.txt's order (tiktoken's ranks)")
        return cls(ranks, GPT2_PATTERN, {t: i for t, i in vocab.items() if t not in regular})

    @classmethod
    def open(cls, name) -> "Tokenizer":
        """A tokenizer by path (load), or else a tiktoken encoding by name ("gpt2")."""
        return cls.load(name) if Path(name).exists() else cls.from_tiktoken(name)

    @classmethod
    def from_tiktoken(cls, name: str) -> "Tokenizer":
        known = tiktoken.list_encoding_names()
        if name not in known:  # a mistyped file path ends up here too (open)
            raise ValueError(
                f"tiktoken cannot load {name!r}: no such file, nor a tiktoken encoding: {', '.join(known)}"
            )
        try:
            enc = tiktoken.get_encoding(name)
        except Exception as e:  # offline, tiktoken raises whatever its HTTP client raises
            raise ValueError(
                f"tiktoken cannot load {name!r} ({type(e).__name__}): it downloads the ranks once, so it "
                "needs network access or a filled TIKTOKEN_CACHE_DIR"
            ) from None
        return cls(enc._mergeable_ranks, enc._pat_str, enc._special_tokens)

    def merges(self) -> list[tuple[bytes, bytes]]:
        """The merge that made each multi-byte token, in rank order: BPE of the token's bytes with the
        lower ranks only stops at the two parts it was made of (ranks files store no merges)."""
        out = []
        for token in sorted(self.ranks, key=self.ranks.get):
            if len(token) > 1:
                parts = self._bpe(token, self.ranks[token])
                if len(parts) != 2:
                    raise ValueError(f"token {token!r} is not a merge of two lower-ranked tokens")
                out.append((parts[0], parts[1]))
        return out

    def save_tiktoken(self, path):
        """tiktoken's ranks format: one "base64(token) rank" line per token, no pattern, no specials."""
        ranks = sorted(self.ranks.items(), key=lambda x: x[1])
        write_atomic(path, "".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks))

    def save_hf(self, out_dir):
        """GPT-2's vocab.json + merges.txt (each byte written as its printable stand-in), which HF's
        GPT2TokenizerFast loads. HF's ByteLevel pre-tokenizer always splits with GPT-2's pattern."""
        if self.pattern != GPT2_PATTERN:
            raise ValueError("vocab.json + merges.txt imply GPT-2's pattern; train with --pattern gpt2")

        def show(token):  # bytes -> GPT-2's printable stand-ins, as vocab.json and merges.txt spell them
            return "".join(BYTE_TO_UNICODE[b] for b in token)

        vocab = {show(t): r for t, r in self.ranks.items()} | self.special_tokens
        # merges first: a ranks file with a token that is no merge is refused before anything is written,
        # rather than after a new vocab.json has replaced the one beside an old merges.txt
        merges = "".join(f"{show(a)} {show(b)}\n" for a, b in self.merges())
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        vocab_file, merges_file = (Path(out_dir) / name for name in HF_FILES)
        write_atomic(vocab_file, json.dumps(vocab, ensure_ascii=False))
        write_atomic(merges_file, "#version: 0.2\n" + merges)


def _no_surrogates(text: str) -> str:
    """Lone surrogates (e.g. from os.fsdecode) have no UTF-8 form: they become U+FFFD, as tiktoken does."""
    if text.isascii():  # most source code: no copy made to find out
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def write_atomic(path, data: str | bytes):
    """Write through `<path>.tmp` and a rename, so nobody ever reads half a file (the project's one writer
    of small files: tokenizers, meta.json, `latest`, metrics, results)."""
    tmp = Path(f"{path}.tmp")
    try:
        tmp.write_bytes(data) if isinstance(data, bytes) else tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when writing failed


def check_out_file(flag, path):
    """Refuse, before the work, an output file write_atomic cannot write, naming it as the user typed it."""
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise ValueError(f"{flag} {path}: its directory does not exist; create it first")
    if Path(path).is_dir():
        raise ValueError(f"{flag} {path}: is a directory; give a file name")
    if not os.access(folder, os.W_OK):  # else found out only after the work, writing `<path>.tmp`
        raise ValueError(f"{flag} {path}: its directory is not writable; choose another place")


# ---------------------------------------------------------------------------------------- command line
def run_cli(main):
    """Every script's entry point (bpe, data, train, sample, evaluate): a user's mistake, raised as a
    ValueError, OSError or MemoryError, ends in one line and exit 2; Ctrl-C in one line, and then as
    Ctrl-C ends a program (die_of); output piped into a reader that stops early (`| head`) ends quietly,
    as in `cat`."""
    # Completions and decoded code may hold any character: where stdout's encoding lacks one (a latin-1
    # or ASCII terminal), it is printed as an escape instead of ending the command.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        main()
        # Flushed here, not at exit: a short output waits in stdout's buffer when it is a pipe (unless
        # PYTHONUNBUFFERED), and at exit a reader already gone would end the process with status 0 or 120.
        if sys.stdout is not None:  # None when started with stdout closed (`>&-`)
            sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the last flush has nowhere to go
        die_of(signal.SIGPIPE)
    except (ValueError, OSError, MemoryError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not out_of_memory(e):  # any other is a bug: show where
            raise
        print(f"error: {explain(e)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        die_of(signal.SIGINT)


def out_of_memory(error) -> bool:
    """Python's and numpy's MemoryError, torch's OutOfMemoryError (CUDA; known by name, as this file does
    not import torch), and torch's failed CPU allocation, which is a plain RuntimeError."""
    return (
        isinstance(error, MemoryError)
        or type(error).__name__ == "OutOfMemoryError"
        or "DefaultCPUAllocator: can't allocate memory" in str(error)
    )


def explain(error) -> str:
    """The error's own words, plus what to do where they name no file: torch, numpy and file writes
    raise a full disk, a file-size limit (`ulimit -f`) and a failed allocation bare."""
    if out_of_memory(error):  # MemoryError() says nothing, numpy's how much it wanted; torch's run on
        said = f" ({error})" if isinstance(error, MemoryError) and str(error) else ""
        less = "fewer samples, a smaller sample or batch; train.py: a smaller batch_size, larger grad_accum"
        return f"out of memory{said}: ask for less at once ({less}, or checkpointing=True)"
    hint = {
        errno.ENOSPC: ": free some space, then run the command again (train.py: with --resume)",
        errno.EFBIG: ": a file outgrew the size limit; raise `ulimit -f`, or write to another filesystem",
    }.get(getattr(error, "errno", None), "")
    return f"{error}{hint}"


def die_of(signum):
    """End as a process the signal killed (the shell shows 128 + signum). A mere exit(130) is not the
    same: bash stops its own script or loop after a Ctrl-C only if the child died of it."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


# The book's example, so that our tokens can be set beside its GPT-2 and CodeParrot tokenizations.
SNIPPET = 'def say_hello():\n    print("Hello, World!")\n\n# Print it\nsay_hello()\n'


def report(path, texts, source, compare=None):
    """The book's analysis of a vocabulary: compression on `texts` (a list of documents, held-out code at
    best; `source` says what they are), keywords, first and last merges, a tokenized snippet."""
    tok = Tokenizer.load(path)
    others = [(path, tok)]
    if compare:  # loaded before any output, so a bad --compare is one line
        other = Tokenizer.open(compare)
        others.append((compare, other))
    merged = sorted((t for t in tok.ranks if len(t) > 1), key=tok.ranks.get)

    def show(tokens):
        return " ".join(repr(t.decode(errors="replace")) for t in tokens)

    missing = [k for k in keyword.kwlist if k.encode() not in tok.ranks]
    print(f"{path}: vocab_size {tok.vocab_size}, special tokens {tok.special_tokens}")
    print(f"Python keywords that are not one token: {missing or 'none'}")
    print(f"first merges: {show(merged[:12])}\nlast merges: {show(merged[-12:])}")
    print(f"longest tokens: {show(sorted(merged, key=len)[-6:])}")
    chars = sum(map(len, texts))
    for name, t in others:
        tokens = sum(map(len, t.encode_batch(texts)))
        print(f"{name}: {chars / max(tokens, 1):.3f} chars per token on {source}")
        print("  " + "|".join(t.decode([i]) for i in t.encode(SNIPPET)).replace("\n", "\\n"))


def first_mb(texts: Iterable[str], max_mb: float) -> list[str]:
    """The leading documents of `texts` up to about max_mb million characters."""
    return next(_chunks(texts, max_mb * 1e6), [])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="learn a vocabulary from files")
    train.add_argument("--input", nargs="+", required=True, help="dirs (*.py), .jsonl[.gz], text files")
    train.add_argument(
        "--vocab-size", type=int, default=32768, help="incl. <|endoftext|> (default: the book's 32768)"
    )
    train.add_argument("--out", required=True, help="the tokenizer file to write")
    train.add_argument(
        "--pattern", choices=PATTERNS, default="gpt2", help="pre-tokenizer regex (default: gpt2)"
    )
    train.add_argument(
        "--min-frequency", type=int, default=2, help="merge no pair seen fewer times (default: 2)"
    )
    rep = sub.add_parser("report", help="analyse a vocabulary on some input")
    rep.add_argument("file", help="a tokenizer file written by train")
    rep.add_argument(
        "--input", nargs="+", required=True, help="held-out code to measure on, as train's --input"
    )
    rep.add_argument("--compare", help="another tokenizer file, or a tiktoken name: gpt2 (downloads)")
    rep.add_argument("--max-mb", type=float, default=10, help="read about this many million characters")
    export = sub.add_parser("export", help="write tiktoken ranks and/or HF vocab.json + merges.txt")
    export.add_argument("file", help="a tokenizer file written by train")
    export.add_argument("--tiktoken", help="ranks file to write")
    export.add_argument("--hf", help="directory for vocab.json and merges.txt")
    args = parser.parse_args(argv)
    if args.command == "export" and not (args.tiktoken or args.hf):
        parser.error("export: give --tiktoken FILE and/or --hf DIR")
    if args.command == "train":
        if args.min_frequency < 0:  # 0 and 1 both let any pair merge, as in HF's BpeTrainer (default 0)
            raise ValueError(f"--min-frequency {args.min_frequency}: need >= 0")
        check_out_file("--out", args.out)
        stats = Counter()
        tok = Tokenizer.train(
            read_texts(args.input, stats=stats), args.vocab_size, PATTERNS[args.pattern], args.min_frequency
        )
        tok.save(args.out)
        print(f"wrote {args.out}: vocab_size {tok.vocab_size}; read {describe_read(stats)}")
    elif args.command == "report":
        if not 0 < args.max_mb < math.inf:  # written so that nan fails too
            raise ValueError(f"--max-mb {args.max_mb}: need a number above 0")
        stats = Counter()
        texts = first_mb(read_texts(args.input, stats=stats), args.max_mb)
        if not any(texts):
            raise ValueError(f"--input {' '.join(args.input)}: no text to measure; pass files that hold some")
        source = f"the first {args.max_mb}M characters of {' '.join(args.input)} ({describe_read(stats)})"
        report(args.file, texts, source, args.compare)
    else:
        if args.tiktoken:
            check_out_file("--tiktoken", args.tiktoken)
        if args.hf and Path(args.hf).exists() and not Path(args.hf).is_dir():
            raise ValueError(f"--hf {args.hf}: is a file; give a directory for vocab.json and merges.txt")
        tok, written = Tokenizer.load(args.file), []
        if args.tiktoken:
            tok.save_tiktoken(args.tiktoken)
            written.append(f"{args.tiktoken} (tiktoken ranks)")
        if args.hf:
            tok.save_hf(args.hf)
            written.append(f"{Path(args.hf) / HF_FILES[0]} + {HF_FILES[1]}")
        print(f"wrote {' and '.join(written)}: vocab_size {tok.vocab_size}")


PROBLEMS = {
    "bad_json": "bad JSON lines skipped",
    "missing_field": "records without the text field skipped",
    "invalid_utf8": "files or lines with invalid UTF-8 replaced by U+FFFD",
}


def describe_read(stats) -> str:
    """What read_texts counted (a Counter), as words: the files read and each problem met, with where."""
    problems = [
        f", {stats[k]} {what} (first at {stats['first_' + k]})" for k, what in PROBLEMS.items() if stats[k]
    ]
    return f"{stats['files']} files" + "".join(problems)


if __name__ == "__main__":
    run_cli(main)
