"""data.py: shard format, loader exactness and resume, validation windows, prepare end to end, CLI errors."""

import dataclasses
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import data

ROOT = Path(__file__).resolve().parent.parent
T = 3  # windows of T+1 = 4 tokens


def make_dataset(path, sizes=(50, 37, 61), valid=(45,), vocab=1 << 16):
    """A dataset whose token at stream position i is i, so a window names itself by its first token."""
    path.mkdir(parents=True, exist_ok=True)
    shards = {}
    for split, lengths in (("train", sizes), ("valid", valid)):
        start, shards[split] = 0, []
        for i, n in enumerate(lengths):
            data.write_shard(path / f"{split}_{i:06d}.bin", np.arange(start, start + n), vocab)
            shards[split].append(f"{split}_{i:06d}.bin")
            start += n
    (path / "tokenizer.bpe").write_text("a stand-in: opening a dataset only checks its sha256")
    tokens = {split: sum(lengths) for split, lengths in (("train", sizes), ("valid", valid))}
    meta = {
        "complete": True, "format_version": data.VERSION, "vocab_size": vocab, "shards": shards,
        "tokenizer": "tokenizer.bpe", "tokenizer_sha256": data.file_sha256(path / "tokenizer.bpe"),
        "documents": {}, "read": {}, "docs": tokens, "tokens": tokens,
        "bytes_per_token": dict.fromkeys(tokens, 1.0),
    }  # fmt: skip
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def window_ids(x, y):
    assert x.dtype == y.dtype == data.torch.int64 and x.shape == y.shape
    assert (y == x + 1).all() and (x[:, 1:] == x[:, :-1] + 1).all()  # contiguous windows, y shifted by one
    assert (x[:, 0] % (T + 1) == 0).all()  # non-overlapping: every window starts at a multiple of T+1
    return (x[:, 0] // (T + 1)).tolist()


def run_steps(path, steps, batch_size, grad_accum, world_size, seed=0, states=None):
    """Window ids of each optimizer step, gathered over ranks and micro-steps (rank-major order)."""
    loaders = [
        data.Loader(path, "train", batch_size, T, grad_accum, r, world_size, seed) for r in range(world_size)
    ]
    for loader, state in zip(loaders, states or [], strict=False):
        loader.load_state_dict(state)
    out = []
    for _ in range(steps):
        out.append([i for ld in loaders for _ in range(grad_accum) for i in window_ids(*ld.next_batch())])
    return out, loaders


# ---------------------------------------------------------------- shards
def test_shard_round_trip_and_header(tmp_path):
    tokens = np.array([0, 1, 65535, 42], dtype=np.uint16)
    data.write_shard(tmp_path / "s.bin", tokens, 65536, doc_end=3, doc_offset=7)
    assert (tmp_path / "s.bin").stat().st_size == data.HEADER_BYTES + 8
    assert not list(tmp_path.glob("*.tmp"))
    assert list(data.read_header(tmp_path / "s.bin")[:6]) == [data.MAGIC, data.VERSION, 65536, 4, 3, 7]
    assert (np.asarray(data.open_shard(tmp_path / "s.bin")) == tokens).all()


def test_truncated_or_foreign_shard_stops_with_its_name(tmp_path):
    path = tmp_path / "train_000000.bin"
    data.write_shard(path, np.arange(100), 1000)
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(ValueError, match="train_000000.bin: truncated"):
        data.open_shard(path)
    path.write_bytes(b"not a shard" * 200)
    with pytest.raises(ValueError, match="train_000000.bin: not a version-1 token shard"):
        data.open_shard(path)


# ---------------------------------------------------------------- loader
@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("batch_size,grad_accum", [(1, 1), (3, 1), (2, 2), (4, 3)])
def test_every_window_once_per_epoch(tmp_path, world_size, batch_size, grad_accum):
    path = make_dataset(tmp_path)
    n = 148 // (T + 1)  # 37 windows; some cross shard boundaries
    g = batch_size * grad_accum * world_size
    steps, _ = run_steps(path, n, batch_size, grad_accum, world_size)  # n steps of g windows = g epochs
    stream = [i for step in steps for i in step]
    for epoch in range(g):
        assert sorted(stream[epoch * n : (epoch + 1) * n]) == list(range(n))
    assert stream[:n] != sorted(stream[:n])  # shuffled
    assert g == 1 or stream[:n] != stream[n : 2 * n]  # and shuffled anew each epoch


def test_step_is_the_same_windows_however_it_is_split(tmp_path):
    path = make_dataset(tmp_path)
    two_ranks, _ = run_steps(path, 20, 2, 1, 2)
    two_micro, _ = run_steps(path, 20, 2, 2, 1)
    assert two_ranks == two_micro  # the same micro-batches, not only the same sets
    one_big, _ = run_steps(path, 20, 4, 1, 1)
    mixed, _ = run_steps(path, 20, 1, 2, 2)
    assert [sorted(s) for s in one_big] == [sorted(s) for s in two_ranks] == [sorted(s) for s in mixed]


def test_resume_gives_identical_batches(tmp_path):
    path = make_dataset(tmp_path)
    full, _ = run_steps(path, 30, 2, 2, 1, seed=5)
    head, loaders = run_steps(path, 12, 2, 2, 1, seed=5)
    half = window_ids(*loaders[0].next_batch())  # stop in the middle of a step
    state = json.loads(json.dumps(loaders[0].state_dict()))  # states travel through JSON / torch.save
    rest = data.Loader(path, "train", 2, T, 2, 0, 1, seed=0)
    rest.load_state_dict(state)  # the saved seed wins over the constructor's
    tail = window_ids(*rest.next_batch())
    later, _ = run_steps(path, 17, 2, 2, 1, states=[rest.state_dict()])
    assert head == full[:12] and half + tail == full[12] and later == full[13:]
    assert rest.epoch >= 1


def test_resume_with_another_world_size_same_global_batch(tmp_path):
    path = make_dataset(tmp_path)
    full, _ = run_steps(path, 20, 2, 1, 2)
    _, loaders = run_steps(path, 7, 2, 1, 2)
    state = loaders[0].state_dict()
    resumed, _ = run_steps(path, 13, 2, 2, 1, states=[state])  # 1 process x 2 micro-steps
    assert resumed == full[7:]
    resumed, _ = run_steps(path, 13, 1, 1, 4, states=[state] * 4)  # 4 processes x batch 1
    assert resumed == full[7:]
    with pytest.raises(ValueError, match="global_batch was 4, now 2"):
        data.Loader(path, "train", 2, T, 1, 0, 1).load_state_dict(state)
    accumulating = data.Loader(path, "train", 2, T, 2, 0, 1)
    accumulating.next_batch()
    with pytest.raises(ValueError, match="mid-step"):
        data.Loader(path, "train", 2, T, 1, 0, 2).load_state_dict(accumulating.state_dict())


def test_the_window_order_is_numpy_permutation_s_in_the_smallest_dtype(tmp_path):
    """One epoch's order holds an id per window: as int64, 273 MB a rank for 35B tokens at context 1,024
    and 2.2 GB at 128. The same order (a saved loader resumes onto the same windows), in fewer bytes."""
    loader = data.Loader(make_dataset(tmp_path, sizes=(4 * 300,)), "train", 1, T, seed=5)
    order = loader.permutation(2)
    assert order.itemsize == 2 and (order == np.random.default_rng([5, 2]).permutation(300)).all()
    small = data.Loader(make_dataset(tmp_path / "small", sizes=(4 * 200,)), "train", 200, T)
    assert small.permutation(0).itemsize == 1  # window 199 starts at token 796, past a uint8
    assert sorted(window_ids(*small.next_batch())) == list(range(200))


def test_loader_refuses_bad_arguments(tmp_path):
    path = make_dataset(tmp_path, sizes=(3,))
    with pytest.raises(ValueError, match="fewer than one window"):
        data.Loader(path, "train", 1, T)
    with pytest.raises(ValueError, match="rank"):
        data.Loader(path, "valid", 1, T, rank=2, world_size=2)
    hint = f"make it with `python data.py prepare --out {tmp_path / 'nothing'} --source FILES` (without"
    with pytest.raises(ValueError, match=re.escape(hint)):  # not the standard library, for a real recipe
        data.Loader(tmp_path / "nothing", "train", 1, T)


def test_a_split_of_more_shards_than_the_soft_open_file_limit_opens(tmp_path, monkeypatch):
    """Each open shard holds a file descriptor: ~100B tokens (1,000 shards of 100M) passed a soft limit of
    1,024 with a bare EMFILE. The soft limit is raised toward the hard one; past that, one clear line."""
    resource = pytest.importorskip("resource")
    path = make_dataset(tmp_path, sizes=(4,) * 100)

    def over_the_hard_limit(*args):  # as a hard limit of 64 would refuse the raise
        raise ValueError("not allowed to raise maximum limit")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    try:
        with monkeypatch.context() as m:
            m.setattr(resource, "setrlimit", over_the_hard_limit)
            with pytest.raises(ValueError, match="100 train shards, each an open file: raise `ulimit -n` to"):
                data.Loader(path, "train", 1, T)
        assert data.Loader(path, "train", 1, T).n_windows == 100
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_hard_open_file_limit_below_the_headroom_still_opens_the_shards_that_fit(tmp_path, monkeypatch):
    """100 shards under a hard limit of 200: short of the 256 spare files asked for, yet room for them."""
    resource = pytest.importorskip("resource")
    path = make_dataset(tmp_path, sizes=(4,) * 100)
    real_setrlimit, (soft, hard) = resource.setrlimit, resource.getrlimit(resource.RLIMIT_NOFILE)

    def under_a_hard_limit_of_200(which, limits):  # as the kernel refuses a soft limit above the hard one
        if limits[0] > 200:
            raise ValueError("not allowed to raise maximum limit")
        real_setrlimit(which, (limits[0], hard))

    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    try:
        monkeypatch.setattr(resource, "getrlimit", lambda which: (64, 200))
        monkeypatch.setattr(resource, "setrlimit", under_a_hard_limit_of_200)
        assert data.Loader(path, "train", 1, T).n_windows == 100
    finally:
        real_setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_opening_checks_the_tokenizer_against_meta(tmp_path):
    """A tokenizer.bpe lost or replaced after prepare: refused at open, before training (not at its save)."""
    path = make_dataset(tmp_path)
    (path / "tokenizer.bpe").write_text("another tokenizer")
    for open_it in (lambda: data.Loader(path, "train", 1, T), lambda: data.val_batches(path, 1, T, 100)):
        with pytest.raises(ValueError, match=r"tokenizer.bpe differs from the one the shards were made with"):
            open_it()
    (path / "tokenizer.bpe").unlink()
    with pytest.raises(ValueError, match=f"{re.escape(str(path))} has no tokenizer.bpe; restore it or"):
        data.load_meta(path)


def test_token_ids_beyond_the_vocabulary_stop_with_the_shard(tmp_path):
    """A shard with a sound header but ids >= vocab_size (tokens here run 0..147): one line, not an
    IndexError in the embedding mid-run; the whole shard is never scanned."""
    path = make_dataset(tmp_path, valid=(104,), vocab=100)
    assert data.TokenStream(path, "train").windows([0, 24], T + 1)[1, -1] == 99  # below: fine
    with pytest.raises(
        ValueError,
        match="train_000002.bin: token 147 >= vocab_size 100: corrupt shard; rebuild with `python data.py",
    ):
        data.TokenStream(path, "train").windows([3, 36], T + 1)
    with pytest.raises(ValueError, match="valid_000000.bin: token 103 >= vocab_size 100"):
        list(data.val_batches(path, 30, T, 1000))


def test_val_batches_fixed_disjoint_balanced(tmp_path):
    path = make_dataset(tmp_path, valid=(30, 30, 23))  # 20 windows
    one = [i for x, y in data.val_batches(path, 4, T, 1000) for i in window_ids(x, y)]
    assert one == list(range(20))
    again = [i for x, y in data.val_batches(path, 4, T, 1000) for i in window_ids(x, y)]
    assert again == one
    for world_size in (2, 3):
        per_rank = [
            [window_ids(x, y) for x, y in data.val_batches(path, 2, T, 1000, r, world_size)]
            for r in range(world_size)
        ]
        assert len({tuple(len(b) for b in batches) for batches in per_rank}) == 1  # same batch shapes
        ids = [i for batches in per_rank for b in batches for i in b]
        assert len(ids) == len(set(ids)) == 20 - 20 % world_size
    budget = [i for x, y in data.val_batches(path, 4, T, 5 * T) for i in window_ids(x, y)]
    assert budget == [0, 4, 8, 12, 16]  # within the token budget, spread over the split
    with pytest.raises(ValueError, match="has 20 windows of 4 tokens, fewer than the 32 rank"):
        data.val_windows(path, 20 * (T + 1), T, 1000, world_size=32)


# ---------------------------------------------------------------- cleaning and splitting
def code(name, lines=60):
    return "".join(f"def {name}_{i}(x):\n    return x * {i} + len('{name}')\n\n" for i in range(lines))


def opts(**kw):
    return data.Options(**{"min_size": 0, **kw})


def test_each_filter():
    good = code("ok")
    assert data.drop_reason(good, len(good), data.Options()) is None
    assert data.drop_reason("x = 1\n", 6, data.Options()) == "size"
    assert data.drop_reason(good, 1 << 20, data.Options()) == "size"  # the book's: at most 1,048,575
    assert data.drop_reason(good, (1 << 20) - 1, data.Options()) is None
    generated = "# This file is automatically generated. Do not edit.\n" + good
    assert data.drop_reason(generated, 1, opts()) == "autogenerated"
    fifth = ("x = '" + "a" * 990 + "'\n") * 4 + "# AUTO-GENERATED\n" + good  # line 5, past 4,000 characters
    assert data.drop_reason(fifth, 1, opts()) == "autogenerated"
    assert data.drop_reason("\n" * 5 + generated, 1, opts()) is None  # line 6
    assert data.drop_reason("a = 1\x0c\n" * 4 + generated, 1, opts()) is None  # a form feed ends a line too
    assert data.drop_reason(generated, 1, opts(drop_autogenerated=False)) is None
    wide = ("x" * 150 + "\n") * 20
    assert data.drop_reason(wide, 1, opts()) == "mean_line"
    assert data.drop_reason(wide, 1, opts(max_mean_line=0)) is None
    one_long = good + "y = '" + "z" * 1200 + "'\n"
    assert data.drop_reason(one_long, 1, opts()) == "max_line"
    assert data.drop_reason(one_long, 1, opts(max_line=0)) is None
    symbols = "x = [{}]  # " + "-+*/" * 20 + "\n"
    assert data.drop_reason(symbols * 5, 1, opts()) == "alnum"
    assert data.drop_reason(symbols * 5, 1, opts(min_alnum=0)) is None
    assert data.alnum_count("a_1 + b2") == data.alnum_count("é_1 + ñ2") == 4  # ASCII fast path == str.isalnum
    assert data.drop_reason(good, 1, opts(keywords=("pandas",))) == "keywords"
    assert data.drop_reason("import pandas as pd\n" + good, 1, opts(keywords=("sklearn", "pandas"))) is None


def test_nan_options_are_refused(tmp_path):  # NaN passes every threshold and would switch a filter off
    with pytest.raises(ValueError, match="--min-alnum nan: give a number"):
        data.prepare(tmp_path / "ds", [tmp_path], min_alnum=float("nan"), progress=False)


def write_corpus(root):
    (root / "pkg" / "sub").mkdir(parents=True)
    for i in range(12):
        (root / "pkg" / ("sub" if i % 2 else "") / f"m{i}.py").write_text(code(f"m{i}", 20 + i))
    (root / "pkg" / "dup.py").write_text(code("m0", 20).replace("\n\n", "\n  \n"))  # whitespace-only change
    (root / "pkg" / "gen.py").write_text("# auto-generated by a tool\n" + code("gen"))
    (root / "pkg" / "latin1.py").write_bytes(code("caf").encode() + b"# caf\xe9\n")
    (root / "pkg" / "notes.txt").write_text("not python")
    lines = [json.dumps({"content": code(f"j{i}", 30), "repo_name": "r"}) for i in range(6)]
    lines.insert(3, "{broken json")
    lines.insert(5, json.dumps({"text": "no content field"}))
    with gzip.open(root / "extra.jsonl.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    return [root / "pkg", root / "extra.jsonl.gz"]


def test_the_default_corpus_is_the_standard_library_without_site_packages():
    """What `bash demo.sh` reads when no --source is given."""
    names = {p.name for p in data.stdlib_sources("*.py")}
    assert {"os.py", "json", "email"} <= names and "site-packages" not in names
    assert all(p.is_dir() or p.suffix == ".py" for p in data.stdlib_sources("*.py"))


def test_the_duplicate_key_ignores_whitespace_and_is_the_same_as_ever():
    """The key decides duplicates and the split: a faster computation must give every key it gave before
    (blake2b of the text without what str.split() splits on), or a resumed prepare would re-split."""
    ascii_ws, unicode_ws = "a b\tc\nd\re\x0bf\x0cg\x1ch\x1di\x1ej\x1fk", "é\u2028ü\xa0ß\u3000x"
    for text in (ascii_ws, unicode_ws, ascii_ws + unicode_ws, "", "  \n\t"):
        digest = hashlib.blake2b("".join(text.split()).encode(), digest_size=8).digest()
        assert data.content_key(text) == int.from_bytes(digest, "little"), repr(text)
    assert data.content_key("def f():\n    return 1\n") == data.content_key("def f():\n\treturn  1")
    assert data.content_key("x = 1") != data.content_key("x = 2")
    assert data.content_key("abc") == 0x5995D533D814BBD8  # pinned: datasets already made keep their split


def test_split_is_stable_when_sources_are_added(tmp_path):
    sources = write_corpus(tmp_path)
    flags_a = data.scan(sources[:1], opts(valid_share=0.3), False)[0]
    flags_ab = data.scan(sources, opts(valid_share=0.3), False)[0]
    assert flags_ab[: len(flags_a)] == flags_a and {1, 2} <= set(flags_ab)
    assert data.scan(sources, opts(valid_share=0.3), False)[0] == flags_ab  # deterministic


def test_prepare_end_to_end_resume_and_refusals(tmp_path, capsys):
    sources = write_corpus(tmp_path / "src")
    out = tmp_path / "ds"
    kw = {"min_size": 0, "vocab_size": 300, "valid_share": 0.2, "shard_tokens": 2000, "progress": False}
    meta = data.prepare(out, sources, **kw)
    docs = meta["documents"]
    assert (
        docs["seen"] == 12 + 3 + 6 and docs["dropped_duplicate"] == 1 and docs["dropped_autogenerated"] == 1
    )
    assert docs["kept"] == meta["docs"]["train"] + meta["docs"]["valid"] == 19
    assert meta["read"]["bad_json"] == 1 and meta["read"]["first_bad_json"].endswith("extra.jsonl.gz:4")
    assert meta["read"]["invalid_utf8"] == 1 and meta["read"]["missing_field"] == 1
    assert meta == data.load_meta(out) and meta["tokenizer"] == "tokenizer.bpe" and meta["vocab_size"] == 300
    assert meta["tokenizer_sha256"] == data.file_sha256(out / "tokenizer.bpe")
    for split in data.SPLITS:
        assert meta["tokens"][split] == data.TokenStream(out, split).n_tokens
        assert 1 < meta["bytes_per_token"][split] < 6
    assert len(meta["shards"]["train"]) >= 3 and not list(out.glob("*.tmp"))
    tok = data.bpe.Tokenizer.load(out / "tokenizer.bpe")
    text = tok.decode(data.TokenStream(out, "train").windows([0], meta["tokens"]["train"])[0].tolist())
    assert text.startswith("<|endoftext|>") and text.count("<|endoftext|>") == meta["docs"]["train"]
    x, y = data.Loader(out, "train", 2, 16).next_batch()
    assert x.shape == (2, 16) and int(x.max()) < 300

    # an interrupted run: the last shard and the final meta.json never made it to disk
    first = {p.name: p.read_bytes() for p in out.glob("*.bin")}
    for name in meta["shards"]["train"][-2:]:
        (out / name).unlink()
    (out / "meta.json").write_text(json.dumps({**meta, "complete": False}))
    with pytest.raises(ValueError, match="incomplete"):
        data.load_meta(out)
    kept_inode = (out / "train_000000.bin").stat().st_ino
    capsys.readouterr()
    assert data.prepare(out, sources, **kw) == meta
    assert "reusing" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in out.glob("*.bin")} == first
    assert (out / "train_000000.bin").stat().st_ino == kept_inode  # reused, not rewritten

    with pytest.raises(ValueError, match="other sources or options; use another --out or pass --overwrite"):
        data.prepare(out, sources, **{**kw, "valid_share": 0.5})
    assert data.load_meta(out) == meta  # nothing lost
    for mistake in ({"min_size": 1 << 30}, {"tokenizer": str(tmp_path / "src" / "pkg" / "notes.txt")}):
        with pytest.raises(ValueError):  # --overwrite with bad inputs: refused before anything is deleted
            data.prepare(out, sources, overwrite=True, **{**kw, **mistake})
    with pytest.raises(ValueError, match="no such file"):
        data.prepare(out, [tmp_path / "nowhere"], overwrite=True, **kw)
    assert data.load_meta(out) == meta and {p.name: p.read_bytes() for p in out.glob("*.bin")} == first
    checkpoint = tmp_path / "ckpt"  # a train.py checkpoint holds a tokenizer.bpe, and no meta.json
    checkpoint.mkdir()
    (checkpoint / "tokenizer.bpe").write_text("the run's")
    with pytest.raises(ValueError, match="holds tokenizer.bpe but no meta.json, so it is no dataset"):
        data.prepare(checkpoint, sources, overwrite=True, **kw)
    assert (checkpoint / "tokenizer.bpe").read_text() == "the run's"
    (out / "notes.txt").write_text("not ours")
    other = data.prepare(out, sources, overwrite=True, **{**kw, "valid_share": 0.5})
    assert other["options"]["valid_share"] == 0.5 and other["docs"]["valid"] > meta["docs"]["valid"]
    assert (out / "notes.txt").exists()  # --overwrite replaces only the dataset's own files
    (out / "train_mine.bin").write_text("a user's file whose name looks like a shard's")
    shard = out / other["shards"]["train"][0]
    whole = shard.read_bytes()
    shard.write_bytes(whole[:2000])  # corrupt, same recipe: --overwrite must rebuild it, not reuse it
    again = data.prepare(out, sources, overwrite=True, **{**kw, "valid_share": 0.5})
    assert again["tokens"] == other["tokens"] and shard.read_bytes() == whole
    assert (out / "train_mine.bin").exists()
    (out / "meta.json").write_text("{truncated")
    with pytest.raises(ValueError, match="other sources or options"):
        data.prepare(out, sources, **kw)


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_second_prepare_into_one_folder_waits_for_the_first_then_reuses_its_dataset(tmp_path, overwrite):
    """As a job script that runs the same prepare on every node before torchrun: one builds, the rest wait.
    With --overwrite too: each node must not rebuild, in turn, what the one before it has just built."""
    fcntl = pytest.importorskip("fcntl")
    sources = write_corpus(tmp_path / "src")
    args = ["--source", *sources, "--min-size", "0", "--vocab-size", "300", *overwrite]
    made, out = tmp_path / "made", tmp_path / "ds"
    data.prepare(made, sources, min_size=0, vocab_size=300, progress=False)
    out.mkdir()
    with open(out / ".lock", "a") as held:  # the first prepare, still writing
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        argv = [sys.executable, str(ROOT / "data.py"), "prepare", "--out", str(out), *map(str, args)]
        second = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        waited = any("is in use by another data.py prepare; waiting" in line for line in second.stdout)
        shutil.copytree(made, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".lock"))  # it finishes
        inodes = {p.name: p.stat().st_ino for p in out.iterdir()}
    stdout, stderr = second.communicate(timeout=120)
    assert waited and second.returncode == 0, stderr
    assert "was just made by the prepare this one waited for; reusing it\n" in stdout
    assert {p.name: p.stat().st_ino for p in out.iterdir()} == inodes  # nothing rewritten


