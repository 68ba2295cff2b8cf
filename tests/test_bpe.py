"""Tests for bpe.py: readers, round trips, reference == tiktoken, HF parity, specials, files, CLI errors."""

import errno
import gzip
import json
import random
import re
import signal
import subprocess
import sys
import sysconfig
import threading
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
import regex
import torch

import bpe

STDLIB = Path(sysconfig.get_paths()["stdlib"])
CORPUS = [STDLIB / "json", STDLIB / "email"]  # ~0.6 MB of real Python
ROOT = Path(__file__).resolve().parent.parent
TRICKY = [
    "",
    "def f(x):\n\treturn x  # tab\n",
    " " * 300 + "x\n" + "\t" * 40 + "\n\n\n   \n",
    "mixed: Ünïcödé, Ελληνικά, русский, 中文, العربية, हिन्दी, 😀👍🏽 and 👨‍👩‍👧",
    "crlf\r\nline\r\n",
    "it's they're we'll I'd   '''\"\"\"",
    "<|endoftext|> in the middle <|endoftext|>",
    "numbers 1234567 3.14e-10 0xFF",
]


@pytest.fixture(scope="module")
def texts():
    return list(bpe.read_texts(CORPUS))


@pytest.fixture(scope="module")
def tok(texts):
    return bpe.Tokenizer.train(texts, vocab_size=2000, processes=1, progress=False)


def random_strings(n, seed=0):
    # Characters assigned by Python 3.11's Unicode 14: newer letters (Unicode 16-17, ~4,600 code points,
    # e.g. U+0C5C or CJK extension J) are letters to `regex` but not to tiktoken's Rust regex, so the two
    # pre-tokenize them differently; that is a known divergence, not what this test checks.
    rng = random.Random(seed)
    pools = ["    \t\n\r", "abcdefXYZ_():.,'\"#0123456789", "".join(map(chr, range(0x80, 0x3000)))]
    pools.append("".join(chr(c) for c in range(0x1F300, 0x1F700) if unicodedata.category(chr(c)) != "Cn"))
    pools[2] = "".join(c for c in pools[2] if unicodedata.category(c) not in ("Cn", "Cs"))
    return ["".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(0, 60))) for _ in range(n)]


def test_round_trip_and_reference_equals_tiktoken(tok, texts):
    for s in TRICKY + random_strings(300) + texts[:5]:
        ids = tok.encode(s)
        assert tok.decode(ids) == s
        assert tok.encode_reference(s) == ids
    assert tok.encode_batch(TRICKY) == [tok.encode(s) for s in TRICKY]


def test_gpt4_pattern(texts):
    tok = bpe.Tokenizer.train(
        texts[:8], vocab_size=600, pattern=bpe.GPT4_PATTERN, processes=1, progress=False
    )
    assert tok.encode("x = 1234567") == tok.encode_reference("x = 1234567")
    assert regex.findall(tok.pattern, "x = 1234567") == ["x", " =", " ", "123", "456", "7"]
    for s in TRICKY + random_strings(100, seed=3):
        assert tok.encode_reference(s) == tok.encode(s) and tok.decode(tok.encode(s)) == s


def test_ascii_fast_path_splits_like_regex(texts):
    rng = random.Random(2)
    samples = [
        "".join(rng.choice(["  ", "\n", "'s", "'ll", "x", *map(chr, range(128))]) for _ in range(80))
        for _ in range(500)
    ]
    pattern = regex.compile(bpe.GPT2_PATTERN)
    for s in samples + [t for t in texts if t.isascii()] + TRICKY[:3]:
        assert bpe.GPT2_ASCII.findall(s) == pattern.findall(s)


def test_compresses_code(tok, texts):
    text = texts[0]
    assert len(text) / len(tok.encode(text)) > 2.5  # bytes would be 1.0
    assert len(tok.encode(" " * 8)) == 1  # indentation is one token


def test_lone_surrogates_become_replacement_chars(tok):
    s = "a\udc80b\ud800"
    assert tok.decode(tok.encode(s)) == "a\ufffdb\ufffd"
    assert tok.encode_reference(s) == tok.encode(s)


def test_training_sees_lone_surrogates_as_encode_does():
    # encode turns them into U+FFFD, so a token learned from their raw form could never be used
    tok = bpe.Tokenizer.train(["ab\ud800cd " * 50], vocab_size=262, processes=1, progress=False)
    assert b"\xed\xa0\x80" not in tok.ranks  # surrogatepass's bytes for U+D800
    assert "\ufffd".encode() in tok.ranks


