"""train.py: configuration, schedule, loss, and that accumulation, DDP and resuming change nothing."""

import codecs
import dataclasses
import errno
import importlib.machinery
import importlib.util
import json
import locale
import math
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from test_data import Crash

import data
import model as model_module
import train
from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parent.parent
STDLIB = Path(os.__file__).parent


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls gain nothing from threads; on a busy machine OpenMP's spinning threads slow them 10x.
    (torchrun's variables, which a CI pod may set, are cleared for the whole session: conftest.py.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# One thread; and malloc as glibc sets it by default, which the page-fault test measures against.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
ENV["OMP_NUM_THREADS"] = "1"


def cpu_compile_missing():
    """Why torch.compile cannot build its C++ kernels on this machine, or None. train.py refuses
    compile=True without a compiler or Python's headers (tested below); the rest fail inside torch.compile."""
    if missing := train.compile_missing(torch.device("cpu")):
        return f"needs {missing}"
    if codecs.lookup(locale.getpreferredencoding(False)).name != "utf-8":  # "utf-8" in UTF-8 mode too
        return "torch.compile reads its own (UTF-8) code templates in the locale's encoding: needs UTF-8"
    if " " in tempfile.gettempdir():  # inductor hands g++ paths under it unquoted, split at the space
        return f"torch.compile cannot build in a temp folder whose path has a space: {tempfile.gettempdir()}"
    return None


NO_CXX = pytest.mark.skipif(cpu_compile_missing() is not None, reason=str(cpu_compile_missing()))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A ~300-token vocabulary over a handful of standard-library modules: builds in about a second."""
    root = tmp_path_factory.mktemp("train_data")
    (root / "src").mkdir()
    for name in (
        "argparse.py",
        "ast.py",
        "calendar.py",
        "csv.py",
        "dataclasses.py",
        "difflib.py",
        "fractions.py",
        "functools.py",
        "inspect.py",
        "shlex.py",
        "textwrap.py",
    ):
        shutil.copy(STDLIB / name, root / "src" / name)
    data.prepare(root / "data", [root / "src"], vocab_size=300, valid_share=0.25, progress=False)
    return root / "data"


def config(dataset, out, **knobs):
    tiny = dict(
        model="",
        n_layer=2,
        n_head=2,
        n_embd=32,
        context=16,
        batch_size=8,
        max_steps=6,
        lr=3e-3,
        warmup_steps=2,
        log_interval=1,
        eval_interval=1000,
        eval_tokens=256,
        save_interval=1000,
        device="cpu",
    )
    return train.TrainConfig(data_dir=str(dataset), out_dir=str(out), **{**tiny, **knobs})


def cli(cfg):
    return [f"--{k}={v}" for k, v in vars(cfg).items()]


def torchrun(cfg, script="train.py"):
    """Two processes under torchrun (gloo), from the interpreter running the tests."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script]
    return subprocess.run(cmd + cli(cfg), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


def errors(result):  # stderr without tqdm's bars, for assertion messages
    return "\n".join(line for line in result.stderr.splitlines() if "step/s" not in line)[-3000:]


def weights(out):
    return load_file(train.latest_checkpoint(out) / "model.safetensors")


def logged(out, key="loss"):
    lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if key in r]
    assert len({r["step"] for r in records}) == len(records), "a step logged twice"  # resumes cut back
    return {r["step"]: r[key] for r in records}


def assert_same_weights(a, b, exact=False):
    assert a.keys() == b.keys()
    for name in a:
        if exact:
            assert torch.equal(a[name], b[name]), name
        else:
            torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)


# --- configuration ---------------------------------------------------------------------------------------
def test_config_names_resolve_and_values_parse():
    assert (
        train.config_path("tiny")
        == train.config_path("configs/tiny.py")
        == train.config_path("config/tiny.py")
    )
    cfg = train.load_config(["tiny", "--dropout=0", "--compile=true", "--max_steps=1e3", "--resume"])
    assert (cfg.dropout, cfg.compile, cfg.max_steps, cfg.resume) == (0.0, True, 1000, True)
    assert type(cfg.dropout) is float
    sizes = {"small": "111.0M", "xl": "1529.6M", "codeparrot_ds": None, "gpt2_bookcorpus": None}
    for name, millions in sizes.items():  # every shipped config builds its model: the book's sizes at 32,768
        with torch.device("meta"):
            m = GPT(train.model_config(train.load_config([name]), 32768))
        assert millions is None or f"{m.num_params() / 1e6:.1f}M" == millions


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr_min=0.1"], "did you mean min_lr"),
        (["--batch_size=eight"], "batch_size='eight' is not a valid int"),
        (["--compile=maybe"], "is not a valid bool"),
        (["--schedule=cosin"], "not one of cosine, linear, constant"),
        (["nosuchconfig"], "config 'nosuchconfig' not found; use one of"),
        (["my/tiny.py"], "config 'my/tiny.py' not found"),  # a typo, not configs/tiny.py in its place
        (["--grad_clip=-1"], "grad_clip=-1.0 must be zero or positive"),  # would flip every gradient
        (["--beta2=1"], r"beta2=1.0 must be in \[0, 1\)"),
        (["--max_steps", "10"], "--max_steps needs a value: write --max_steps=VALUE"),  # not max_steps=True
        (["tiny", "small"], r"unexpected argument 'small'; usage: train.py \[CONFIG\] \[--key=value ...\]"),
        (["--batch_size=0"], "batch_size=0 must be positive"),
        (["--lr=nan"], "lr=nan must be positive"),  # NaN fails every comparison, so `> 0` is written to fail
        (["--warmup_steps=-5"], "warmup_steps=-5 must be zero or positive"),
        (["--lr=inf"], "lr=inf must be a finite number"),
        (["--min_lr=0.1", "--lr=0.01"], "min_lr=0.1 must be at most lr=0.01"),
        ([f"--seed={2**62}"], "must be below 2\\*\\*62"),
        (["--model=gpt2", "--n_layer=3"], "model='gpt2' and n_layer both set the model's size; give one"),
        (["--model=gpt2-xl", "--n_embd=64"], "command line: model='gpt2-xl' and n_embd both set"),  # as typed
    ],
)
def test_config_errors_are_clear(argv, message):
    with pytest.raises(ValueError, match=message):
        train.load_config(argv)