def test_documents_run_together_without_eot_between(tmp_path, capsys):
    sources, kw = write_corpus(tmp_path / "src"), {"min_size": 0, "vocab_size": 300, "progress": False}
    joined = data.prepare(tmp_path / "joined", sources, eot_between=False, **kw)
    tok = data.bpe.Tokenizer.load(tmp_path / "joined" / "tokenizer.bpe")
    stream = data.TokenStream(tmp_path / "joined", "train")
    assert tok.eot_token not in stream.windows([0], stream.n_tokens)[0].tolist()
    separated = data.prepare(tmp_path / "separated", sources, **kw)  # the same documents, one eot each
    assert separated["tokens"]["train"] == joined["tokens"]["train"] + joined["docs"]["train"]
    # a dataset made before the option existed was made with its default, and is reused
    meta = json.loads((tmp_path / "separated" / "meta.json").read_text())
    del meta["options"]["eot_between"]
    (tmp_path / "separated" / "meta.json").write_text(json.dumps(meta))
    capsys.readouterr()
    data.prepare(tmp_path / "separated", sources, **kw)
    assert "reusing" in capsys.readouterr().out


def test_prepare_with_given_tokenizer_and_keywords(tmp_path, capsys):
    sources = write_corpus(tmp_path / "src")
    first = data.prepare(tmp_path / "a", sources, min_size=0, vocab_size=300, progress=False)
    meta = data.prepare(
        tmp_path / "b",
        sources[:1],
        min_size=0,
        tokenizer=str(tmp_path / "a" / "tokenizer.bpe"),
        keywords=("m1", "m3"),
        progress=False,
    )
    assert meta["tokenizer_sha256"] == first["tokenizer_sha256"]
    data.bpe.Tokenizer.load(tmp_path / "a" / "tokenizer.bpe").save_hf(tmp_path / "hf")
    from_hf = data.prepare(tmp_path / "d", sources[:1], min_size=0, tokenizer=str(tmp_path / "hf"),
                           keywords=("m1", "m3"), progress=False)  # fmt: skip
    assert from_hf["tokenizer_sha256"] == first["tokenizer_sha256"]  # HF's vocab.json: the same tokenizer
    assert from_hf["tokens"] == meta["tokens"]
    merges_txt = tmp_path / "hf" / "merges.txt"  # UTF-8, as save_hf writes it: read so whatever the locale
    first_merge = merges_txt.read_text(encoding="utf-8").splitlines()[1]
    data.bpe.Tokenizer.load(tmp_path / "a" / "tokenizer.bpe").save_hf(tmp_path / "hf")  # unchanged: reused
    assert data.prepare(tmp_path / "d", sources[:1], min_size=0, tokenizer=str(tmp_path / "hf"),
                        keywords=("m1", "m3"), progress=False) == from_hf  # fmt: skip
    merges = merges_txt.read_text(encoding="utf-8").replace(first_merge, "# " + first_merge)
    merges_txt.write_text(merges, encoding="utf-8")  # an edited folder tokenizes differently: refused
    with pytest.raises(ValueError, match="other sources or options"):
        data.prepare(tmp_path / "d", sources[:1], min_size=0, tokenizer=str(tmp_path / "hf"),
                     keywords=("m1", "m3"), progress=False)  # fmt: skip
    assert meta["documents"]["dropped_keywords"] == meta["documents"]["seen"] - meta["documents"]["kept"] > 0
    with pytest.raises(ValueError, match="no train documents left to train a tokenizer on"):
        data.prepare(tmp_path / "e", sources, min_size=0, valid_share=0.999, progress=False)
    assert "keyword filter kept" in capsys.readouterr().out
    with pytest.raises(ValueError, match="65,536"):
        data.prepare(tmp_path / "c", sources, vocab_size=70000)
    with pytest.raises(ValueError, match="tiktoken cannot load 'no_such_encoding': no such file, nor"):
        data.prepare(tmp_path / "c", sources, tokenizer="no_such_encoding")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="no documents found"):
        data.prepare(tmp_path / "c", [tmp_path / "bad.jsonl"])
    with pytest.raises(ValueError, match="filters dropped all 21 documents"):
        data.prepare(tmp_path / "c", sources, keywords=("seaborn",))
    assert not (tmp_path / "c").exists()