def test_decode_split_utf8_and_bytes(tok):
    ids = [tok.ranks[bytes([b])] for b in "é".encode()]
    assert tok.decode(ids[:1]) == "\ufffd"
    assert tok.decode_bytes(ids) == "é".encode()
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.decode([10**6])


def test_special_tokens(tok):
    s = "a<|endoftext|>b"
    assert tok.eot_token == tok.vocab_size - 1 == 1999
    assert tok.eot_token not in tok.encode(s)  # plain text by default, no exception either
    assert tok.encode(s, allowed_special={bpe.EOT}).count(tok.eot_token) == 1
    assert tok.encode(s, allowed_special="all") == tok.encode(s, allowed_special={bpe.EOT})
    assert tok.decode(tok.encode(s, allowed_special="all")) == s


def test_training_is_deterministic_across_processes(tok, texts, monkeypatch):
    monkeypatch.setattr(bpe, "CHUNK_CHARS", 50_000)  # ~9 chunks: both workers count, results are merged
    other = bpe.Tokenizer.train(texts, vocab_size=2000, processes=2, progress=False)
    assert other.ranks == tok.ranks and other.special_tokens == tok.special_tokens


def test_counts_do_not_overflow():
    # i32 counters would wrap 2**31 + 5 to a negative count and pick (c, d) first
    merges = bpe.learn_merges({b"ab": 2**31 + 5, b"cd": 2**31 - 1}, 2, 2, False)
    to_byte = [bpe.HF_BYTE_ORDER[i] for i in merges[0]]
    assert bytes(to_byte) == b"ab"


def sigint_handler(chunk):
    return signal.getsignal(signal.SIGINT)


def test_pool_workers_leave_ctrl_c_to_the_parent():
    """Else Ctrl-C in `data.py prepare` prints a KeyboardInterrupt traceback from every worker."""
    assert list(bpe.in_workers(sigint_handler, ["x = 1\n"], 1)) == [(["x = 1\n"], signal.SIG_IGN)]


def test_a_progress_bar_starts_no_thread_that_the_pools_would_fork_with():
    """A fork while another thread runs can deadlock the child; tqdm's monitor thread was one."""
    script = "import threading, bpe\nbar = bpe.tqdm(total=1)\nprint(threading.active_count())\n"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout == "1\n", result.stderr


def test_work_in_workers_comes_back_in_order_with_its_chunk(monkeypatch):
    monkeypatch.setattr(bpe, "CHUNK_CHARS", 10)
    texts = [f"text number {i}" for i in range(50)]  # a chunk each, 50 in flight at most 4
    assert list(bpe.in_workers(len, texts, 2)) == [([t], 1) for t in texts]


def test_sigterm_while_workers_count_ends_them_without_tracebacks():
    """Else each worker, finishing its chunk after the parent died, prints a BrokenPipeError traceback."""
    script = (
        "import os, signal, bpe\n"
        "def texts():\n"
        "    yield from ['x = 1\\n' * 200_000] * 2  # a chunk for each worker\n"
        "    os.kill(os.getpid(), signal.SIGTERM)  # while they count\n"
        "    yield 'y = 2\\n'\n"
        "bpe.count_words(texts(), bpe.GPT2_PATTERN, 2, False)\n"
    )
    cmd = [sys.executable, "-c", script]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (128 + signal.SIGTERM, "")


def test_min_frequency_and_vocab_limits(texts):
    with pytest.raises(ValueError, match="only supports"):
        bpe.Tokenizer.train(texts[:2], vocab_size=30000, processes=1, progress=False)
    with pytest.raises(ValueError, match="out of range"):
        bpe.Tokenizer.train(texts[:2], vocab_size=200, processes=1, progress=False)
    with pytest.raises(ValueError, match="empty"):
        bpe.Tokenizer.train(["", ""], vocab_size=300, processes=1, progress=False)
    top = 2**20 + 1  # 256 bytes + 2**20 - 256 merges + <|endoftext|>: the last merge would need a 21st bit
    with pytest.raises(ValueError, match="at most 1048320"):
        bpe.Tokenizer.train(texts[:2], vocab_size=top + 1, processes=1, progress=False)
    small = bpe.Tokenizer.train(texts[:2], vocab_size=257, processes=1, progress=False)
    assert small.vocab_size == 257
    words = {b"ab": 3, b"cd": 1}  # min_frequency 0 means 1, as in HF's BpeTrainer, where 0 is the default
    merges = bpe.learn_merges(words, 5, 0, False)
    assert merges == bpe.learn_merges(words, 5, 1, False) == [(64, 65), (66, 67)]  # ab, cd in HF_BYTE_ORDER