def test_min_lr_may_equal_lr_for_a_constant_rate_after_warmup():
    cfg = train.load_config(["--lr=0.01", "--min_lr=0.01"])
    assert cfg.min_lr == cfg.lr == 0.01
    assert train.learning_rate(cfg.max_steps // 2, cfg) == pytest.approx(0.01)


def test_help_after_a_config_name_shows_its_values(capsys):
    train.main(["small", "-h", "--lr=1e-4"])
    out = capsys.readouterr().out
    assert "usage: train.py [CONFIG] [--key=value ...]" in out
    assert "--max_steps=150000" in out and "--lr=0.0001" in out  # small.py's, and the override
    knobs = out[out.index("usage:") :].splitlines()[1:]
    assert len(knobs) == len(train.fields(train.TrainConfig))  # each with what it means, from its comment
    assert all(re.fullmatch(r"  --\w+=\S+ +\S.*", line) for line in knobs), knobs
    assert any(line.endswith("AdamW's second-moment decay (beta1 is 0.9)") for line in knobs)
    train.main(["--data_dir=/scratch/datasets/codeparrot-clean", "--help"])  # wider than the column
    assert "--data_dir='/scratch/datasets/codeparrot-clean' a dataset made" in capsys.readouterr().out


def test_help_into_a_closed_pipe_ends_quietly():
    """`train.py --help | head -1`: the reader is gone, so the writer ends as `cat` does, without an error."""
    # Block-buffered, as stdout into a pipe is in a plain shell: with PYTHONUNBUFFERED (set on some
    # machines), the help's first write fails inside main(), and run_cli's final flush goes untested.
    env = {k: v for k, v in ENV.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen([sys.executable, "train.py", "--help"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.close()
    assert proc.wait(timeout=120) == -signal.SIGPIPE and proc.stderr.read() == b""


def test_help_with_stdout_closed_ends_without_a_traceback():
    """`train.py --help >&-`: Python's sys.stdout is then None, which run_cli's final flush must skip."""
    cmd = ["bash", "-c", 'exec "$0" train.py --help >&-', sys.executable]
    closed = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True)
    assert closed.returncode == 0 and b"Traceback" not in closed.stderr, closed.stderr.decode()[-2000:]


def test_integers_are_parsed_exactly():
    assert train.load_config(["--seed=9007199254740993", "--max_steps=1_000"]).seed == 9007199254740993
    assert train.load_config(["--max_steps=1e3"]).max_steps == 1000


def test_a_named_size_is_stored_and_command_line_sizes_override_it(tmp_path):
    small = train.load_config(["small"])  # model="gpt2": the numbers are filled in for config.json
    assert (small.model, small.n_layer, small.n_head, small.n_embd) == ("gpt2", 12, 12, 768)
    xl = train.load_config(["xl", "--n_layer=2"])  # a smaller xl to try it: the other sizes stay xl's
    assert (xl.model, xl.n_layer, xl.n_head, xl.n_embd) == ("", 2, 25, 1600)
    (tmp_path / "mine.py").write_text("_tokens = 4e6\nmax_steps = _tokens / 2e3\nweight_decay = 0\n")
    mine = train.load_config([str(tmp_path / "mine.py")])  # 2000.0 is a whole number; 0 a float knob's
    assert (mine.max_steps, type(mine.max_steps), mine.weight_decay, type(mine.weight_decay)) == (
        2000, int, 0.0, float)  # fmt: skip
    (tmp_path / "sized.py").write_text(
        "model = ''\nn_layer, n_head, n_embd = 2, 2, 64\n"
    )  # as the error says
    named = train.load_config([str(tmp_path / "sized.py"), "--model=gpt2"])  # the command line's name wins
    assert (named.model, named.n_layer, named.n_head, named.n_embd) == ("gpt2", 12, 12, 768)
    assert train.with_named_size(train.TrainConfig(model="gpt2-xl", n_layer=2)).n_layer == 48  # from Python


def test_config_file_unknown_key_names_the_file(tmp_path):
    (tmp_path / "mine.py").write_text("import math\nwarmup_step = int(math.sqrt(100))\n")
    with pytest.raises(
        ValueError, match=r"mine.py: unknown config key 'warmup_step'; did you mean warmup_steps"
    ):
        train.load_config([str(tmp_path / "mine.py")])


def test_config_file_with_a_syntax_error_names_the_file(tmp_path):
    (tmp_path / "typo.py").write_text("max_steps = (\n")
    with pytest.raises(ValueError, match=r"typo.py: SyntaxError"):
        train.load_config([str(tmp_path / "typo.py")])


def test_a_bad_model_size_leaves_the_run_folder_untouched(dataset, tmp_path):
    with pytest.raises(ValueError, match="divisible by n_head=3"):
        train.train(config(dataset, tmp_path / "run", n_head=3))
    assert not (tmp_path / "run").exists()  # so the corrected command can start there


def test_resume_survives_a_torn_metrics_line_and_keeps_the_newest(dataset, tmp_path):
    run = tmp_path / "run"
    train.train(config(dataset, run, max_steps=2, save_interval=1, keep_last=1))
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "lo')  # a crash in the middle of an append
    shutil.copytree(run / "ckpt-0000002", run / "ckpt-0000009")  # a newer leftover, e.g. after a rollback
    train.train(config(dataset, run, max_steps=4, save_interval=1, keep_last=1, resume=True))
    assert train.latest_checkpoint(run).name == "ckpt-0000004"  # kept although a newer name exists
    assert [r["step"] for r in train.read_metrics(run) if "loss" in r] == [1, 2, 3, 4]


def test_cli_errors_exit_2_with_one_line(tmp_path):
    for args, message in (
        (["--bogus=1"], "unknown config key 'bogus'"),
        ([f"--data_dir={tmp_path}/none", f"--out_dir={tmp_path}/run"], "data.py prepare"),
        ([f"--data_dir={__file__}", f"--out_dir={tmp_path}/run"], "no dataset here (no meta.json)"),  # a file
    ):
        result = subprocess.run(
            [sys.executable, "train.py", *args],
            cwd=ROOT,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: ") and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


# --- schedule, parameter groups, loss --------------------------------------------------------------------
def test_schedule_warmup_peak_and_end():
    cfg = train.TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    lr = [train.learning_rate(s, cfg) for s in range(111)]
    assert lr[0] == pytest.approx(1e-4) and lr[4] == pytest.approx(5e-4)  # linear warmup
    assert lr[9] == lr[10] == pytest.approx(1e-3)  # peak
    assert lr[60] == pytest.approx(5.5e-4)  # cosine halfway: the mean of lr and min_lr
    assert lr[110] == pytest.approx(1e-4) and min(lr) == pytest.approx(1e-4)  # ends at the floor
    linear = train.TrainConfig(lr=1e-3, min_lr=0.0, warmup_steps=10, max_steps=110, schedule="linear")
    assert train.learning_rate(35, linear) == pytest.approx(7.5e-4)
    constant = train.TrainConfig(lr=1e-3, warmup_steps=10, max_steps=110, schedule="constant")
    assert train.learning_rate(100, constant) == 1e-3


def test_weight_decay_only_on_matrices():
    model = GPT(GPTConfig(vocab_size=300, context=16, n_layer=2, n_head=2, n_embd=32))
    decay, no_decay = train.make_optimizer(model, train.TrainConfig()).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "transformer.h.0.ln_1.weight" in exempt and "transformer.ln_f.bias" in exempt
    assert "transformer.h.1.attn.c_attn.bias" in exempt
    assert "transformer.h.1.mlp.c_fc.weight" in decayed and "transformer.wte.weight" in decayed
    assert all(p.dim() == 1 for p in no_decay["params"]) and all(p.dim() == 2 for p in decay["params"])
    assert len(decayed) + len(exempt) == len(list(model.parameters()))
    # the book's name filter: "LayerNorm.weight" matches none of GPT-2's ln_1/ln_2/ln_f weights
    assert not any("LayerNorm.weight" in n for n in exempt)


def course_keytoken_weighted_loss(inputs, logits, keytoken_ids, alpha=1.0):
    """The HF course's function, restated: inputs (B, T+1), logits (B, T+1, V)."""
    shift_labels, shift_logits = inputs[..., 1:], logits[..., :-1, :]
    loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), reduction="none"
    )
    loss_per_sample = loss.view(shift_logits.size(0), shift_logits.size(1)).mean(axis=1)
    weights = torch.stack([(inputs == kt).float() for kt in keytoken_ids]).sum(axis=[0, 2])
    return (loss_per_sample * alpha * (1.0 + weights)).mean()


@pytest.mark.parametrize(
    "name, tflops",
    [("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835),
     ("NVIDIA H200", 989), ("NVIDIA H200 NVL", 835), ("NVIDIA GH200 480GB", 989),
     ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA L40S", 362), ("NVIDIA L40", 181), ("NVIDIA L4", 121),
     ("Tesla V100-SXM2-32GB", 125), ("NVIDIA GeForce RTX 4090", None)],
)  # fmt: skip
def test_peak_flops_by_device_name(monkeypatch, name, tflops):
    """MFU's denominator: the dense bf16 peak of the card torch names (no GPU needed to check the table)."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert train.peak_flops(torch.device("cuda", 0)) == (tflops * 1e12 if tflops else None)
    assert train.peak_flops(torch.device("cpu")) is None


def test_keytoken_loss_matches_the_course():
    gen = torch.Generator().manual_seed(0)
    window = torch.randint(0, 20, (4, 9), generator=gen)
    logits = torch.randn(4, 9, 20, generator=gen)
    key_ids = torch.tensor([3, 7, 11])
    x, y = window[:, :-1], window[:, 1:]
    ours = train.keytoken_weighted_loss(x, y, logits[:, :-1], key_ids, alpha=0.5)
    assert ours.item() == pytest.approx(
        course_keytoken_weighted_loss(window, logits, key_ids, 0.5).item(), rel=1e-6
    )


def test_keytoken_ids_keep_single_tokens():
    class Stub:
        def encode(self, text):
            return {"plt": [5], " plt": [6], "fit": [9], " predict": [1, 2]}.get(text, [7, 8])

    assert train.keytoken_ids(Stub(), say=lambda line: None).tolist() == [5, 6, 9]


# --- the loop --------------------------------------------------------------------------------------------
FAULTS = """
import resource, sys, torch
import train
from model import GPT, GPTConfig
if sys.argv[1] == "keep":
    train.keep_freed_memory()
model = GPT(GPTConfig(vocab_size=32768, context=80, n_layer=1, n_head=2, n_embd=32))
idx = torch.randint(0, 32768, (4, 81))
faults = []
for step in range(10):  # the heap settles over the first few steps; count the faults of the last six
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model.zero_grad(set_to_none=True)
    model(idx[:, :-1], idx[:, 1:])[1].backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
# The quietest step's: by default every step maps its logits afresh. A kernel that pages out cold memory
# (a DAMON pageout scheme runs on the development machine) can take kept pages back: a full suite saw a kept
# run fault in half its steps, which failed when this printed the median step's faults.
print(min(faults[4:]))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_kept_memory_is_reused_without_page_faults():
    def faults(mode):
        cmd = [sys.executable, "-c", FAULTS, mode]
        return int(subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, check=True).stdout)

    # 42 MB logits, past the 32 MB up to which glibc learns to keep blocks: ~40,000 new pages a step
    default, kept = faults("default"), faults("keep")
    assert kept < default / 10, (kept, default)


def test_grad_accumulation_equals_one_big_batch(dataset, tmp_path):
    train.train(config(dataset, tmp_path / "big", batch_size=8, grad_accum=1))
    train.train(config(dataset, tmp_path / "acc", batch_size=2, grad_accum=4))
    assert_same_weights(weights(tmp_path / "big"), weights(tmp_path / "acc"))


def test_gradients_are_all_reduced_once_per_step_however_many_micro_steps(dataset, tmp_path):
    """DDP's all-reduce is held back (no_sync) on all but the last micro-step; counted with a comm hook in a
    one-process group whose Run says two, so that optimizer_step takes its DDP path."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        rounds = {}
        for grad_accum in (1, 4):
            cfg = config(dataset, tmp_path / str(grad_accum), batch_size=2, grad_accum=grad_accum)
            run = train.build_run(cfg, 0, 1, torch.device("cpu"), data.load_meta(dataset))
            run.world, calls = 2, []
            train.distribute(run)

            def count(state, bucket, calls=calls):  # all-reduce nothing, just count the bucket
                calls.append(bucket.index())
                future = torch.futures.Future()
                future.set_result(bucket.buffer())
                return future

            run.train_model.register_comm_hook(None, count)
            train.optimizer_step(run)
            rounds[grad_accum] = len(calls)
        assert rounds[4] == rounds[1] > 0
    finally:
        dist.destroy_process_group()


def test_a_set_up_mistake_on_one_rank_ends_every_rank_in_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(train, "failed_ranks", lambda *args: [1])  # the all-reduce of who failed
    with pytest.raises(SystemExit) as e, train.agreed(1, 2, torch.device("cpu")):
        raise ValueError("out/stdlib: no dataset here")
    assert e.value.code == 2 and "error on rank 1: out/stdlib: no dataset here" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e, train.agreed(2, 3, torch.device("cpu")):
        pass  # rank 2 was fine: it stops too, quietly, and rank 0 names rank 1
    assert e.value.code == 2
    with pytest.raises(ValueError, match="set-up failed on rank 1: see its error above"):
        with train.agreed(0, 3, torch.device("cpu")):
            pass


# compiled, dynamo splits the graph at DDP's gradient buckets
@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=NO_CXX)])
def test_ddp_two_processes_equal_one_with_twice_the_accumulation(dataset, tmp_path, compile):
    result = torchrun(
        config(dataset, tmp_path / "ddp", batch_size=2, grad_accum=2, max_steps=4, compile=compile)
    )
    assert result.returncode == 0, errors(result)
    assert result.stdout.count("step 4: val loss") == 1  # rank 0 alone prints
    train.train(config(dataset, tmp_path / "one", batch_size=2, grad_accum=4, max_steps=4, compile=compile))
    assert_same_weights(weights(tmp_path / "ddp"), weights(tmp_path / "one"))
    for step, loss in logged(tmp_path / "one").items():
        assert logged(tmp_path / "ddp")[step] == pytest.approx(loss, rel=1e-5)
    for key in ("val_loss", "grad_norm"):  # evaluation all-reduced over both ranks' windows; same gradients
        assert logged(tmp_path / "ddp", key)[4] == pytest.approx(logged(tmp_path / "one", key)[4], rel=1e-5)
    state = torch.load(train.latest_checkpoint(tmp_path / "ddp") / "train_state.pt", weights_only=True)
    assert len(state["rng"]) == 2 and state["world_size"] == 2
    if not compile:  # resumed by one process, same global batch: the data goes on where the two left off
        shutil.copytree(tmp_path / "ddp", tmp_path / "ddp_again")
        for run in ("ddp", "one"):
            train.train(config(dataset, tmp_path / run, batch_size=2, grad_accum=4, max_steps=6, resume=True))
        assert sorted(logged(tmp_path / "ddp")) == [1, 2, 3, 4, 5, 6]
        for step in (5, 6):
            assert logged(tmp_path / "ddp")[step] == pytest.approx(logged(tmp_path / "one")[step], rel=1e-5)
        # With dropout the new world size's fresh random stream shows: the same on every such resume.
        knobs = dict(batch_size=2, grad_accum=4, max_steps=6, dropout=0.5, resume=True)
        runs = [shutil.copytree(tmp_path / "ddp_again", tmp_path / f"drop{i}") for i in range(2)]
        for run in runs:
            train.train(config(dataset, run, **knobs))
        assert logged(runs[0]) == logged(runs[1]) and logged(runs[0])[5] != logged(tmp_path / "ddp")[5]


def test_ddp_resume_with_the_same_processes_is_exact(dataset, tmp_path):
    # Each rank goes on with its own saved random stream (dropout) and its own share of the data.
    knobs = dict(batch_size=2, max_steps=4, save_interval=2, keep_last=0, dropout=0.1)
    assert torchrun(config(dataset, tmp_path / "straight", **knobs)).returncode == 0
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "ckpt-0000004")
    (tmp_path / "resumed" / "latest").write_text("ckpt-0000002\n")  # as if stopped after step 2
    result = torchrun(config(dataset, tmp_path / "resumed", **knobs, resume=True))
    assert result.returncode == 0, errors(result)
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "resumed"), exact=True)
    assert logged(tmp_path / "straight") == logged(tmp_path / "resumed")


RANK_1_WITHOUT_DATA = """
import os, runpy, sys
if os.environ["RANK"] == "1":  # as on a node whose disk lacks the dataset
    sys.argv.append("--data_dir=/nonexistent/dataset")
sys.path.insert(0, os.getcwd())  # train.py's folder, for its imports
runpy.run_path("train.py", run_name="__main__")
"""


def test_a_set_up_error_on_rank_1_is_named_by_rank_0_and_nothing_is_written(dataset, tmp_path):
    (tmp_path / "rank_1_without_data.py").write_text(RANK_1_WITHOUT_DATA)
    result = torchrun(config(dataset, tmp_path / "run"), script=tmp_path / "rank_1_without_data.py")
    assert result.returncode != 0
    assert result.stderr.count("error on rank 1: /nonexistent/dataset: no dataset here") == 1
    assert result.stderr.count("error: set-up failed on rank 1: see its error above") == 1
    assert not (tmp_path / "run").exists()  # rank 0 writes only once every rank is set up


RANK_1_ARGS = """
import json, os, runpy, sys
if os.environ["RANK"] == "1":  # as on a node whose command line (or machine) differs
    sys.argv += os.environ["RANK_1_ARGS"].split()
    os.environ.update(json.loads(os.environ["RANK_1_ENV"]))
sys.path.insert(0, os.getcwd())  # train.py's folder, for its imports
runpy.run_path("train.py", run_name="__main__")
"""


@pytest.mark.parametrize(
    "knobs, rank_1_args, rank_1_env, message",
    [
        ({}, "--learnin_rate=0.01", {}, "error on rank 1: command line: unknown config key 'learnin_rate'"),
        (
            {},
            "--lr=0.01",
            {},
            "error on rank 1: the config differs from rank 0's (lr=0.01 here, 0.003 there)",
        ),
        (
            {"compile": True},
            "",
            {"CXX": "no-such-compiler"},
            "error on rank 1: compile=True on cpu needs a C++ compiler, and 'no-such-compiler' is not found",
        ),
    ],
)
def test_a_command_that_differs_on_one_node_stops_every_rank(
    dataset, tmp_path, knobs, rank_1_args, rank_1_env, message
):
    """An unknown key on one node left the others waiting at the group's start for torch's timeout; another
    value (lr) trained a replica that drifted from rank 0's, silently; a node without a compiler for
    compile=True used to fail before joining the group, also leaving the others waiting."""
    (tmp_path / "rank_1_args.py").write_text(RANK_1_ARGS)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [str(tmp_path / "rank_1_args.py"), *cli(config(dataset, tmp_path / "run", **knobs))]
    env = ENV | {"RANK_1_ARGS": rank_1_args, "RANK_1_ENV": json.dumps(rank_1_env)}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert result.stderr.count(message) == 1, errors(result)
    assert result.stderr.count("error: set-up failed on rank 1: see its error above") == 1, errors(result)
    assert not (tmp_path / "run").exists()  # stopped before rank 0 wrote anything


def test_every_node_must_run_the_same_config_but_its_paths_may_differ():
    cfg = train.TrainConfig(data_dir="/mnt/a/data", out_dir="/mnt/a/run")
    theirs = dataclasses.asdict(dataclasses.replace(cfg, data_dir="/scratch/data", out_dir="/scratch/run"))
    train.check_same_config(cfg, theirs)  # rank 0's node mounts the files elsewhere: fine
    train.check_same_config(cfg, None)  # rank 0's own command line was refused: its agreement stops all
    with pytest.raises(ValueError) as e:
        train.check_same_config(dataclasses.replace(cfg, lr=0.01, max_steps=5), theirs)
    assert str(e.value) == (
        "the config differs from rank 0's (max_steps=5 here, 10000 there, lr=0.01 here, 0.0005 there); "
        "run the same command on every node"
    )


@pytest.mark.parametrize(
    "error",
    [
        ValueError("command line: unknown config key 'lr_min'"),
        PermissionError(errno.EACCES, "Permission denied"),
    ],
)
def test_a_config_error_under_torchrun_joins_the_others_failure(monkeypatch, error):
    """A config this node cannot read (OSError) fails the other ranks' first set-up round with this one, as a
    refused command line (ValueError) does, rather than leaving them to wait for torch's timeout."""
    joined = []

    def refused(argv):
        raise error

    monkeypatch.setattr(train, "load_config", refused)
    monkeypatch.setattr(train, "fail_with_the_others", joined.append)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(type(error)):
        train.main(["configs/mine.py"])
    assert joined == [error]


def test_a_loss_curve_with_no_point_yet_is_drawn_without_a_warning(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "metrics.jsonl").write_text("")  # a run stopped before its first log
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train.plot_losses(tmp_path)
    # matplotlib's "No artists with labels found to put in legend"
    assert not [w for w in caught if "legend" in str(w.message)]
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")


def test_tensorboard_and_wandb_get_every_record_of_metrics_jsonl(dataset, tmp_path, monkeypatch):
    """Switched on and installed: the same records, at the same steps, as metrics.jsonl. W&B is a stand-in
    (the real one needs an account or starts a service process); TensorBoard is real, read back from its
    event files."""
    pytest.importorskip("tensorboard", reason="TensorBoard logging needs the tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    calls = []

    class WandbRun:  # what wandb.init returns
        def log(self, record, step):
            calls.append(("log", record, step))

        def finish(self):
            calls.append(("finish",))

    wandb = type(sys)("wandb")
    wandb.__spec__ = importlib.machinery.ModuleSpec("wandb", None)  # found by train.installed
    wandb.init = lambda **kwargs: calls.append(("init", kwargs)) or WandbRun()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    out = tmp_path / "run"
    cfg = config(dataset, out, max_steps=4, eval_interval=2, tensorboard=True, wandb=True)
    train.train(cfg)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "val_loss"} <= {key for r in records for key in r}
    assert calls == [
        ("init", {"project": "codeparrot", "config": dataclasses.asdict(cfg), "dir": out}),
        *[("log", r, r["step"]) for r in records],
        ("finish",),
    ]
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    for key in ("loss", "lr", "val_loss", "val_bpb"):  # float32 in the event file
        expected = [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in records if key in r]
        assert [(e.step, e.value) for e in events.Scalars(key)] == expected, key


def test_tensorboard_or_wandb_switched_on_but_not_installed_is_a_note(dataset, tmp_path, monkeypatch, capsys):
    for name in ("tensorboard", "wandb"):
        monkeypatch.setitem(sys.modules, name, None)  # find_spec then finds nothing, as when not installed
    out = tmp_path / "run"
    train.train(config(dataset, out, max_steps=2, tensorboard=True, wandb=True))
    printed = capsys.readouterr().out
    for name in ("tensorboard", "wandb"):
        assert f"note: {name} is not installed; not logging to it" in printed
    assert logged(out).keys() == {1, 2} and not (out / "tensorboard").exists()


def test_resume_is_exact_and_checkpoints_are_complete(dataset, tmp_path):
    # constant after warmup, so a 4-step run is the first half of the 8-step one; dropout tests RNG restore
    knobs = dict(schedule="constant", warmup_steps=6, dropout=0.1, save_interval=3, keep_last=2)
    train.train(config(dataset, tmp_path / "whole", max_steps=8, **knobs))
    train.train(config(dataset, tmp_path / "split", max_steps=4, **knobs))
    with pytest.raises(ValueError, match="already holds a run"):
        train.train(config(dataset, tmp_path / "split", max_steps=8, **knobs))
    result = train.train(config(dataset, tmp_path / "split", max_steps=8, resume=True, **knobs))
    assert result["step"] == 8 and math.isfinite(result["val_loss"]) and result["val_bpb"] > 0
    assert logged(tmp_path / "split") == logged(tmp_path / "whole")  # identical losses, no duplicate steps
    assert_same_weights(weights(tmp_path / "split"), weights(tmp_path / "whole"), exact=True)
    run = tmp_path / "whole"
    if importlib.util.find_spec("matplotlib"):  # the loss curve, drawn from metrics.jsonl
        assert (run / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert (run / "latest").read_text().strip() == "ckpt-0000008"
    assert sorted(p.name for p in run.glob("ckpt-*")) == ["ckpt-0000006", "ckpt-0000008"]  # keep_last=2
    ckpt = train.latest_checkpoint(run)
    assert {p.name for p in ckpt.iterdir()} == {
        "model.safetensors",
        "config.json",
        "tokenizer.bpe",
        "train_config.json",
        "train_state.pt",
    }
    assert json.loads((ckpt / "train_config.json").read_text())["max_steps"] == 8
    assert GPT.from_pretrained(ckpt).config.n_embd == 32 and train.latest_checkpoint(ckpt) == ckpt


def test_resume_needs_a_checkpoint(dataset, tmp_path):
    with pytest.raises(ValueError, match="no checkpoint to resume"):
        train.train(config(dataset, tmp_path / "empty", resume=True))
    (tmp_path / "a_file").touch()
    with pytest.raises(ValueError, match="a_file: out_dir is a file"):
        train.train(config(dataset, tmp_path / "a_file"))
    with pytest.raises(ValueError, match="no checkpoint here"):
        train.latest_checkpoint(tmp_path)
    train.train(config(dataset, tmp_path / "run", max_steps=2))
    state = train.latest_checkpoint(tmp_path / "run") / "train_state.pt"
    (state.parent / "train_config.json").write_text('{"lr": 0.1')  # torn
    with pytest.raises(ValueError, match="train_config.json: not valid JSON .*earlier checkpoint"):
        train.train(config(dataset, tmp_path / "run", max_steps=4, resume=True))
    for damage in (lambda: state.write_bytes(b"junk"), state.unlink):  # torn, then gone
        damage()
        with pytest.raises(ValueError, match="train_state.pt: unreadable .*earlier checkpoint"):
            train.train(config(dataset, tmp_path / "run", max_steps=4, resume=True))
    (tmp_path / "run" / "latest").write_text("ckpt-0009999\n")
    with pytest.raises(ValueError, match="latest names 'ckpt-0009999', which is not there"):
        train.train(config(dataset, tmp_path / "run", max_steps=4, resume=True))


def test_saves_cut_short_by_a_crash_are_cleared(dataset, tmp_path):
    train.train(config(dataset, tmp_path / "run", max_steps=2))
    for stale in ("ckpt-0001234.tmp", "ckpt-0001234.tmp.tmp"):  # a save at step 1,234 that never finished
        (tmp_path / "run" / stale).mkdir()
        (tmp_path / "run" / stale / "model.safetensors").write_bytes(b"half")
    train.train(config(dataset, tmp_path / "run", max_steps=3, resume=True))
    assert sorted(p.name for p in (tmp_path / "run").glob("ckpt-*")) == ["ckpt-0000002", "ckpt-0000003"]
    (tmp_path / "new").mkdir()  # as another rank sees a new run folder while rank 0 writes config.json
    (tmp_path / "new" / "config.json.tmp").write_text("{")
    assert train.train(config(dataset, tmp_path / "new", max_steps=1))["step"] == 1


def test_a_local_rank_without_its_gpu_is_one_line(monkeypatch):
    """A scheduler that shows each process one GPU while torchrun numbers them 0..7 would otherwise fail
    deep in torch.cuda.set_device."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(ValueError, match="LOCAL_RANK=3, but this process sees 1 GPU"):
        train.setup_distributed(train.TrainConfig(device="auto"))


def test_a_start_that_saved_no_checkpoint_is_started_over(dataset, tmp_path, capsys):
    """A start that died before its first save (out of memory at step 1, say) left config.json and
    metrics.jsonl but nothing to resume: --resume says so, and a plain start replaces them."""
    dead = tmp_path / "dead"
    dead.mkdir()
    (dead / "config.json").write_text("{}")
    (dead / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 9.9}) + "\n")
    with pytest.raises(ValueError, match="no checkpoint to resume"):
        train.train(config(dataset, dead, max_steps=2, resume=True))
    train.train(config(dataset, dead, max_steps=2))
    assert "stopped before its first checkpoint; starting over" in capsys.readouterr().out
    assert sorted(logged(dead)) == [1, 2] and logged(dead)[1] != 9.9
    (dead / "latest").unlink()  # a crash between a save's rename and `latest`: that save is not lost
    with pytest.raises(ValueError, match="already holds a run"):
        train.train(config(dataset, dead, max_steps=4))
    with pytest.raises(ValueError, match="write 'ckpt-0000002' into"):
        train.train(config(dataset, dead, max_steps=4, resume=True))
    GPT(GPTConfig(vocab_size=10, context=4, n_layer=1, n_head=1, n_embd=4)).save_pretrained(tmp_path / "hf")
    with pytest.raises(ValueError, match="hf holds other files .model.safetensors., no run of train.py.s"):
        train.train(config(dataset, tmp_path / "hf", max_steps=2))


def test_a_failed_start_writes_nothing_and_another_shape_cannot_resume(dataset, tmp_path):
    with pytest.raises(ValueError, match="learning rate"):  # torch's AdamW refuses it (load_config does too)
        train.train(config(dataset, tmp_path / "bad", lr=-1.0))
    assert not (tmp_path / "bad").exists()  # so the corrected command starts without --resume
    train.train(config(dataset, tmp_path / "run", max_steps=2))
    before = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(ValueError, match="its model has n_embd=32, this run's config 64"):
        train.train(config(dataset, tmp_path / "run", max_steps=4, n_embd=64, resume=True))
    assert (tmp_path / "run" / "config.json").read_text() == before
    data.prepare(
        tmp_path / "other", [dataset.parent / "src"], vocab_size=280, valid_share=0.25, progress=False
    )
    with pytest.raises(
        ValueError, match="300-token vocabulary, the dataset .*other 280; resume with the data_dir"
    ):
        train.train(config(tmp_path / "other", tmp_path / "run", max_steps=4, resume=True))
    # As large a vocabulary, learned on other text: made here, as a part of the standard library gave the
    # same merges on one Python version and no valid split on another.
    (tmp_path / "odd").mkdir()
    pick = random.Random(0).choices
    for i in range(16):
        lines = (f"v{i}_{j} = '{''.join(pick('jkqvwxyz_', k=40))}'\n" for j in range(60))
        (tmp_path / "odd" / f"m{i}.py").write_text("".join(lines))
    data.prepare(tmp_path / "same_size", [tmp_path / "odd"], vocab_size=300, valid_share=0.25, progress=False)
    with pytest.raises(ValueError, match="trained with another tokenizer than the dataset .*same_size's"):
        train.train(config(tmp_path / "same_size", tmp_path / "run", max_steps=4, resume=True))
    (tmp_path / "young").mkdir()
    (tmp_path / "young" / "metrics.jsonl").write_text("")  # started, not saved yet
    with pytest.raises(ValueError, match="young: a run with no checkpoint yet"):
        train.latest_checkpoint(tmp_path / "young")
    (tmp_path / "run" / "latest").write_text("\n")  # emptied by hand: it would name the run folder itself
    with pytest.raises(ValueError, match="latest is empty; write the name of an existing ckpt-"):
        train.train(config(dataset, tmp_path / "run", max_steps=4, resume=True))
    (tmp_path / "run" / "latest").unlink()  # lost: sample.py and evaluate.py name what to write into it
    with pytest.raises(ValueError, match="run has no `latest` file .*; write one of ckpt-0000002 into it"):
        train.latest_checkpoint(tmp_path / "run")


def test_a_second_trainer_in_the_same_folder_is_refused(dataset, tmp_path):
    fcntl = pytest.importorskip("fcntl")
    train.train(config(dataset, tmp_path / "run", max_steps=2))
    with open(tmp_path / "run" / ".lock", "w") as held:  # as a first train.py, still running, holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="run is in use by another train.py; wait for it to end"):
            train.train(config(dataset, tmp_path / "run", max_steps=4, resume=True))
    assert train.train(config(dataset, tmp_path / "run", max_steps=4, resume=True))["step"] == 4  # released


def test_a_set_up_error_on_one_rank_stops_every_rank_in_one_line(dataset, tmp_path):
    fcntl = pytest.importorskip("fcntl")
    train.train(config(dataset, tmp_path / "run", max_steps=2))
    with open(tmp_path / "run" / ".lock", "a") as held:  # only rank 0 takes the lock, so only it fails
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = torchrun(config(dataset, tmp_path / "run", max_steps=4, resume=True))
    assert result.returncode != 0
    assert result.stderr.count("is in use by another train.py") == 1
    assert "[rank1]" not in result.stderr and "Connection closed" not in result.stderr  # rank 1 went quietly
    assert "resuming from" not in result.stdout  # refused before loading the checkpoint
    # rank 0 alone makes the run folder: under a file it fails there, the last thing in set-up
    (tmp_path / "a_file").write_text("")
    result = torchrun(config(dataset, tmp_path / "a_file" / "run"))
    assert result.returncode != 0 and result.stderr.count("error on rank 0: [Errno 20] Not a directory") == 1
    assert "[rank1]" not in result.stderr and "Connection closed" not in result.stderr


def test_the_lock_is_released_when_set_up_fails_and_skipped_where_flock_is_not(
    dataset, tmp_path, monkeypatch
):
    fcntl = pytest.importorskip("fcntl")
    with monkeypatch.context() as patch:
        patch.setattr(train, "RunLog", lambda run: 1 / 0)  # as a failing wandb.init, after the lock
        with pytest.raises(ZeroDivisionError):
            train.train(config(dataset, tmp_path / "run", max_steps=2))
    train.train(config(dataset, tmp_path / "run", max_steps=2))  # not "in use": the lock went with the error

    def no_flock(file, how):  # Lustre mounted without -o flock
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    assert train.train(config(dataset, tmp_path / "run", max_steps=4, resume=True))["step"] == 4


def test_resuming_a_finished_run_says_there_is_nothing_to_do(dataset, tmp_path, capsys):
    train.train(config(dataset, tmp_path / "run", max_steps=2))
    result = train.train(config(dataset, tmp_path / "run", max_steps=2, resume=True, seed=5))
    out = capsys.readouterr().out
    assert "nothing to do, the run is at max_steps=2" in out and result["step"] == 2
    assert (
        "seed=5 is not used: the run goes on with the random streams saved at step 2 (its seed was 1)" in out
    )
    train.train(config(dataset, tmp_path / "run", max_steps=4, resume=True, warmup_steps=0))
    assert (
        "note: the schedule changed (warmup_steps 2 -> 0, max_steps 2 -> 4): the learning rate at step 2 is "
        "0.0015, where the saved run would have used 0" in capsys.readouterr().out
    )


# train.py's own command line, with a signal arriving, as from a scheduler, while step 3 runs
SIGNAL_DURING_STEP_3 = """
import os, signal, sys, train
signum, again = getattr(signal, sys.argv.pop(1)), sys.argv.pop(1) == "again"
step = train.optimizer_step
def step_then_signal(run, caught):
    if run.step == 2:
        os.kill(os.getpid(), signum)
        if again:  # the same signal once more, as torchrun passes a terminal's Ctrl-C on
            os.kill(os.getpid(), signum)
    return step(run, caught)
train.optimizer_step = step_then_signal
train.main()
"""


def test_ctrl_c_under_torchrun_still_saves(dataset, tmp_path):
    """A terminal's Ctrl-C reaches each rank, then torchrun sends it again: that second one must not kill."""
    cfg = config(dataset, tmp_path / "run", max_steps=8)
    cmd = [sys.executable, "-c", SIGNAL_DURING_STEP_3, "SIGINT", "again", *cli(cfg)]
    env = ENV | {"TORCHELASTIC_RUN_ID": "test"}  # as torchrun sets it for its ranks
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGINT, result.stderr[-2000:]
    assert (tmp_path / "run" / "latest").read_text().strip() == "ckpt-0000003"
    cmd[-len(cli(cfg)) :] = cli(dataclasses.replace(cfg, out_dir=str(tmp_path / "plain")))
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    # outside torchrun a second Ctrl-C kills at once, as users expect: nothing is saved
    assert result.returncode == -signal.SIGINT and not (tmp_path / "plain" / "latest").exists()


def test_sigterm_saves_and_resume_matches_uninterrupted(dataset, tmp_path):
    """The signal comes during step 3, which is the last: evaluated (it is due) and saved before a clean
    exit, not a step later."""
    cfg = config(dataset, tmp_path / "killed", max_steps=8, eval_interval=3)
    cmd = [sys.executable, "-c", SIGNAL_DURING_STEP_3, "SIGTERM", "once", *cli(cfg)]
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGTERM, result.stderr[-2000:]  # died of it: not a finished run
    assert "stopped by a signal at step 3" in result.stdout
    assert (tmp_path / "killed" / "latest").read_text().strip() == "ckpt-0000003"
    train.train(dataclasses.replace(cfg, resume=True))
    train.train(config(dataset, tmp_path / "whole", max_steps=8, eval_interval=3))
    assert logged(tmp_path / "killed") == logged(tmp_path / "whole")
    assert logged(tmp_path / "killed", "val_loss") == logged(tmp_path / "whole", "val_loss")
    assert sorted(logged(tmp_path / "whole", "val_loss")) == [3, 6, 8]
    assert_same_weights(weights(tmp_path / "killed"), weights(tmp_path / "whole"), exact=True)


def test_a_save_that_fails_is_one_line_and_keeps_the_checkpoints_before(dataset, tmp_path, monkeypatch):
    save = torch.save

    def full_disk(obj, path):  # what torch.save says when the disk fills mid-write
        if "0000004" in str(path):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 48256 vs 48144")
        save(obj, path)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=r"0000004.tmp: could not be written \(.* unexpected pos .*\); is "):
        train.train(config(dataset, tmp_path / "run", save_interval=2))
    assert train.latest_checkpoint(tmp_path / "run").name == "ckpt-0000002"
    assert not list((tmp_path / "run").glob("*.tmp")) and not (tmp_path / "run" / "ckpt-0000004").exists()


def test_a_checkpoint_is_on_the_disk_before_latest_names_it(dataset, tmp_path, monkeypatch):
    events, fsync, write_atomic = [], os.fsync, train.write_atomic

    def synced(fd):
        events.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    def written(path, data):
        events.append(path)
        write_atomic(path, data)

    monkeypatch.setattr(os, "fsync", synced)
    monkeypatch.setattr(train, "write_atomic", written)
    train.train(config(dataset, tmp_path / "run", max_steps=2, save_interval=2))
    before = {Path(p).name for p in events[: events.index(tmp_path / "run" / "latest")]}
    files = {"model.safetensors", "config.json", "tokenizer.bpe", "train_config.json", "train_state.pt"}
    assert files | {"ckpt-0000002.tmp"} <= before


def test_checkpoints_keep_the_tokenizer_the_run_started_with(dataset, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    shutil.copytree(dataset, data_dir)
    started_with = (data_dir / "tokenizer.bpe").read_bytes()
    step = train.optimizer_step

    def step_then_rebuild(run, caught):  # the dataset is rebuilt, with another tokenizer, mid-run
        (data_dir / "tokenizer.bpe").write_text("{}")
        return step(run, caught)

    monkeypatch.setattr(train, "optimizer_step", step_then_rebuild)
    train.train(config(data_dir, tmp_path / "run", max_steps=2))
    assert (train.latest_checkpoint(tmp_path / "run") / "tokenizer.bpe").read_bytes() == started_with


def test_an_error_mid_run_is_the_last_line(dataset, tmp_path):
    """The progress bar is closed before the error is printed, not redrawn below it at exit."""
    cfg = config(dataset, tmp_path / "run", lr=1e30, warmup_steps=0)
    cmd = [sys.executable, "train.py", *cli(cfg)]
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: step 2: loss nan"), result.stderr


def test_a_signal_noted_during_the_last_step_lets_the_run_finish(dataset, tmp_path, monkeypatch):
    step = train.optimizer_step

    def step_then_signal(run, caught):  # comes after step 2, acted on as step 3, the last, ends
        result = step(run, caught)
        if run.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(train, "optimizer_step", step_then_signal)
    # Should train.py ever stop catching SIGTERM, this keeps it from killing the test session (and the
    # subprocess SIGTERM test above reports it).
    before = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        result = train.train(config(dataset, tmp_path / "run", max_steps=3))
    finally:
        signal.signal(signal.SIGTERM, before)
    assert result["stopped"] == 0 and result["step"] == 3 and "val_loss" in result  # evaluated at the end


@pytest.mark.parametrize("dtype", ["float32", "float16"])  # fp16: its GradScaler must survive a skip
def test_nonfinite_loss_stops_or_is_skipped(dataset, tmp_path, dtype):
    with pytest.raises(ValueError, match="diverged .no checkpoint saved yet.; lower lr"):
        train.train(config(dataset, tmp_path / "stop", lr=1e30, warmup_steps=0, dtype=dtype))
    knobs = dict(lr=1e30, warmup_steps=0, skip_nonfinite=True, dtype=dtype)
    result = train.train(config(dataset, tmp_path / "skip", **knobs))
    assert result["skipped"] >= 1 and result["step"] == 6


def test_steps_fp16s_grad_scaler_skips_are_counted(dataset, tmp_path, monkeypatch):
    # A loss scale of 2**40 overflows fp16's gradients: GradScaler skips each step and halves the scale.
    scaler = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", lambda *a, **k: scaler(*a, **k, init_scale=2.0**40))
    result = train.train(config(dataset, tmp_path / "run", dtype="float16"))
    assert result["skipped"] == 6 and all(math.isfinite(loss) for loss in logged(tmp_path / "run").values())


def test_gradient_clipping_scales_the_update_not_the_logged_norm(dataset, tmp_path):
    train.train(config(dataset, tmp_path / "free", max_steps=2, grad_clip=0.0))
    train.train(config(dataset, tmp_path / "clipped", max_steps=2, grad_clip=1e-3))
    assert logged(tmp_path / "free", "lr") == pytest.approx({1: 1.5e-3, 2: 3e-3})  # each step's own rate
    norms = [logged(tmp_path / run, "grad_norm")[1] for run in ("free", "clipped")]
    assert norms[0] == norms[1] > 1e-3  # the norm before clipping is what is logged
    free, clipped = weights(tmp_path / "free"), weights(tmp_path / "clipped")
    assert not torch.equal(free["transformer.wte.weight"], clipped["transformer.wte.weight"])


def test_train_hands_the_callers_signal_handlers_back(dataset, tmp_path):
    def mine(signum, frame):  # a notebook's or a test runner's own
        pass

    before = {signum: signal.signal(signum, mine) for signum in train.STOP_SIGNALS}
    try:
        train.train(config(dataset, tmp_path / "run", max_steps=1))
        assert all(signal.getsignal(signum) is mine for signum in train.STOP_SIGNALS)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_activation_checkpointing_changes_nothing(dataset, tmp_path, monkeypatch):
    train.train(config(dataset, tmp_path / "plain", max_steps=3))
    calls, recompute = [], model_module.checkpoint
    monkeypatch.setattr(model_module, "checkpoint", lambda *a, **k: calls.append(1) or recompute(*a, **k))
    train.train(config(dataset, tmp_path / "ckpt", max_steps=3, checkpointing=True))
    assert calls  # the knob reached the model
    assert_same_weights(weights(tmp_path / "plain"), weights(tmp_path / "ckpt"), exact=True)


def test_compile_without_a_cpu_compiler_or_python_headers_is_one_line(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler")
    with pytest.raises(ValueError, match=r"on cpu needs a C\+\+ compiler, and 'no-such-compiler' is not"):
        train.train(config(dataset, tmp_path / "run", compile=True))
    monkeypatch.setenv("CXX", sys.executable)  # any program found on PATH
    monkeypatch.setattr(train.sysconfig, "get_path", lambda name: str(tmp_path / "no-headers"))
    with pytest.raises(ValueError, match="needs Python's headers, and Python.h is missing: install them"):
        train.train(config(dataset, tmp_path / "run", compile=True))
    assert not (tmp_path / "run").exists()


def test_compile_on_a_gpu_checks_for_the_c_compiler_triton_builds_with(tmp_path, monkeypatch):
    gpu = torch.device("cuda", 0)  # only its type is read: the check runs on any machine
    (tmp_path / "Python.h").touch()
    monkeypatch.setattr(train.sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", "")
    assert train.compile_missing(gpu).startswith("a C compiler, and 'gcc' or 'clang' is not found")
    monkeypatch.setenv("CC", sys.executable)  # Triton takes $CC as it is, wherever it points
    assert train.compile_missing(gpu) is None
    monkeypatch.setenv("CC", "no-such-cc")
    assert "'no-such-cc' is not found: install one (or point $CC at one)" in train.compile_missing(gpu)


@NO_CXX
def test_compiled_with_checkpointing_trains_as_eager(dataset, tmp_path):
    """The xl recipe compiles a checkpointed model: torch.compile must recompute the blocks in backward
    and still give eager's weights (to rounding: compiled kernels fuse, so they round differently)."""
    train.train(config(dataset, tmp_path / "eager", max_steps=3))
    train.train(config(dataset, tmp_path / "compiled", max_steps=3, checkpointing=True, compile=True))
    assert_same_weights(weights(tmp_path / "eager"), weights(tmp_path / "compiled"))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_trains_and_resumes(dataset, tmp_path, dtype):
    result = train.train(config(dataset, tmp_path / dtype, max_steps=3, dtype=dtype))
    assert math.isfinite(result["val_loss"])
    state = torch.load(train.latest_checkpoint(tmp_path / dtype) / "train_state.pt", weights_only=True)
    assert bool(state["scaler"]) == (dtype == "float16")  # fp16 only: the GradScaler's scale and counters
    train.train(config(dataset, tmp_path / dtype, max_steps=5, dtype=dtype, resume=True))
    assert sorted(logged(tmp_path / dtype)) == [1, 2, 3, 4, 5]
    straight = train.train(config(dataset, tmp_path / "straight", max_steps=5, dtype=dtype))
    plain = train.train(config(dataset, tmp_path / "fp32", max_steps=5, dtype="float32"))
    assert straight["val_loss"] != plain["val_loss"]  # autocast did run in the lower precision
    saved = [torch.load(train.latest_checkpoint(tmp_path / run) / "train_state.pt", weights_only=True)
             for run in (dtype, "straight")]  # fmt: skip
    assert saved[0]["scaler"] == saved[1]["scaler"]  # its scale and growth counter went on across the resume
    other = {"bfloat16": "float16", "float16": "bfloat16"}[dtype]  # resumed where `auto` picks the other
    train.train(config(dataset, tmp_path / dtype, max_steps=6, dtype=other, resume=True))
    assert sorted(logged(tmp_path / dtype)) == [1, 2, 3, 4, 5, 6]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cuda_compiled_mixed_precision_trains_resumes_and_reports_mfu(dataset, tmp_path, dtype):
    knobs = dict(device="cuda", dtype=dtype, compile=True, context=64, max_steps=20, lr=1e-2)
    eager = train.train(config(dataset, tmp_path / "eager", **{**knobs, "compile": False}))
    train.train(config(dataset, tmp_path / dtype, **{**knobs, "max_steps": 10}))
    result = train.train(config(dataset, tmp_path / dtype, **knobs, resume=True))
    losses = logged(tmp_path / dtype)
    assert sorted(losses) == list(range(1, 21)) and losses[20] < losses[1] - 1
    assert result["val_loss"] == pytest.approx(eager["val_loss"], rel=0.02)  # compiled == eager, to rounding
    mfu = logged(tmp_path / dtype, "mfu")
    assert mfu and all(0 < m < 1 for m in mfu.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_compiled_checkpointed_accumulation_as_the_xl_recipe(dataset, tmp_path):
    """configs/xl.py's combination in miniature on CUDA (activation checkpointing, accumulation, bf16,
    torch.compile): it trains, and the compiled run ends where the eager one does, to bf16 rounding."""
    knobs = dict(device="cuda", dtype="bfloat16", checkpointing=True, grad_accum=4, batch_size=2, context=64,
                 max_steps=4)  # fmt: skip
    eager = train.train(config(dataset, tmp_path / "eager", **knobs))
    compiled = train.train(config(dataset, tmp_path / "compiled", **knobs, compile=True))
    assert math.isfinite(compiled["val_loss"])
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], rel=0.02)


def test_keytoken_loss_in_the_loop(dataset, tmp_path, capsys):
    with pytest.raises(ValueError, match="none of the keywords is a single token"):  # stdlib: no plt, no pd
        train.train(config(dataset, tmp_path / "plain", max_steps=2, keytoken_alpha=1.0))
    (tmp_path / "src").mkdir()
    for i in range(8):  # a data-science corpus in miniature, whose tokenizer learns the keywords
        lines = [f"df{i}_{j} = pd.read_csv('f{j}.csv')\nplt.plot(df{i}_{j})\nm.fit(X, y)\nm.predict(X)\n"
                 for j in range(40)]  # fmt: skip
        (tmp_path / "src" / f"ds{i}.py").write_text("import pandas as pd\n" + "".join(lines))
    data.prepare(tmp_path / "ds", [tmp_path / "src"], vocab_size=300, valid_share=0.25, progress=False)
    result = train.train(config(tmp_path / "ds", tmp_path / "key", max_steps=2, keytoken_alpha=1.0))
    assert math.isfinite(result["val_loss"]) and all(map(math.isfinite, logged(tmp_path / "key").values()))
    train.train(config(tmp_path / "ds", tmp_path / "plain_ds", max_steps=2))
    assert logged(tmp_path / "key")[1] > logged(tmp_path / "plain_ds")[1]  # same weights, samples weighted up
    assert "are not single tokens; not counted" in capsys.readouterr().out  # "sk" is not, here


def test_a_crash_while_pruning_leaves_no_partial_checkpoint(dataset, tmp_path, monkeypatch):
    rmtree, run = shutil.rmtree, tmp_path / "run"

    def killed(path, ignore_errors=False):
        if ignore_errors:
            return rmtree(path, ignore_errors=True)
        (Path(path) / "train_state.pt").unlink()  # part of the old checkpoint is gone when the process dies
        raise Crash

    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(Crash):
        train.train(config(dataset, run, max_steps=3, save_interval=1, keep_last=1))
    monkeypatch.undo()
    assert (run / "latest").read_text().strip() == "ckpt-0000002"
    for folder in run.glob("ckpt-*[0-9]"):  # whatever is named as a checkpoint is a whole one
        assert (folder / "train_state.pt").is_file(), folder.name
    train.train(config(dataset, run, max_steps=3, save_interval=1, keep_last=1, resume=True))
    assert sorted(p.name for p in run.glob("ckpt-*")) == ["ckpt-0000003"]


def test_a_crash_before_the_first_latest_says_in_one_line_how_to_go_on(dataset, tmp_path):
    run = tmp_path / "run"
    train.train(config(dataset, run, max_steps=1, save_interval=1))
    (run / "latest").unlink()  # killed between the first save's rename and `latest`
    (run / "latest.tmp").write_text("ckpt-00")
    fix = r"already holds a run; write 'ckpt-0000001' into .*latest, then continue it with --resume"
    with pytest.raises(ValueError, match=fix):
        train.train(config(dataset, run, max_steps=2))
    (run / "latest").write_text("ckpt-0000001\n")  # as it says
    assert train.train(config(dataset, run, max_steps=2, resume=True))["step"] == 2


def test_a_weights_file_the_disk_cannot_take_leaves_no_temporary_folder(dataset, tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(model_module, "save_file", full_disk)
    with pytest.raises(OSError, match=r"0000002.tmp: could not be written .*No space left"):
        train.train(config(dataset, tmp_path / "run", max_steps=2, save_interval=2))
    assert not list((tmp_path / "run").glob("*.tmp*"))  # the space of what was written is given back