def test_tokenizer_sample_skips_documents_over_its_budget(tmp_path):
    # A document larger than the budget used to enter the sample and evict every other one, then itself.
    def keyed(prefix, lines):  # (content key, text) of 40 documents, by key
        return sorted((data.content_key(t), t) for t in (code(f"{prefix}{i}", lines) for i in range(40)))

    small = keyed("s", 5)[-1]  # the largest key of the small ones
    big = next(d for d in keyed("b", 60) if 0.05 * 2**64 <= d[0] < small[0])  # train, and a smaller key
    (tmp_path / "a.py").write_text(small[1])  # read first
    (tmp_path / "c.py").write_text(big[1])
    budget = (len(small[1]) + 100) / 1e6
    flags, sample, _, _ = data.scan([tmp_path], opts(tokenizer_sample_mb=budget), progress=False)
    assert list(flags) == [1, 1] and sample == [small[1]]


def test_tokenizer_sample_keeps_the_smallest_keys(tmp_path):
    texts = [f"x = {i:03d}\n" * 20 for i in range(30)]  # equal sizes: the budget holds exactly three
    for i, text in enumerate(texts):
        (tmp_path / f"m{i:02d}.py").write_text(text)
    flags, sample, _, _ = data.scan([tmp_path], opts(tokenizer_sample_mb=3 * 160 / 1e6), progress=False)
    train_texts = sorted((data.content_key(t), t) for t, flag in zip(texts, flags, strict=True) if flag == 1)
    assert sorted(sample) == sorted(t for _, t in train_texts[:3])