def test_write_atomic_never_leaves_half_a_file(tmp_path, monkeypatch):
    path = tmp_path / "latest"
    bpe.write_atomic(path, "ckpt-0000001\n")
    write_text = Path.write_text

    def torn(self, data, **kwargs):  # the disk fills halfway through
        write_text(self, data[:3], **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", torn)
    with pytest.raises(OSError):
        bpe.write_atomic(path, "ckpt-0000002\n")
    assert path.read_text() == "ckpt-0000001\n" and list(tmp_path.iterdir()) == [path]


def test_save_load_and_tiktoken_file(tok, tmp_path):
    tok.save(tmp_path / "tokenizer.bpe")
    assert not list(tmp_path.glob("*.tmp"))
    back = bpe.Tokenizer.load(tmp_path / "tokenizer.bpe")
    assert (back.ranks, back.pattern, back.special_tokens) == (tok.ranks, tok.pattern, tok.special_tokens)
    tok.save_tiktoken(tmp_path / "ranks.tiktoken")
    plain = bpe.Tokenizer.load(tmp_path / "ranks.tiktoken")
    assert plain.special_tokens == {bpe.EOT: 1999}
    assert all(plain.encode(s) == tok.encode(s) for s in TRICKY)
    assert plain.merges() == tok.merges()
    bad = {
        "junk": "not a tokenizer",
        "two_bytes.tiktoken": "YQ== 0\nYg== 1\n",  # tiktoken would panic on any other byte
        "list_ranks.bpe": '{"ranks": [], "pattern": "x", "special_tokens": {}}',
        "bad_pattern.bpe": json.dumps(
            {**json.loads((tmp_path / "tokenizer.bpe").read_text()), "pattern": "("}
        ),
    }
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=f"{name}: not a usable bpe.py tokenizer or tiktoken ranks file"):
            bpe.Tokenizer.load(tmp_path / name)
    with pytest.raises(ValueError, match="lacks 254 of the 256 single-byte tokens"):
        bpe.Tokenizer.load(tmp_path / "two_bytes.tiktoken")


def test_ranks_out_of_tiktoken_range_are_refused(tok, tmp_path):
    """tiktoken keeps ranks as u32: a negative one gave an OverflowError traceback."""
    tok.save_tiktoken(tmp_path / "ranks.tiktoken")
    lines = [line.split() for line in (tmp_path / "ranks.tiktoken").read_text().splitlines()]
    (tmp_path / "negative.tiktoken").write_text("".join(f"{t} {-int(r) - 1}\n" for t, r in lines))
    r = run_cli("report", tmp_path / "negative.tiktoken", "--input", STDLIB / "json/decoder.py")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "negative.tiktoken: not a usable bpe.py tokenizer or tiktoken ranks file" in r.stderr
    assert "token ids must be integers from 0 to 2**32 - 1" in r.stderr
    tok.save(tmp_path / "t.bpe")
    saved = json.loads((tmp_path / "t.bpe").read_text())
    (tmp_path / "huge.bpe").write_text(json.dumps({**saved, "special_tokens": {bpe.EOT: 1 << 32}}))
    with pytest.raises(ValueError, match="huge.bpe: not a usable bpe.py tokenizer"):
        bpe.Tokenizer.load(tmp_path / "huge.bpe")


def test_hf_folder_loads_back_and_bad_ones_are_refused(tok, tmp_path):
    tok.save_hf(tmp_path / "hf")
    back = bpe.Tokenizer.load(tmp_path / "hf")  # a folder: vocab.json + merges.txt
    assert (back.ranks, back.pattern, back.special_tokens) == (tok.ranks, tok.pattern, tok.special_tokens)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no usable vocab.json"):
        bpe.Tokenizer.load(tmp_path / "empty")
    merges_txt = tmp_path / "hf/merges.txt"  # UTF-8, as save_hf writes it: read so whatever the locale
    merges = merges_txt.read_text(encoding="utf-8").splitlines()
    merges_txt.write_text("\n".join([merges[0], merges[2], merges[1], *merges[3:]]), encoding="utf-8")
    with pytest.raises(ValueError, match="ids must rise in merges.txt's order"):
        bpe.Tokenizer.load(tmp_path / "hf")


