"""sample.py: reproducible sampling, greedy = the plain argmax chain, first_block cutting, streaming that
never breaks a character, and the command line end to end on a tiny checkpoint written here."""

import io
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sample
from bpe import Tokenizer
from model import GPT, GPTConfig, sample_next

SAMPLE = [sys.executable, str(Path(__file__).resolve().parent.parent / "sample.py")]
CODE = '''def area_of_rectangle(a: float, b: float):
    """Return the area of the rectangle."""
    return a * b


def mean(a):
    return sum(a) / len(a)


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y
'''
URLS = "\n    return [url for url in re.findall(r'<a href=\"(.*?)\"', html)\n            if url]"
PROMPT = 'def area_of_rectangle(a: float, b: float):\n    """Return the area of the rectangle."""'


def make_checkpoint(folder: Path, vocab_size=300, seed=0) -> Path:
    """What train.py leaves in a checkpoint folder, as far as sample.py reads it."""
    tok = Tokenizer.train([CODE] * 4, vocab_size=vocab_size, processes=1, progress=False)
    torch.manual_seed(seed)
    GPT(GPTConfig(vocab_size=tok.vocab_size, context=64, n_layer=2, n_head=2, n_embd=32)).save_pretrained(
        folder
    )
    tok.save(folder / "tokenizer.bpe")
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Models this small gain nothing from threads, and on cores shared with other jobs the threads' waits
    for each other cost 20x (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder as train.py writes it: ckpt-NNNNNNN/ folders and `latest` naming the newest."""
    run = tmp_path_factory.mktemp("run")
    make_checkpoint(run / "ckpt-0000010")
    (run / "latest").write_text("ckpt-0000010\n")
    return run


@pytest.fixture(scope="module")
def ckpt(run_dir):
    return run_dir / "ckpt-0000010"


@pytest.fixture(scope="module")
def loaded(ckpt):
    return sample.load_model(ckpt)


def test_same_seed_same_text_other_seed_other_text(loaded):
    model, tok = loaded
    run = lambda seed: sample.complete(model, tok, PROMPT, n=3, max_new_tokens=16, temperature=1.0, seed=seed)  # noqa: E731
    assert run(7) == run(7)
    assert run(7) != run(8)


def test_greedy_equals_the_argmax_chain_without_cache(loaded):
    model, tok = loaded
    idx = torch.tensor([tok.encode(PROMPT)])
    prompt_len = idx.shape[1]
    with torch.no_grad():
        for _ in range(20):  # plain forward over the growing sequence: no key/value cache involved
            logits, _ = model(idx)
            idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    new = idx[0, prompt_len:].tolist()
    new = new[: new.index(tok.eot_token)] if tok.eot_token in new else new
    expected = tok.decode(new)
    # every row of the batch must follow the same chain
    assert sample.complete(model, tok, PROMPT, n=3, max_new_tokens=20, temperature=0) == [expected] * 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_decoding_matches_cpu_and_bf16_reproduces(ckpt, loaded):
    model, tok = loaded
    on_cpu = sample.complete(model, tok, PROMPT, n=2, max_new_tokens=20, temperature=0)
    gpu, _ = sample.load_model(ckpt, device="cuda")
    assert sample.complete(gpu, tok, PROMPT, n=2, max_new_tokens=20, temperature=0) == on_cpu
    bf16, _ = sample.load_model(ckpt, device="cuda", dtype="bfloat16")
    run = lambda: sample.complete(bf16, tok, PROMPT, n=3, max_new_tokens=20, temperature=1.0, seed=3)  # noqa: E731
    assert run() == run()


def test_top_k_1_is_greedy(loaded):
    model, tok = loaded
    greedy = sample.complete(model, tok, PROMPT, max_new_tokens=16, temperature=0)
    assert sample.complete(model, tok, PROMPT, max_new_tokens=16, temperature=1.0, top_k=1, seed=3) == greedy


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(4000, -1)
    gen = torch.Generator().manual_seed(0)
    drawn = lambda p: set(sample_next(logits, 1.0, None, p, gen).tolist())  # noqa: E731
    assert drawn(0.45) == {0}
    assert drawn(0.79) == {0, 1}
    assert drawn(0.81) == {0, 1, 2}
    assert drawn(1.0) == {0, 1, 2, 3}


@pytest.mark.parametrize(
    "completion, block",
    [  # the book's completions, followed by what a model writes next
        ("\n    return a * b\n\n\ndef main():\n    pass", "\n    return a * b"),
        ("\n    return np.mean(a)\n\n# the same with torch\nimport torch", "\n    return np.mean(a)"),
        (URLS + "\n\n@app.route('/')", URLS),
        (
            "\nclf = RandomForestClassifier(n_estimators=20)\nclf.fit(X, y)\nprint(clf.score(X, y))",
            "\nclf = RandomForestClassifier(n_estimators=20)\nclf.fit(X, y)",
        ),
        ("\n    return a\n\nif __name__ == '__main__':\n    main()", "\n    return a"),
        ("\n    return a\nclass B:\n    pass", "\n    return a"),
        # not a block start: indented, or a name that only begins like a keyword
        ("\n    if a:\n        print(a)\n    # done\nifs = 1\nprinter()", None),
    ],
)
def test_first_block_on_the_books_examples(completion, block):
    assert sample.first_block(completion) == (completion if block is None else block)


class Scripted(torch.nn.Module):
    """Stands in for GPT: plays back fixed tokens for each sample, keeps the prompt ids, counts steps."""

    def __init__(self, rows, vocab_size):
        super().__init__()
        self.config = GPTConfig(vocab_size=vocab_size, context=64, n_layer=1, n_head=1, n_embd=8)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the sampler a device
        self.steps, self.columns = 0, list(zip(*rows, strict=True))

    def stream(self, idx, max_new_tokens, **_):
        self.prompts = idx.tolist()
        for column in self.columns[:max_new_tokens]:
            self.steps += 1
            yield torch.tensor(column)


def byte_tokens(tok, text):
    return [tok.ranks[bytes([b])] for b in text.encode()]


def test_streaming_stops_per_sample_and_never_splits_a_character(loaded):
    _, tok = loaded
    first = byte_tokens(tok, "\n    return 'é' * 2\n\ndef g():\n    pass\n")
    second = byte_tokens(tok, "\n    x = 1") + [tok.eot_token]
    rows = [
        first + byte_tokens(tok, "x" * 10),
        second + byte_tokens(tok, "y" * (len(first) + 10 - len(second))),
    ]
    model = Scripted(rows, tok.vocab_size)
    steps = list(
        sample.completion_steps(model, tok, "def f():", n=2, max_new_tokens=99, stop_at_first_block=True)
    )
    texts = ["".join(s[i] for s in steps) for i in range(2)]
    assert texts == ["\n    return 'é' * 2", "\n    x = 1"]
    assert all("\ufffd" not in piece for s in steps for piece in s)  # half of 'é' is never shown
    assert model.steps == len(first) - len("    pass\n")  # stopped once the `def g():` line was complete
    whole = sample.complete(Scripted(rows, tok.vocab_size), tok, "def f():", n=2, max_new_tokens=99)
    assert whole == [tok.decode(rows[0]), "\n    x = 1"]


def test_long_prompt_is_cropped_from_the_left_with_a_notice(loaded, ckpt, capsys):
    model, tok = loaded
    out = sample.complete(model, tok, CODE * 3, max_new_tokens=8, temperature=0)
    last = torch.tensor([tok.encode(CODE * 3)[-64:]])  # the end of the prompt is what gets completed
    assert out == [tok.decode(model.generate(last, 8, temperature=0)[0, 64:].tolist())]
    assert capsys.readouterr().err == ""  # the commands say it, once, not the library at every prompt
    cpu = ["--device", "cpu"]  # as `loaded`: on a GPU machine the CLI's default is CUDA in bfloat16
    sample.main(
        ["--checkpoint", str(ckpt), "--prompt", CODE * 3, "--max-new-tokens", "8", "--temperature", "0", *cpu]
    )
    printed = capsys.readouterr()
    assert (
        f"note: the prompt is {len(tok.encode(CODE * 3))} tokens, the model sees 64: keeping the last 64"
        in (printed.err)
    )
    assert printed.out == CODE * 3 + out[0] + "\n"


@pytest.mark.parametrize(
    "settings, words",
    [(dict(top_p=0.0), "top_p must be"), (dict(top_p=1.5), "top_p must be"),
     (dict(prompt=""), "prompt is empty"), (dict(temperature=-1.0), "temperature must be"),
     (dict(n=0), "at least one sample"),
     (dict(max_new_tokens=0), "one new token"), (dict(top_k=0), "top_k must be"),
     (dict(temperature=float("nan")), "temperature must be"), (dict(top_p=float("nan")), "top_p must be")],
)  # fmt: skip
def test_bad_settings_are_one_line_errors(loaded, settings, words):
    model, tok = loaded
    kwargs = dict(prompt=PROMPT) | settings
    with pytest.raises(ValueError) as e:
        sample.complete(model, tok, **kwargs)
    assert "\n" not in str(e.value) and words in str(e.value)


def test_bad_checkpoints_are_one_line_errors(ckpt, tmp_path):
    other = make_checkpoint(tmp_path / "other", vocab_size=280)
    bare = tmp_path / "hf"
    GPT.from_pretrained(ckpt).save_pretrained(bare)  # an HF-format folder with no tokenizer beside it
    cases = [(ckpt, other / "tokenizer.bpe"), (bare, None), (tmp_path / "missing", None)]
    for checkpoint, tokenizer in cases:
        with pytest.raises((ValueError, OSError)) as e:
            sample.load_model(checkpoint, tokenizer)
        assert "\n" not in str(e.value) and str(checkpoint if tokenizer is None else tokenizer) in str(
            e.value
        )
    model, tok = sample.load_model(bare, ckpt / "tokenizer.bpe")  # with --tokenizer it loads
    assert tok.vocab_size == model.config.vocab_size


def test_a_checkpoint_pruned_while_it_is_read_gives_way_to_the_newer_one(tmp_path, monkeypatch):
    run = tmp_path / "run"
    old, new = make_checkpoint(run / "ckpt-0000002"), make_checkpoint(run / "ckpt-0000004", seed=1)
    (run / "latest").write_text(old.name + "\n")
    read = GPT.from_pretrained

    def trainer_saves_and_prunes_meanwhile(folder):
        if folder == old:  # `latest` moves on, then the prune has deleted some files when the read comes
            (run / "latest").write_text(new.name + "\n")
            (old / "model.safetensors").unlink()
        return read(folder)

    monkeypatch.setattr(GPT, "from_pretrained", trainer_saves_and_prunes_meanwhile)
    model, _ = sample.load_model(run)
    assert torch.equal(model.transformer.wte.weight, read(new).transformer.wte.weight)
    (new / "model.safetensors").unlink()  # broken, and still the latest: the error is reported
    with pytest.raises(FileNotFoundError, match="ckpt-0000004/model.safetensors: not found"):
        sample.load_model(run)


def test_an_hf_folder_is_read_with_its_vocab_json(loaded, tmp_path):
    model, tok = loaded
    model.save_pretrained(tmp_path)  # config.json + model.safetensors
    tok.save_hf(tmp_path)  # vocab.json + merges.txt, as HF GPT-2 folders hold them; no tokenizer.bpe
    theirs, hf_tok = sample.load_model(tmp_path)
    greedy = partial(sample.complete, prompt=PROMPT, max_new_tokens=16, temperature=0)
    assert greedy(theirs, hf_tok) == greedy(model, tok)
    weights = tmp_path / "model.safetensors"  # an older folder: the same tensors pickled
    torch.save(load_file(weights), tmp_path / "pytorch_model.bin")
    weights.unlink()
    assert greedy(*sample.load_model(tmp_path)) == greedy(model, tok)


class Recorder(io.StringIO):
    """stdout that remembers what was written between flushes."""

    def __init__(self):
        super().__init__()
        self.flushed = []

    def flush(self):
        self.flushed.append(self.getvalue())


def test_cli_streams_one_sample_from_stdin(run_dir, loaded, monkeypatch):
    model, tok = loaded
    out = Recorder()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stdin", io.StringIO(PROMPT))
    cpu = ["--device", "cpu"]  # as `loaded`: CUDA's default would draw from another generator, in bf16
    sample.main(["--checkpoint", str(run_dir), "--prompt", "-", "--max-new-tokens", "12", "--seed=5", *cpu])
    expected = sample.complete(model, tok, PROMPT, max_new_tokens=12, seed=5)[0]
    assert out.getvalue() == PROMPT + expected + "\n"
    assert len(set(out.flushed)) > 2  # the text grew on screen step by step


def test_cli_several_samples_between_rules(run_dir, loaded, tmp_path, capsys):
    model, tok = loaded
    prompt_file = tmp_path / "prompt.py"
    prompt_file.write_text(PROMPT)
    args = ["--checkpoint", str(run_dir), "--prompt-file", str(prompt_file), "--num-samples", "3"]
    args += ["--device", "cpu"]  # as `loaded`: on a GPU machine the CLI's default is CUDA in bfloat16
    sample.main([*args, "--max-new-tokens", "10", "--first-block", "--temperature", "1"])
    expected = sample.complete(
        model, tok, PROMPT, n=3, max_new_tokens=10, temperature=1, stop_at_first_block=True
    )
    assert capsys.readouterr().out == sample.RULE.join(expected) + "\n"


@pytest.mark.parametrize(
    "args, words",
    [(["--prompt", ""], "prompt is empty"), (["--prompt", "x", "--top-p", "1.5"], "top_p"),
     (["--prompt-file", "/nonexistent.py"], "--prompt-file /nonexistent.py: no such file"),
     pytest.param(["--prompt", "x", "--device", "cuda"], "no CUDA device",
                  marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
     (["--prompt", "x", "--device", "hpu"], "cannot use it"),
     (["--prompt", "x", "--device", "gpu0"], "--device gpu0: not a device name (cpu, cuda, cuda:1, ...)"),
     (["--prompt", "x", "--seed", "-1"], "--seed must be an integer in [0, 2**63)"),
     (["--prompt", "x", "--tokenizer", "/nonexistent"], "--tokenizer /nonexistent: no such file or folder"),
     pytest.param(["--prompt", "x", "--device", "mps"], "cannot use it",
                  marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is here"))],
)  # fmt: skip
def test_cli_bad_input_is_one_line(run_dir, args, words):
    with pytest.raises((ValueError, OSError)) as e:
        sample.main(["--checkpoint", str(run_dir), *args])
    assert "\n" not in str(e.value) and words in str(e.value)


def test_a_prompt_file_that_is_not_utf8_is_one_line(run_dir, tmp_path):
    (tmp_path / "latin1.py").write_bytes("s = 'café'\n".encode("latin-1"))
    path = re.escape(str(tmp_path / "latin1.py"))  # TMPDIR may hold regex operators (+, parentheses)
    with pytest.raises(ValueError, match=f"--prompt-file {path}: not UTF-8 text$"):
        sample.main(["--checkpoint", str(run_dir), "--prompt-file", str(tmp_path / "latin1.py")])


@pytest.fixture(scope="module")
def cli(run_dir, tmp_path_factory):
    """Real processes, started together since each pays for starting Python and importing torch."""
    run = partial(
        subprocess.run,
        capture_output=True,
        env=dict(os.environ, PYTHONIOENCODING="utf-8", OMP_NUM_THREADS="1"),
        timeout=300,
    )
    with ThreadPoolExecutor() as pool:
        ok = pool.submit(run, [*SAMPLE, "--checkpoint", str(run_dir), "--prompt", "-", "--temperature", "0",
                               "--max-new-tokens", "8", "--device", "cpu"],
                         input=b"def mean(a):\n")  # fmt: skip
        missing = pool.submit(
            run, [*SAMPLE, "--checkpoint", str(tmp_path_factory.mktemp("empty")), "--prompt", "x"]
        )
        # a seed torch.Generator cannot take: refused before the prompt is echoed
        huge = pool.submit(run, [*SAMPLE, "--checkpoint", str(run_dir), "--prompt", "x", "--seed", "9" * 23])
        ascii_out = pool.submit(
            run,
            [*SAMPLE, "--checkpoint", str(run_dir), "--prompt", "s = 'café'", "--max-new-tokens", "1"],
            env=dict(os.environ, PYTHONIOENCODING="ascii", OMP_NUM_THREADS="1"),  # a terminal without é
        )
        return ok.result(), missing.result(), huge.result(), ascii_out.result()


def test_cli_end_to_end(cli, loaded):
    model, tok = loaded
    ok = cli[0]
    assert ok.returncode == 0, ok.stderr.decode()
    expected = sample.complete(model, tok, "def mean(a):\n", max_new_tokens=8, temperature=0)[0]
    assert ok.stdout.decode() == "def mean(a):\n" + expected + "\n"


def test_cli_error_is_one_line_and_exit_2(cli):
    missing = cli[1]
    err = missing.stderr.decode()
    assert missing.returncode == 2 and missing.stdout == b""
    assert err.startswith("error: ") and err.count("\n") == 1 and "no checkpoint here" in err


def test_cli_refuses_a_seed_torch_cannot_take_before_any_output(cli):
    huge_seed = cli[2]
    err = huge_seed.stderr.decode()
    assert huge_seed.returncode == 2 and huge_seed.stdout == b""  # not even the prompt
    assert err.startswith("error: --seed must be an integer in [0, 2**63)") and err.count("\n") == 1


def test_cli_prints_what_the_terminal_cannot_show_as_escapes(cli):
    ascii_out = cli[3]
    assert ascii_out.returncode == 0, ascii_out.stderr.decode()
    assert ascii_out.stdout.startswith(b"s = 'caf\\xe9'")


def test_without_a_checkpoint_the_demo_model_is_found_here_or_beside_sample_py(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project = tmp_path.resolve() / "project"
    monkeypatch.setattr(sample, "__file__", str(project / "sample.py"))
    with pytest.raises(ValueError, match=r"no trained model in out/tiny or .*/project/out/tiny yet"):
        sample.resolve_checkpoint(None)
    (project / "out" / "tiny").mkdir(parents=True)  # demo.sh run from elsewhere: beside the scripts
    assert sample.resolve_checkpoint(None) == str(project / "out" / "tiny")
    (tmp_path / "out" / "tiny").mkdir(parents=True)  # `python train.py tiny` run here
    assert sample.resolve_checkpoint(None) == "out/tiny"
    assert sample.resolve_checkpoint("mine") == "mine"


def test_a_sample_cut_by_max_new_tokens_keeps_its_last_line_and_a_partial_character(loaded):
    _, tok = loaded
    line = byte_tokens(tok, "\n    x = 1")  # no newline after it: the first block's last line
    model = Scripted([line], tok.vocab_size)
    assert sample.complete(model, tok, "def f():", max_new_tokens=len(line), stop_at_first_block=True) == [
        "\n    x = 1"
    ]
    half = byte_tokens(tok, "\n    s = 'é")[:-1]  # ends in the middle of 'é'
    out = sample.complete(Scripted([half], tok.vocab_size), tok, "def f():", max_new_tokens=len(half))
    assert out == ["\n    s = '\ufffd"]  # the cut character shows as U+FFFD, it is not dropped


def test_a_prompt_file_is_used_exactly_as_given(tmp_path):
    (tmp_path / "p.py").write_text("def f():\n    ")
    args = sample.parse_args(["--prompt-file", str(tmp_path / "p.py")])
    assert sample.read_prompt(args) == "def f():\n    "


def test_a_prompt_of_exactly_the_context_is_not_noted(loaded, ckpt, capsys):
    _, tok = loaded
    prompt = next(CODE[:i] for i in range(len(CODE)) if len(tok.encode(CODE[:i])) == 64)
    sample.main(["--checkpoint", str(ckpt), "--prompt", prompt, "--max-new-tokens", "1"])
    assert "note:" not in capsys.readouterr().err