def test_a_shard_appears_only_when_complete(tmp_path, monkeypatch):
    def power_cut(fd):
        raise OSError("the disk went away")

    monkeypatch.setattr(data.os, "fsync", power_cut)
    with pytest.raises(OSError):
        data.write_shard(tmp_path / "train_000000.bin", [1, 2, 3], 300)
    assert not (tmp_path / "train_000000.bin").exists()  # a resumed prepare would take it as complete
    assert not list(tmp_path.glob("*.tmp"))  # nor is the space of the part written kept (a full disk)


def test_prepare_blames_what_the_user_can_fix(tmp_path):
    sources = write_corpus(tmp_path / "src")
    out = tmp_path / "ds"
    with pytest.raises(ValueError, match=r"--tokenizer-sample-mb 0.0001: smaller than every train document"):
        data.prepare(out, sources, min_size=0, tokenizer_sample_mb=0.0001, progress=False)
    assert not out.exists()  # refused before anything was written
    (tmp_path / "text.jsonl").write_text("".join(json.dumps({"text": code(f"t{i}")}) + "\n" for i in "abc"))
    missing = "text.jsonl: no record has field 'content' .3 skipped.; data.py prepare reads another"
    with pytest.raises(ValueError, match=missing):
        data.prepare(out, [tmp_path / "text.jsonl"], progress=False)
    assert data.scan([tmp_path / "text.jsonl"], opts(field="text"), False)[2]["kept"] == 3
    # a prepare stopped by a bad option leaves an unfinished dataset; the corrected retry says how to go on
    with pytest.raises(ValueError, match="only supports"):
        data.prepare(out, sources, min_size=0, vocab_size=20000, progress=False)
    unfinished = "holds an unfinished prepare made with other sources or options; pass --overwrite to discard"
    with pytest.raises(ValueError, match=unfinished):
        data.prepare(out, sources, min_size=0, vocab_size=300, progress=False)
    assert (out / "meta.json").exists()  # nothing discarded without --overwrite