def test_what_a_tokenizer_cannot_give_is_refused_in_one_line(tok, tmp_path):
    bytes_only = {bytes([b]): b for b in range(256)}
    with pytest.raises(ValueError, match="this tokenizer has no <.endoftext.> special token"):
        _ = bpe.Tokenizer(bytes_only).eot_token  # data.py needs it between documents
    unmade = bpe.Tokenizer(bytes_only | {b"abc": 256})  # a ranks file with no "ab" or "bc" to make it from
    with pytest.raises(ValueError, match="token b'abc' is not a merge of two lower-ranked tokens"):
        unmade.save_hf(tmp_path / "hf")
    with pytest.raises(ValueError, match="merges.txt imply GPT-2's pattern; train with --pattern gpt2"):
        bpe.Tokenizer(tok.ranks, pattern=bpe.GPT4_PATTERN).save_hf(tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    r = run_cli("export", tmp_path / "t.bpe")  # nothing to export to
    assert r.returncode == 2 and r.stderr.endswith("error: export: give --tiktoken FILE and/or --hf DIR\n")


def test_from_tiktoken_unknown_name():
    with pytest.raises(ValueError, match="nor a tiktoken encoding: .*gpt2"):
        bpe.Tokenizer.from_tiktoken("no-such-encoding")


def test_merges_equal_hf_bpe_trainer(tok, texts, tmp_path):
    tokenizers = pytest.importorskip(
        "tokenizers", reason="parity with HF needs tokenizers (requirements-dev.txt)"
    )
    hf = tokenizers.Tokenizer(tokenizers.models.BPE())
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=2000, min_frequency=2, special_tokens=[bpe.EOT], show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    hf.train_from_iterator(texts, trainer)
    hf.model.save(str(tmp_path))
    tok.save_hf(tmp_path / "ours")
    ours, hfs = ((tmp_path / folder / "merges.txt").read_text(encoding="utf-8") for folder in ("ours", "."))
    assert ours == hfs
    theirs = bpe.Tokenizer.load(tmp_path)  # HF numbers <|endoftext|> 0 and the bytes from 1: ids kept
    assert theirs.special_tokens == {bpe.EOT: 0}
    samples = [s for s in TRICKY + texts[:5] if bpe.EOT not in s]  # HF would read it as the special token
    assert [e.ids for e in hf.encode_batch(samples)] == theirs.encode_batch(samples)


def test_hf_export_encodes_identically(tok, texts, tmp_path):
    tokenizers = pytest.importorskip(
        "tokenizers", reason="parity with HF needs tokenizers (requirements-dev.txt)"
    )
    tok.save_hf(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == tok.vocab_size
    hf = tokenizers.Tokenizer(
        tokenizers.models.BPE.from_file(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    )
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    samples = TRICKY[1:] + random_strings(200, seed=1) + texts[:10]
    assert [e.ids for e in hf.encode_batch(samples)] == tok.encode_batch(samples)
    transformers = pytest.importorskip(
        "transformers", reason="parity with HF needs transformers (requirements-dev.txt)"
    )
    fast = transformers.GPT2TokenizerFast(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    assert fast(texts[0])["input_ids"] == tok.encode(texts[0])


def test_read_texts_formats_and_stats(tmp_path):
    (tmp_path / "pkg/sub").mkdir(parents=True)
    (tmp_path / "pkg/b.py").write_text("b = 2\n")
    (tmp_path / "pkg/sub/a.py").write_text("a = 1\n")
    (tmp_path / "pkg/notes.txt").write_text("not python")
    (tmp_path / "bad.py").write_bytes(b"ok\nok\nbad \xff byte\n")
    lines = [
        json.dumps({"content": "x = 1"}),
        "{broken",
        json.dumps({"text": "y"}),
        "",
        json.dumps({"content": "z"}),
    ]
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    with gzip.open(tmp_path / "data.jsonl.gz", "wt") as f:
        f.write(json.dumps({"content": "gz"}) + "\n")
    (tmp_path / "utf.json.gz").write_bytes(gzip.compress(b'{"content": "caf\xe9"}\n'))
    (tmp_path / "gunzipped.json").write_text('{"content": "half \\ud83d emoji"}\n')  # a lone surrogate
    stats = Counter()
    paths = [tmp_path / "pkg", tmp_path / "bad.py", tmp_path / "data.jsonl", tmp_path / "data.jsonl.gz"]
    paths += [str(tmp_path / "utf.json.gz"), tmp_path / "gunzipped.json"]
    out = list(bpe.read_texts(paths, stats=stats))
    assert out[:7] == ["b = 2\n", "a = 1\n", "ok\nok\nbad \ufffd byte\n", "x = 1", "z", "gz", "caf\ufffd"]
    assert out[7] == "half \ufffd emoji" and out[7].encode()  # UTF-8 can hold it now
    (tmp_path / "array.json").write_text('[{"content": "a"},\n {"content": "b"}\n]\n')
    with pytest.raises(ValueError, match="array.json: a JSON array, not JSON Lines"):
        list(bpe.read_texts([tmp_path / "array.json"]))
    assert stats["files"] == 7 and stats["bad_json"] == 1 and stats["missing_field"] == 1
    assert stats["invalid_utf8"] == 3
    assert stats["first_invalid_utf8"] == f"{tmp_path / 'bad.py'}:3"
    assert stats["first_bad_json"] == f"{tmp_path / 'data.jsonl'}:2"
    assert stats["first_missing_field"] == f"{tmp_path / 'data.jsonl'}:3"
    assert list(bpe.read_texts(tmp_path / "pkg", glob="*.txt")) == ["not python"]
    for bad in [tmp_path / "missing", tmp_path / "pkg/sub/empty"]:
        bad.parent.mkdir(exist_ok=True)
        with pytest.raises(ValueError, match=str(bad.name)):
            list(bpe.read_texts([bad]))
    (tmp_path / "nopy").mkdir()
    with pytest.raises(ValueError, match="no file matching '\\*.py' in this directory; pass another path$"):
        list(bpe.read_texts(tmp_path / "nopy"))
    (tmp_path / "nopy" / "file-000000000001.json.gz").write_bytes(gzip.compress(b'{"content": "x"}\n'))
    # escaped: TMPDIR may hold characters that a regex reads as operators (+, parentheses)
    glob = re.escape(f"{tmp_path}/nopy/*.json.gz")
    with pytest.raises(ValueError, match=f"another path, or its JSON Lines files: {glob}$"):
        list(bpe.read_texts(tmp_path / "nopy"))  # as codeparrot's download: the fix is in the message
    cut = tmp_path / "cut.jsonl.gz"  # a download cut short
    whole = gzip.compress(b"".join(b'{"content": "%d"}\n' % i for i in range(5000)))
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="cut.jsonl.gz: corrupt or truncated gzip"):
        list(bpe.read_texts(cut))


def run_cli(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "bpe.py"), *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_cli_train_report_export(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in/x.py").write_bytes((STDLIB / "json/decoder.py").read_bytes() + b"\n# \xff\n")
    out = tmp_path / "tok.bpe"
    r = run_cli("train", "--input", tmp_path / "in", "--vocab-size", 400, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "invalid UTF-8 replaced" in r.stdout
    r = run_cli("report", out, "--input", tmp_path / "in", "--compare", out)
    assert r.returncode == 0 and "chars per token" in r.stdout and "nonlocal" in r.stdout
    r = run_cli("export", out, "--tiktoken", tmp_path / "r.tiktoken", "--hf", tmp_path / "hf")
    assert r.returncode == 0 and (tmp_path / "hf/merges.txt").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--vocab-size", 100], "out of range"),
        (["--vocab-size", 100000], "only supports"),
        (["--input", "/no/such/dir"], "no such file"),
        (["--input", "EMPTY"], "the corpus is empty"),
        (["--out", "/no/such/dir/tok.bpe"], "does not exist"),
        (["--min-frequency", -1], "--min-frequency -1: need >= 0"),
    ],
)
def test_cli_errors_exit_2_with_one_line(tmp_path, args, message):
    (tmp_path / "empty.py").write_text("")
    src = tmp_path / "src.py"
    src.write_text("def f():\n    return 1\n" * 20)
    opts = {"--input": src, "--vocab-size": 300, "--out": tmp_path / "t.bpe"}
    opts.update(dict(zip(args[::2], args[1::2], strict=True)))
    opts = {k: tmp_path / "empty.py" if v == "EMPTY" else v for k, v in opts.items()}
    r = run_cli("train", *[x for kv in opts.items() for x in kv])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]  # the lines before are progress bars
    assert last.startswith("error: ") and message in last


LESS = ("ask for less at once (fewer samples, a smaller sample or batch; train.py: a smaller batch_size, "
        "larger grad_accum, or checkpointing=True)")  # fmt: skip


@pytest.mark.parametrize(
    "error, line",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "[Errno 28] No space left on device: free some "
         "space, then run the command again (train.py: with --resume)"),
        (OSError(errno.EFBIG, "File too large"), "[Errno 27] File too large: a file outgrew the size limit; "
         "raise `ulimit -f`, or write to another filesystem"),
        (MemoryError(), f"out of memory: {LESS}"),
        (MemoryError("Unable to allocate 8 TiB"), f"out of memory (Unable to allocate 8 TiB): {LESS}"),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 MiB."), f"out of memory: {LESS}"),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                      "memory: you tried to allocate 4503599627370496 bytes."), f"out of memory: {LESS}"),
    ],
)  # fmt: skip
def test_errors_that_name_no_file_are_one_line_that_says_what_to_do(capsys, error, line):
    """Also out of memory however it is raised; any other RuntimeError is a bug and keeps its traceback."""

    def main():  # as numpy, torch and file writes raise them: no file named
        raise error

    with pytest.raises(SystemExit) as e:
        bpe.run_cli(main)
    assert e.value.code == 2
    assert capsys.readouterr().err == f"error: {line}\n"