# ---------------------------------------------------------------- command line
def cli(*args, cwd=ROOT):
    argv = [sys.executable, str(ROOT / "data.py"), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_cli_errors_are_one_line_exit_2(tmp_path):
    (tmp_path / "a_file").write_text("x = 1\n" * 300)
    (tmp_path / "loop").symlink_to("loop")  # Path.resolve raised RuntimeError on it (Python 3.11)
    result = cli("prepare", "--out", tmp_path / "o", "--source", tmp_path / "missing")
    assert result.returncode == 2 and result.stderr.startswith(f"error: {tmp_path / 'missing'}: no such file")
    assert result.stderr.count("\n") == 1  # one line, no traceback, no progress bar
    for args, message in [
        (["prepare", "--out", tmp_path / "o", "--source", tmp_path], "no file matching '*.py'"),
        (["prepare", "--out", tmp_path / "o", "--valid-share", "1.5"], "--valid-share < 1"),
        (["prepare", "--out", tmp_path / "o", "--valid-share", "0"], "need 0 < --valid-share < 1"),
        (["prepare", "--out", tmp_path / "o", "--shard-tokens", "0"], "1 <= --shard-tokens < 2**31"),
        (["prepare", "--out", tmp_path / "o", "--tokenizer-sample-mb", "-1"], "--tokenizer-sample-mb > 0"),
        (["prepare", "--out", tmp_path / "o", "--glob", "/x.py"], "--glob relative"),
        (["inspect", tmp_path / "none"], "python data.py prepare --out"),
        (["inspect", tmp_path / "none", "--tokens", "0"], "--tokens 0: need at least 1"),
        (["prepare", "--out", tmp_path / "o", "--vocab-size", "100"], "need 257 (bytes + <|endoftext|>)"),
        (["prepare", "--out", tmp_path / "a_file", "--source", tmp_path / "a_file"], "is a file; a dataset"),
        (["prepare", "--out", "", "--source", tmp_path / "a_file"], "need a path, not an empty string"),
        (["prepare", "--out", tmp_path / "o", "--source", ""], "need a path, not an empty string"),
        (["prepare", "--out", tmp_path / "o", "--source", tmp_path / "loop"], "loop: no such file"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            data.main(list(map(str, args)))
    assert not (tmp_path / "o").exists()


def test_cli_prepare_and_inspect(tmp_path, capsys):
    sources = write_corpus(tmp_path / "src")
    out = tmp_path / "ds"
    data.main(
        [
            "prepare",
            "--out",
            str(out),
            "--source",
            *map(str, sources),
            "--min-size",
            "0",
            "--vocab-size",
            "300",
            "--no-dedup",
            "--valid-share",
            "0.3",
        ]
    )
    assert data.load_meta(out)["documents"].get("dropped_duplicate", 0) == 0
    printed = capsys.readouterr().out
    assert "tokens: {'train': " in printed
    described = "1 bad JSON lines skipped (first at "  # the read counts in words, not a dict
    assert re.search(r"^read: \d+ files, " + re.escape(described) + r".*extra.jsonl.gz:4\)", printed, re.M)
    result = cli("inspect", out, "--seed", 1)
    assert result.returncode == 0 and "--- train window" in result.stdout and "valid" in result.stdout
    # the book's tokenizer analysis, measured on the held-out split
    assert "Python keywords that are not one token" in result.stdout
    assert re.search(r"\d\.\d{3} chars per token on \d+ documents of the valid split", result.stdout)


def test_meta_lacking_a_key_is_one_line_exit_2(tmp_path):
    """A complete meta.json without a key that readers use: refused when the dataset is opened, not a
    KeyError later (train.py's came at its first evaluation, after training)."""
    path = make_dataset(tmp_path / "ds")
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "bytes_per_token"}))
    result = cli("inspect", path)
    hint = f"rebuild with `python data.py prepare --out {path} --overwrite`"
    assert result.returncode == 2
    assert result.stderr == f"error: {path / 'meta.json'} lacks 'bytes_per_token'; {hint}\n"
    del meta["shards"]["valid"]
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="meta.json lacks 'shards.valid'"):
        data.Loader(path, "train", 1, T)
    meta["shards"]["valid"] = []
    for size in ("300", -5, 70000):  # hand edits
        (path / "meta.json").write_text(json.dumps({**meta, "vocab_size": size}))
        with pytest.raises(ValueError, match=f"vocab_size {size!r} is not a uint16 vocabulary's; rebuild"):
            data.load_meta(path)
    (path / "meta.json").write_text(json.dumps({**meta, "format_version": 0}))
    with pytest.raises(
        ValueError, match=f"dataset format version 0, this code reads {data.VERSION}; rebuild"
    ):
        data.load_meta(path)


class Crash(BaseException):
    """A kill -9 stand-in: nothing after it runs, and no `except Exception` of ours catches it."""


def test_a_crash_while_overwrite_deletes_the_old_dataset_is_taken_again(tmp_path, monkeypatch):
    sources = write_corpus(tmp_path / "src")
    kw = {"min_size": 0, "vocab_size": 300, "valid_share": 0.2, "shard_tokens": 2000, "progress": False}
    out = tmp_path / "ds"
    data.prepare(out, sources, **kw)
    unlink = Path.unlink

    def killed(path, missing_ok=False):
        if path.name == "valid_000000.bin":  # the old dataset is half deleted when the process dies
            raise Crash
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", killed)
    with pytest.raises(Crash):
        data.prepare(out, sources, overwrite=True, **{**kw, "valid_share": 0.5})
    monkeypatch.undo()
    with pytest.raises(ValueError, match="incomplete"):  # readers refuse what is left
        data.load_meta(out)
    with pytest.raises(ValueError, match="pass --overwrite"):  # and a rerun without --overwrite says how
        data.prepare(out, sources, **{**kw, "valid_share": 0.5})
    again = data.prepare(out, sources, overwrite=True, **{**kw, "valid_share": 0.5})  # the same command
    fresh = data.prepare(tmp_path / "fresh", sources, **{**kw, "valid_share": 0.5})
    assert again == fresh
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {
        p.name: p.read_bytes() for p in (tmp_path / "fresh").iterdir()
    }