def test_a_runtime_error_that_is_not_out_of_memory_keeps_its_traceback():
    def main():  # a bug, whose traceback says where
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 4x3)")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        bpe.run_cli(main)


def test_an_output_in_a_read_only_folder_is_refused_before_the_work(tmp_path, monkeypatch):
    monkeypatch.setattr(bpe.os, "access", lambda path, mode: False)  # as on a read-only mount (root: chmod)
    with pytest.raises(ValueError, match="x.bpe: its directory is not writable; choose another place"):
        bpe.check_out_file("--out", tmp_path / "x.bpe")


@pytest.mark.parametrize(
    "args, message",
    [
        (["report", "{t}/t.bpe", "--input", "{t}/src.py", "--max-mb", "0"], "--max-mb 0.0: need a number"),
        (["report", "{t}/t.bpe", "--input", "{t}/src.py", "--max-mb", "nan"], "--max-mb nan: need a number"),
        (["report", "{t}/t.bpe", "--input", "{t}/empty.py"], "--input {t}/empty.py: no text to measure"),
        (["export", "{t}/t.bpe", "--tiktoken", "{t}"], "--tiktoken {t}: is a directory; give a file name"),
        (["export", "{t}/t.bpe", "--tiktoken", "{t}/no/r.tik"], "--tiktoken {t}/no/r.tik: its directory"),
        (["export", "{t}/t.bpe", "--hf", "{t}/src.py"], "--hf {t}/src.py: is a file; give a directory for"),
    ],
)
def test_cli_report_export_errors_name_the_path_typed(tok, tmp_path, args, message):
    """One line naming the flag and path as typed (not a `.tmp` name, not an errno), exit 2."""
    tok.save(tmp_path / "t.bpe")
    (tmp_path / "empty.py").write_text("")
    (tmp_path / "src.py").write_text("x = 1\n")
    r = run_cli(*[a.format(t=tmp_path) for a in args])
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("error: " + message.format(t=tmp_path))
    assert not list(tmp_path.glob("*.tmp"))


def test_cli_export_says_what_it_wrote(tok, tmp_path):
    tok.save(tmp_path / "t.bpe")
    r = run_cli("export", tmp_path / "t.bpe", "--tiktoken", tmp_path / "r.tik", "--hf", tmp_path / "hf")
    assert r.returncode == 0 and r.stdout == (
        f"wrote {tmp_path / 'r.tik'} (tiktoken ranks) and {tmp_path / 'hf/vocab.json'} + merges.txt: "
        "vocab_size 2000\n"
    )


def test_run_cli_ends_a_mistake_in_exit_2_and_ctrl_c_as_ctrl_c_does():
    """Dying of SIGINT, not exiting 130, is what makes a calling shell loop or script stop too."""
    script = "import bpe\ndef main():\n    raise {}\nbpe.run_cli(main)\n"
    for error, code, line in (
        (
            "ValueError('x.bpe: not a tokenizer; pass another')",
            2,
            "error: x.bpe: not a tokenizer; pass another",
        ),
        ("KeyboardInterrupt", -signal.SIGINT, "interrupted"),
    ):
        cmd = [sys.executable, "-c", script.format(error)]
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stderr) == (code, line + "\n")


def test_read_texts_skips_directories_named_like_files_and_finds_indented_arrays(tmp_path):
    (tmp_path / "pkg" / "odd.py").mkdir(parents=True)  # a folder whose name matches the glob
    (tmp_path / "pkg" / "odd.py" / "inner.py").write_text("x = 1\n")
    assert list(bpe.read_texts(tmp_path / "pkg")) == ["x = 1\n"]
    (tmp_path / "array.json").write_text('  [{"content": "a"},\n {"content": "b"}\n]\n')
    with pytest.raises(ValueError, match="array.json: a JSON array, not JSON Lines"):
        list(bpe.read_texts([tmp_path / "array.json"]))