def test_a_meta_json_cut_short_by_a_crash_does_not_block_the_rerun(tmp_path):
    sources = write_corpus(tmp_path / "src")
    out = tmp_path / "ds"
    out.mkdir()
    (out / "meta.json.tmp").write_text('{"sources": [')  # the first write_json, killed mid-write
    meta = data.prepare(out, sources, min_size=0, vocab_size=300, progress=False)
    assert meta == data.load_meta(out) and not list(out.glob("*.tmp"))
    (out / "meta.json").write_text('{"sources": [')  # cut short by hand, or by a disk error
    with pytest.raises(ValueError, match="meta.json: not valid JSON; "):
        data.load_meta(out)


def test_each_filter_keeps_its_boundary():
    """The book's size BETWEEN 1024 AND 1048575 and CodeParrot's thresholds (mean line > 100, longest line
    > 1000, alphanumeric share < 0.25 are dropped): a file exactly at a threshold is kept."""
    good = code("ok")
    assert data.drop_reason(good, 1024, data.Options()) is None
    assert data.drop_reason(good, 1023, data.Options()) == "size"
    mean_100 = ("x" * 100 + "\n") * 20
    assert data.drop_reason(mean_100, 1, opts()) is None
    assert data.drop_reason(mean_100 + "x" * 101 + "\n", 1, opts()) == "mean_line"
    line_1000 = good + "y = '" + "z" * 994 + "'\n"  # a line of exactly 1,000 characters
    assert max(map(len, line_1000.splitlines())) == 1000
    assert data.drop_reason(line_1000, 1, opts()) is None
    quarter = "ab+-/*()"  # 2 of 8 characters alphanumeric: exactly 0.25
    assert data.drop_reason(quarter * 10, 1, opts()) is None
    assert data.drop_reason(quarter * 10 + "-", 1, opts()) == "alnum"


def test_a_vocabulary_of_exactly_65536_fits_the_shards(tmp_path):
    data.make_recipe([tmp_path], {"vocab_size": 1 << 16})  # ids 0..65535 fit uint16: accepted
    with pytest.raises(ValueError, match="65,536"):
        data.make_recipe([tmp_path], {"vocab_size": (1 << 16) + 1})
    ranks = {bytes([b]): b for b in range(256)}
    pairs = [bytes([a, b]) for a in range(256) for b in range(256)]
    ranks |= {pair: 256 + i for i, pair in enumerate(pairs)}
    fits = {t: r for t, r in ranks.items() if r < (1 << 16) - 1}  # and <|endoftext|> as id 65535
    data.bpe.Tokenizer(fits, special_tokens={data.bpe.EOT: (1 << 16) - 1}).save(tmp_path / "big.bpe")
    assert data.given_tokenizer(data.Options(tokenizer=str(tmp_path / "big.bpe"))).vocab_size == 1 << 16
    data.bpe.Tokenizer(ranks, special_tokens={data.bpe.EOT: len(ranks)}).save(tmp_path / "bigger.bpe")
    with pytest.raises(ValueError, match="bigger.bpe: 65793 tokens do not fit the uint16 shards"):
        data.given_tokenizer(data.Options(tokenizer=str(tmp_path / "bigger.bpe")))
    data.bpe.Tokenizer(fits).save(tmp_path / "no_eot.bpe")  # a tokenizer file without special tokens
    with pytest.raises(ValueError, match="no_eot.bpe: has no <.endoftext.> token, which separates documents"):
        data.given_tokenizer(data.Options(tokenizer=str(tmp_path / "no_eot.bpe")))


def test_a_shard_longer_than_its_header_says_is_refused(tmp_path):
    path = tmp_path / "train_000000.bin"
    data.write_shard(path, np.arange(100), 1000)
    path.write_bytes(path.read_bytes() + b"\0\0")  # e.g. two writers appended to one file
    with pytest.raises(ValueError, match="train_000000.bin: truncated or corrupt shard"):
        data.open_shard(path)


def test_a_token_equal_to_vocab_size_is_out_of_range(tmp_path):
    path = make_dataset(tmp_path, sizes=(148,), vocab=100)  # token i at position i
    assert data.TokenStream(path, "train").windows([0], 100)[0, -1] == 99
    with pytest.raises(ValueError, match="token 100 >= vocab_size 100"):
        data.TokenStream(path, "train").windows([0], 101)


def test_loading_a_state_into_a_used_loader_continues_as_a_fresh_one_would(tmp_path):
    path = make_dataset(tmp_path)
    saved = data.Loader(path, "train", 2, T, seed=5)
    for _ in range(3):
        saved.next_batch()
    fresh = data.Loader(path, "train", 2, T)
    fresh.load_state_dict(saved.state_dict())
    used = data.Loader(path, "train", 2, T)  # seed 0, its epoch-0 order already drawn
    used.next_batch()
    used.load_state_dict(saved.state_dict())
    for _ in range(5):
        assert window_ids(*used.next_batch()) == window_ids(*fresh.next_batch())


def test_a_resumed_prepare_removes_leftover_temporary_shards(tmp_path):
    sources = write_corpus(tmp_path / "src")
    out = tmp_path / "ds"
    kw = {"min_size": 0, "vocab_size": 300, "shard_tokens": 2000, "progress": False}
    meta = data.prepare(out, sources, **kw)
    for name in meta["shards"]["train"][-2:]:  # an interrupted run: the last shards never made it
        (out / name).unlink()
    (out / "meta.json").write_text(json.dumps({**meta, "complete": False}))
    (out / "train_000099.bin.tmp").write_bytes(b"part of a shard")  # left by a kill -9 mid-write
    assert data.prepare(out, sources, **kw) == meta
    assert not list(out.glob("*.tmp"))