def test_an_empty_token_is_refused():
    ranks = {bytes([b]): b for b in range(256)} | {b"": 256}
    with pytest.raises(ValueError, match="a token is empty"):
        bpe.Tokenizer(ranks)


def test_first_mb_counts_millions_of_characters():
    docs = ["a" * 600_000, "b" * 600_000, "c" * 10]
    assert bpe.first_mb(iter(docs), 1) == docs[:2]  # up to about 1M characters: the one crossing it too
    assert bpe.first_mb(iter(docs), 2) == docs


def test_hf_merges_without_a_version_line_load_alike(tok, tmp_path):
    tok.save_hf(tmp_path)
    merges = (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version")
    without = "\n".join(merges[1:]) + "\n"  # hand-written files may lack it
    (tmp_path / "merges.txt").write_text(without, encoding="utf-8")
    back = bpe.Tokenizer.load(tmp_path)
    assert (back.ranks, back.special_tokens) == (tok.ranks, tok.special_tokens)


def test_cli_train_takes_min_frequency_0(tmp_path):
    """0 and 1 both let any pair merge, as in HF's BpeTrainer, whose default is 0."""
    (tmp_path / "a.py").write_text("def f(x):\n    return x\n" * 3)
    out = tmp_path / "tok.bpe"
    bpe.main(["train", "--input", str(tmp_path / "a.py"), "--vocab-size", "260", "--out", str(out),
              "--min-frequency", "0"])  # fmt: skip
    assert bpe.Tokenizer.load(out).vocab_size == 260


def test_counting_words_hands_the_sigterm_handler_back():
    """exit_on_sigterm holds only while the workers count: train.py and the callers keep their own."""
    before = signal.getsignal(signal.SIGTERM)
    assert bpe.count_words(["x = 1\n"] * 3, bpe.GPT2_PATTERN, 1, False)[" ="] == 3
    assert signal.getsignal(signal.SIGTERM) == before


def test_words_are_counted_from_a_thread_too():
    """A notebook or server trains in a thread, where Python refuses signal.signal: count as before."""
    counted = []

    def count():  # an exception here would leave `counted` empty
        counted.append(bpe.count_words(["x = 1\n"], bpe.GPT2_PATTERN, 1, False))

    thread = threading.Thread(target=count)
    thread.start()
    thread.join()
    assert counted and counted[0][" ="] == 1


def test_records_without_the_field_are_only_an_error_when_nothing_else_was_read(tmp_path):
    (tmp_path / "a.py").write_text("a = 1\n")
    (tmp_path / "other.jsonl").write_text(json.dumps({"text": "y"}) + "\n")  # another dataset's shape
    stats = Counter()
    assert list(bpe.read_texts([tmp_path / "a.py", tmp_path / "other.jsonl"], stats=stats)) == ["a = 1\n"]
    assert stats["missing_field"] == 1
    with pytest.raises(ValueError, match="other.jsonl: no record has field 'content' .1 skipped."):
        list(bpe.read_texts([tmp_path / "other.jsonl"]))