def test_a_locked_dataset_folder_is_waited_for_not_refused(tmp_path, monkeypatch):
    """Without timing: the first try finds the lock held, the second must be the blocking one."""
    fcntl = pytest.importorskip("fcntl")
    tries = []

    def held_by_another(fd, operation):
        tries.append(operation)
        if operation & fcntl.LOCK_NB:
            raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(fcntl, "flock", held_by_another)
    lock, waited = data.wait_for_lock(tmp_path)
    lock.close()
    assert waited
    assert tries == [fcntl.LOCK_EX | fcntl.LOCK_NB, fcntl.LOCK_EX]


def test_a_waiting_prepare_reads_nothing_when_the_first_one_built_the_dataset(tmp_path, monkeypatch):
    """Every node of a job runs the same prepare: only the one that takes the lock reads the corpus."""
    fcntl = pytest.importorskip("fcntl")
    sources, kw = write_corpus(tmp_path / "src"), {"min_size": 0, "vocab_size": 300, "progress": False}
    made, out = tmp_path / "made", tmp_path / "ds"
    meta = data.prepare(made, sources, **kw)

    def held_until_built(fd, operation):
        if operation & fcntl.LOCK_NB:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        shutil.copytree(made, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".lock"))

    def scan(*args):
        raise AssertionError("a waiting prepare read the corpus")

    monkeypatch.setattr(fcntl, "flock", held_until_built)
    monkeypatch.setattr(data, "scan", scan)
    assert data.prepare(out, sources, **kw) == meta


def test_a_prepare_that_fails_on_its_inputs_leaves_no_folder_and_no_stale_lock(tmp_path, monkeypatch):
    """The first prepare fails and removes the folder it made while a second one waits for its lock file:
    the second must not hold that deleted file's lock, which a third prepare would not see."""
    fcntl = pytest.importorskip("fcntl")
    out, blocking_calls = tmp_path / "ds", []
    out.mkdir()  # made by the first prepare

    def first_fails_meanwhile(fd, operation):
        if operation & fcntl.LOCK_NB:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        blocking_calls.append(os.fstat(fd.fileno()).st_ino)
        if len(blocking_calls) == 1:
            (out / ".lock").unlink()
            out.rmdir()

    monkeypatch.setattr(fcntl, "flock", first_fails_meanwhile)
    lock, waited = data.wait_for_lock(out)
    with lock:
        assert waited and os.fstat(lock.fileno()).st_ino == (out / ".lock").stat().st_ino
    assert len(blocking_calls) == 2  # (an inode number may be reused once its file is closed)
    monkeypatch.undo()
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="no documents found"):
        data.prepare(tmp_path / "new" / "ds", [tmp_path / "empty.jsonl"], progress=False)
    assert not (tmp_path / "new").exists()


def test_overwrite_after_waiting_for_a_prepare_that_failed_replaces_the_old_dataset(tmp_path, monkeypatch):
    """Every node runs the same `prepare --overwrite` over an older dataset; the first fails (or is killed)
    while reading its inputs, so writes nothing: the node that waited for it still replaces the old
    dataset, as --overwrite says, rather than refuse it as another one and ask for --overwrite."""
    fcntl = pytest.importorskip("fcntl")
    sources, kw = write_corpus(tmp_path / "src"), {"min_size": 0, "vocab_size": 300, "progress": False}
    out = tmp_path / "ds"
    data.prepare(out, sources, **kw)

    def held_by_one_that_fails(fd, operation):
        if operation & fcntl.LOCK_NB:
            raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(fcntl, "flock", held_by_one_that_fails)
    meta = data.prepare(out, sources, overwrite=True, **{**kw, "valid_share": 0.5})
    assert meta["options"]["valid_share"] == 0.5 and data.load_meta(out) == meta


def test_a_zero_threshold_switches_its_filter_off():
    """max_size 0 keeps files of any size; max_line 0 reads the first 5 lines for markers however long."""
    good = code("ok")
    assert data.drop_reason(good, 1 << 30, opts(max_size=0)) is None
    generated = "x = 1\n" * 4 + "# auto-generated\n" + good  # line 5: past 5 * (max_line + 2) characters
    assert data.drop_reason(generated, 1, opts(max_line=0)) == "autogenerated"


def test_a_meta_json_that_is_json_but_not_an_object_is_another_dataset(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "meta.json").write_text("[1, 2]")  # valid JSON, no meta.json of ours: refused, not a traceback
    with pytest.raises(ValueError, match="holds a dataset made with other sources or options"):
        data.prepare(out, [tmp_path / "src"], progress=False)


def test_a_reused_dataset_says_how_to_start_over(tmp_path, capsys):
    sources = write_corpus(tmp_path / "src")
    out, kw = tmp_path / "ds", {"min_size": 0, "vocab_size": 300, "progress": False}
    data.prepare(out, sources, **kw)
    capsys.readouterr()
    data.prepare(out, sources, **kw)
    assert capsys.readouterr().out == f"{out} is already complete; reusing it (--overwrite starts over)\n"


def test_a_dataset_with_no_valid_document_is_made_with_a_note(tmp_path, capsys):
    """The split goes by content hash: with a small corpus and share, every document may land in train."""
    sources = write_corpus(tmp_path / "src")
    kw = {"min_size": 0, "vocab_size": 300, "valid_share": 0.01, "progress": False}
    meta = data.prepare(tmp_path / "ds", sources, **kw)
    assert meta["docs"]["valid"] == 0 and meta["complete"]
    note = "note: no document fell in the valid split (--valid-share 0.01), which train.py evaluates on"
    assert note in capsys.readouterr().out


def test_prepare_help_says_what_each_option_means_and_its_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping: one option per line
    with pytest.raises(SystemExit) as e:
        data.main(["prepare", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    notes = data.field_comments(data.Options)
    assert set(notes) == {f.name for f in dataclasses.fields(data.Options)}  # every option has its comment
    for field, value in dataclasses.asdict(data.Options()).items():
        if field != "keywords" and not isinstance(value, bool) and value != "":
            assert f"{notes[field]} (default: {value!r})" in text, field
    assert "--min-size MIN_SIZE drop files of fewer bytes (default: 1024)" in text
    assert "--dedup, --no-dedup drop exact duplicates, up to whitespace (default: on)" in text
    assert "or a tiktoken name (default: train one)" in text  # not (default: '')
