"""Pretraining, the stage of the pipeline that turns token shards into a GPT-2 checkpoint.

    raw code -> data.py (clean, split, bpe.py tokenizer, uint16 shards) -> train.py -> out/<run>/ckpt-*/
             -> sample.py, evaluate.py

`python train.py tiny` trains the CPU demo in minutes; `torchrun --nproc_per_node=16 train.py xl` trains
CodeParrot (1.5B) on a GPU node (add torchrun's --nnodes / --rdzv-* flags for several nodes; the run
folder must then be on a shared file system). One file does both; read it top to bottom:

1. Configuration. TrainConfig holds every knob with its default; a Python file in configs/ assigns some
   of them and `--key=value` overrides any. The resolved config is printed and stored in the run folder.
2. Set-up. torchrun starts one process per device and sets RANK / LOCAL_RANK / WORLD_SIZE; each process
   joins the DDP group (NCCL on GPUs, gloo on CPUs). The dataset's meta.json fixes the vocabulary; the
   model is model.GPT, the optimizer AdamW with weight decay on weight matrices and embeddings only.
3. One optimizer step = `grad_accum` micro-batches per process. Each runs forward under autocast and
   backward with DDP's gradient all-reduce held back until the last one, so the update equals one large
   batch of batch_size * grad_accum * world_size sequences. Then clip the global gradient norm and step
   AdamW at the learning rate the schedule gives for this global step.
4. Every eval_interval steps and at the end: validation loss, perplexity and bits per byte, all-reduced.
5. Every save_interval steps, at the end, and on SIGTERM / SIGINT: a checkpoint folder, written under a
   temporary name; `latest` names it once complete. `--resume` continues from it bit for bit (on
   CPUs, with the same number of processes; GPU kernels such as attention's backward are not all
   deterministic, so there the state is restored exactly and the arithmetic after it may differ).
6. Logging, on rank 0: a tqdm bar, metrics.jsonl (and TensorBoard / W&B when asked), loss.png at the end.
7. The loop: run_steps() repeats 3 until max_steps or a stop signal, doing 4, 5 and 6 when they are due.

Run folder (out_dir):
    config.json      the resolved TrainConfig of the latest start
    metrics.jsonl    one JSON object per logged step ("loss") and per evaluation ("val_loss")
    loss.png         both losses against the step, redrawn at the end of each start (needs matplotlib)
    ckpt-0001000/    model.safetensors + config.json (GPT.save_pretrained, so GPT.from_pretrained and
                     transformers load it), tokenizer.bpe, train_config.json, train_state.pt (optimizer,
                     step, tokens seen, grad scaler, data-loader position, RNG states of every rank)
    latest           name of the newest complete checkpoint folder
    .lock            held (flock) by the train.py writing here, so that a second one is refused
"""

import ctypes
import difflib
import importlib.util
import io
import json
import math
import os
import shutil
import signal
import sys
import sysconfig
import time
import types
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal, get_args

# OpenMP threads that spin while waiting for work made a CPU training step 6-8x slower on our shared
# 2-core machine whenever other jobs ran, and passive waits cost ~11% on a quiet one (bench/RESULTS.md,
# "OpenMP waiting policy"). Set before torch loads OpenMP, by the training script only (sample.py and
# evaluate.py import this file and decode faster without it); an explicit OMP_WAIT_POLICY wins.
if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import SafetensorError
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from bpe import Tokenizer, die_of, run_cli, write_atomic
from data import Loader, field_comments, load_meta, lock_folder, val_batches
from model import GPT, WEIGHT_FILES, GPTConfig

ROOT = Path(__file__).resolve().parent


# --- 1. Configuration ------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    data_dir: str = "out/stdlib"  # a dataset made by `python data.py prepare`
    out_dir: str = "out/run"  # the run folder
    resume: bool = False  # continue from out_dir/latest
    model: str = ""  # a named size ("gpt2" ... "gpt2-xl"), or "" for n_layer, n_head and n_embd
    n_layer: int = 12  # transformer blocks
    n_head: int = 12  # attention heads per block
    n_embd: int = 768  # width of the residual stream
    context: int = 1024  # tokens per sequence; the vocabulary comes from the dataset's tokenizer
    dropout: float = 0.0  # on embeddings, attention weights and residual branches
    checkpointing: bool = False  # activation checkpointing: recompute block activations in backward
    # optimisation: one step sees batch_size * grad_accum * world_size sequences
    batch_size: int = 8  # sequences per process and micro-step
    grad_accum: int = 1  # micro-steps per optimizer step
    max_steps: int = 10_000  # optimizer steps in all
    lr: float = 5e-4  # the peak learning rate, reached at the end of the warmup
    min_lr: float = 0.0  # where the decay ends
    warmup_steps: int = 1_000  # steps of linear warmup from 0
    schedule: Literal["cosine", "linear", "constant"] = "cosine"  # the decay after the linear warmup
    weight_decay: float = 0.1  # AdamW's, on weight matrices and embeddings only
    beta2: float = 0.999  # AdamW's second-moment decay (beta1 is 0.9)
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping (the norm is logged either way)
    keytoken_alpha: float = 0.0  # > 0: the HF course's keytoken-weighted loss with this alpha
    skip_nonfinite: bool = False  # skip (and count) steps with a non-finite loss or grad norm, not stop
    # precision and speed; dtype auto is bf16 on GPUs that have it, else fp16
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"  # auto: half on GPUs, fp32 on CPUs
    compile: bool = False  # torch.compile the training model
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when there is one
    seed: int = 1  # the model's initialisation, the data order and dropout
    # evaluation, logging, checkpoints
    eval_interval: int = 500  # steps between evaluations
    eval_tokens: int = 1_000_000  # validation tokens per evaluation, over fixed windows
    log_interval: int = 10  # steps between logged losses
    save_interval: int = 1_000  # steps between checkpoints
    keep_last: int = 3  # checkpoint folders kept; 0 keeps all
    tensorboard: bool = False  # log to TensorBoard too, if installed
    wandb: bool = False  # log to Weights & Biases too, if installed
    wandb_project: str = "codeparrot"  # the W&B project


POSITIVE = "lr batch_size grad_accum max_steps context eval_interval eval_tokens log_interval save_interval"
# a negative grad_clip would flip the gradients; a negative seed is refused by numpy (the loader's
# shuffle) deep in the loop
NON_NEGATIVE = "min_lr warmup_steps weight_decay grad_clip keytoken_alpha keep_last seed"
# the names of the book's training script, the HF Trainer, GPT2Config and nanoGPT, for readers porting one
BOOK_NAMES = {
    "learning_rate": "lr",
    "seq_length": "context",
    "n_ctx": "context",
    "block_size": "context",
    "train_batch_size": "batch_size",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "max_train_steps": "max_steps",
    "num_warmup_steps": "warmup_steps",
    "lr_scheduler_type": "schedule",
}


def load_config(argv) -> TrainConfig:
    """`[CONFIG] [--key=value ...]` -> TrainConfig. A bare `--flag` means true (`--resume`)."""
    cfg, given = TrainConfig(), []  # (where, {key: value}) each level sets: the config file, the command line
    if argv and not argv[0].startswith("--"):
        path = config_path(argv[0])
        # A config is Python, so it may compute values (warmup_steps = max_steps // 20); its globals are
        # knobs, except modules, functions and _names, which are free for such helpers (_steps = 1000).
        names = {}
        try:
            exec(compile(path.read_text(), str(path), "exec"), names)
        except Exception as e:  # a typo in the user's file: say where, not a traceback into ours
            raise ValueError(f"{path}: {type(e).__name__}: {e}") from None
        for key, value in names.items():
            if not key.startswith("_") and not isinstance(value, types.ModuleType) and not callable(value):
                cfg = set_knob(cfg, key, value, where=str(path))
        given.append((str(path), names))
        argv = argv[1:]
    command_line = {}
    for arg in argv:
        if not arg.startswith("--"):
            raise ValueError(f"unexpected argument {arg!r}; usage: train.py [CONFIG] [--key=value ...]")
        key, has_value, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not has_value and hasattr(cfg, key) and not isinstance(getattr(cfg, key), bool):
            raise ValueError(f"--{key} needs a value: write --{key}=VALUE, with '=' and no space")
        command_line[key] = value if has_value else "true"
        cfg = set_knob(cfg, key, command_line[key], where="command line")
    given.append(("command line", command_line))
    return check_values(resolve_size(cfg, given))


def check_values(cfg) -> TrainConfig:
    """Refuse, before anything runs, values that would fail or mislead hours into a run."""
    for f in fields(cfg):
        allowed = get_args(f.type)  # the choices of a Literal knob; () for the others
        if allowed and getattr(cfg, f.name) not in allowed:
            raise ValueError(f"{f.name}={getattr(cfg, f.name)!r} is not one of {', '.join(allowed)}")
    for key in POSITIVE.split():
        if not getattr(cfg, key) > 0:  # written so that NaN fails too
            raise ValueError(f"{key}={getattr(cfg, key)} must be positive")
    for key in NON_NEGATIVE.split():
        if not getattr(cfg, key) >= 0:
            raise ValueError(f"{key}={getattr(cfg, key)} must be zero or positive")
    for f in fields(cfg):  # inf passes the sign checks and then makes every loss NaN
        if f.type is float and not math.isfinite(getattr(cfg, f.name)):
            raise ValueError(f"{f.name}={getattr(cfg, f.name)} must be a finite number")
    if cfg.min_lr > cfg.lr:  # the "decay" would climb to it
        raise ValueError(f"min_lr={cfg.min_lr} must be at most lr={cfg.lr}")
    if not 0 <= cfg.beta2 < 1:
        raise ValueError(f"beta2={cfg.beta2} must be in [0, 1)")
    if cfg.seed >= 2**62:  # torch's seeds are 64-bit, and resuming adds 1000 * step + rank to this one
        raise ValueError(f"seed={cfg.seed} must be below 2**62")
    return cfg


def resolve_size(cfg, given) -> TrainConfig:
    """`model` (a named size) and n_layer / n_head / n_embd are two ways to say one thing: both on one
    level is a mistake; sizes on the command line override a config file's named size. The named size's
    numbers are filled in, so the config stored with the run says what was trained."""
    knobs = {"n_layer", "n_head", "n_embd"}
    for where, keys in given:
        if keys.get("model") and keys.keys() & knobs:
            both = ", ".join(sorted(keys.keys() & knobs))
            raise ValueError(f"{where}: model={keys['model']!r} and {both} both set the model's size; "
                             "give one (model='' to use n_layer / n_head / n_embd)")  # fmt: skip
    overridden = given[-1][1].keys() & knobs  # the command line's sizes
    if cfg.model and overridden:
        cfg = replace(with_named_size(cfg), model="", **{k: getattr(cfg, k) for k in overridden})
    return with_named_size(cfg)


def with_named_size(cfg) -> TrainConfig:
    """cfg with its named size's n_layer / n_head / n_embd filled in."""
    if not cfg.model:
        return cfg
    size = GPTConfig.named(cfg.model)  # an unknown name fails here, with the names it knows
    return replace(cfg, n_layer=size.n_layer, n_head=size.n_head, n_embd=size.n_embd)


def config_path(arg) -> Path:
    """A .py file, or one of ours: `tiny`, `configs/xl.py` and nanoGPT's spelling `config/xl.py` name
    configs/xl.py from any folder. Any other missing path is an error, not silently another file of the
    same name."""
    path = Path(arg)
    if path.suffix == ".py" and path.is_file():
        return path.resolve()
    candidate = ROOT / "configs" / f"{path.stem}.py"
    if (len(path.parts) == 1 or path.parent.name in ("config", "configs")) and candidate.is_file():
        return candidate
    names = ", ".join(sorted(p.stem for p in (ROOT / "configs").glob("*.py")))
    raise ValueError(f"config {arg!r} not found; use one of {names} or the path of a .py file")


def set_knob(cfg, key, value, where) -> TrainConfig:
    kinds = {f.name: type(f.default) for f in fields(TrainConfig)}
    if key not in kinds:
        close = [BOOK_NAMES[key]] if key in BOOK_NAMES else difflib.get_close_matches(key, kinds, 3, 0.4)
        hint = f"did you mean {' or '.join(close)}?" if close else f"valid keys: {', '.join(kinds)}"
        raise ValueError(f"{where}: unknown config key {key!r}; {hint}")
    return replace(cfg, **{key: parse_value(value, kinds[key], f"{where}: {key}")})


def parse_value(value, kind, what):
    """A command-line string or a config file's value -> the knob's type: `--dropout=0` is a float,
    `10_000` an int, and a config's whole float (`max_steps = tokens / batch`) an int."""
    if isinstance(value, str) and kind is bool and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    if isinstance(value, str) and kind is int and value.replace("_", "").lstrip("-").isdigit():
        return int(value.replace("_", ""))  # exactly: through a float, a 64-bit seed would be rounded
    if isinstance(value, str) and kind in (int, float):
        try:
            number = float(value.replace("_", ""))
            if kind is float or number.is_integer():
                return kind(number)
        except ValueError:
            pass
    if kind is float and type(value) is int:
        return float(value)
    if kind is int and type(value) is float and value.is_integer():  # a config's max_steps = tokens / batch
        return int(value)
    if type(value) is not kind:
        raise ValueError(f"{what}={value!r} is not a valid {kind.__name__}")
    return value


# --- 2. Set-up: processes, model, optimizer, schedule ----------------------------------------------------
def keep_freed_memory():
    """Have glibc's malloc keep freed memory for the next step instead of returning it to the system.

    By default a block above the mmap threshold (128 KiB, raised as such blocks are freed, never past
    32 MiB) is mapped from the system and unmapped on free, so each step's largest tensors (the logits and
    their gradient: 64 MiB each for 512 tokens x 32,768) come back as fresh pages that fault in 4 KiB at a
    time: ~90,000 page faults and a quarter of a CPU step of the small model in bench/model.py. PyTorch's
    performance tuning guide suggests jemalloc or tcmalloc for this; two mallopt calls (no mmap, trim
    only past 1 GiB) give the same reuse with glibc alone. Elsewhere (macOS, musl, Windows) nothing happens.
    Called once a run is known to compute on the CPU; on a GPU node the host memory a checkpoint passes
    through is better returned.
    """
    if sys.platform != "linux":  # glibc is Linux's; and on Windows ctypes.CDLL(None) raises
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # None under musl
    if mallopt is not None:
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # from glibc's malloc.h
        mallopt(M_MMAP_MAX, 0)
        mallopt(M_TRIM_THRESHOLD, 1 << 30)


def setup_distributed(cfg):
    """(rank, world size, device) of this process, which joins the DDP group when there are several.
    torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; a plain `python train.py` is rank 0 of 1. Also sets
    what the device needs: TF32 on a GPU, the allocator on a CPU."""
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no GPU; use --device=cpu")
    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cuda and local_rank >= torch.cuda.device_count():
        gpus = torch.cuda.device_count()
        raise ValueError(f"LOCAL_RANK={local_rank}, but this process sees {gpus} GPU(s); "
                         "start one process per visible GPU (torchrun --nproc_per_node)")  # fmt: skip
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.set_float32_matmul_precision("high")  # TF32 matmuls for whatever still runs in fp32
    else:
        keep_freed_memory()
    if world > 1:  # device_id binds NCCL to this rank's GPU now, not by a guess at the first barrier
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return rank, world, device


def compile_missing(device) -> str | None:
    """What torch.compile lacks on this machine to build the kernels it generates, and how to get it; None
    when nothing is missing. Without it, the first step fails deep inside inductor or Triton."""
    if device.type == "cuda":  # Triton builds a C launcher for each kernel with $CC, else gcc, else clang
        kind, env, names = "C", "CC", ["gcc", "clang"]
    else:  # inductor builds the CPU kernels themselves with $CXX, else the platform's compiler
        kind, env, names = "C++", "CXX", ["clang++" if sys.platform == "darwin" else "g++"]
    names = [os.environ[env]] if os.environ.get(env) else names
    if not any(shutil.which(name) for name in names):
        tried = " or ".join(map(repr, names))
        return f"a {kind} compiler, and {tried} is not found: install one (or point ${env} at one)"
    if not (Path(sysconfig.get_path("include")) / "Python.h").is_file():  # the kernels' bindings include it
        return "Python's headers, and Python.h is missing: install them (python3-dev on Debian and Ubuntu)"
    return None


def pick_dtype(cfg, device):
    if cfg.dtype != "auto":
        return getattr(torch, cfg.dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # CPUs without bf16 matrix units run bf16 autocast slower than fp32


def model_config(cfg, vocab_size) -> GPTConfig:
    cfg = with_named_size(cfg)  # also for a TrainConfig made in Python (bench/) with a named size
    return GPTConfig(vocab_size=vocab_size, context=cfg.context, n_layer=cfg.n_layer, n_head=cfg.n_head,
                     n_embd=cfg.n_embd, dropout=cfg.dropout, checkpointing=cfg.checkpointing)  # fmt: skip


def make_optimizer(model, cfg):
    # Decay weight matrices (and the embeddings) only; biases and LayerNorm gains are 1-D and exempt.
    # The book and the course exempt names containing "bias" or "LayerNorm.weight", which misses GPT-2's
    # ln_1, ln_2, ln_f and so decays every LayerNorm gain; grouping by dimension cannot miss one.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # fused: one kernel for all parameters instead of a chain of per-op passes; 7x faster on CPU too
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2), fused=True)


def learning_rate(step, cfg) -> float:
    """LR of optimizer step `step` (0-based, global): linear warmup, then cosine/linear/constant decay."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps  # +1: the first step already learns
    if cfg.schedule == "constant":
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    decay = 1 - progress if cfg.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * decay


# --- 3. The loss and one optimizer step ------------------------------------------------------------------
KEYWORDS = ("plt", "pd", "sk", "fit", "predict")  # matplotlib.pyplot, pandas, sklearn and its fit/predict


def keytoken_ids(tokenizer, say=print) -> torch.Tensor:
    """The keywords, with and without a leading space, that the tokenizer keeps as one token (HF course,
    which also reports the others: a keyword split in pieces is not counted)."""
    words = [prefix + word for word in KEYWORDS for prefix in ("", " ")]
    encoded = {word: tokenizer.encode(word) for word in words}
    split = [word for word, ids in encoded.items() if len(ids) != 1]
    if len(split) == len(words):  # the loss would be the plain one times alpha
        raise ValueError("keytoken_alpha > 0, but none of the keywords is a single token of this dataset's "
                         "tokenizer; train it on the data-science corpus (data.py prepare --keywords ...) "
                         "or set keytoken_alpha=0")  # fmt: skip
    if split:
        say(f"note: keytoken loss: {', '.join(map(repr, split))} are not single tokens; not counted")
    return torch.tensor([ids[0] for ids in encoded.values() if len(ids) == 1], dtype=torch.long)


def keytoken_weighted_loss(x, y, logits, key_ids, alpha):
    """HF course: mean over samples of (per-sample mean token loss) * alpha * (1 + key tokens in the sample).

    The course counts key tokens in its whole input window, which here is x plus the last target token.
    The logged training loss is then this weighted one: not comparable with val_loss, the plain loss.
    """
    token_loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none")  # (B*T,)
    window = torch.cat([x, y[:, -1:]], dim=1)  # (B, T+1)
    counts = torch.isin(window, key_ids).sum(dim=1)  # (B,)
    return (token_loss.view(y.shape).mean(dim=1) * alpha * (1.0 + counts)).mean()


@dataclass
class Run:
    """What one process holds while training; `model` is the plain GPT, `train_model` what the loop calls."""

    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    dtype: torch.dtype
    model: GPT
    train_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loader: Loader
    key_ids: torch.Tensor
    tokenizer: bytes  # the dataset's tokenizer.bpe as checked at start, copied into every checkpoint
    step: int = 0  # optimizer steps done
    skipped: int = 0  # steps skipped for a non-finite loss or gradient norm

    @property
    def tokens(self) -> int:  # training tokens seen, all ranks (a resumed loader keeps its batch shape)
        return self.step * self.loader.global_batch * self.cfg.context

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)


def optimizer_step(run, caught=()) -> tuple[float, float, bool]:
    """One update from grad_accum micro-batches; returns (mean loss over all ranks, grad norm, stop?).
    `caught` holds the stop signals received so far (catch_stop_signals), read when the ranks vote."""
    cfg = run.cfg
    for group in run.optimizer.param_groups:
        group["lr"] = learning_rate(run.step, cfg)
    loss_sum = torch.zeros((), device=run.device)
    for micro in range(cfg.grad_accum):
        x, y = run.loader.next_batch()
        last = micro == cfg.grad_accum - 1
        # DDP all-reduces gradients during every backward; only the last micro-step needs it.
        with nullcontext() if last or run.world == 1 else run.train_model.no_sync():
            with run.autocast():
                if cfg.keytoken_alpha > 0:
                    logits, _ = run.train_model(x)
                    loss = keytoken_weighted_loss(x, y, logits, run.key_ids, cfg.keytoken_alpha)
                else:
                    _, loss = run.train_model(x, y)
            run.scaler.scale(loss / cfg.grad_accum).backward()  # / grad_accum: the mean of one big batch
        loss_sum += loss.detach()
    run.scaler.unscale_(run.optimizer)  # true gradients before measuring the norm
    norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip or float("inf")).item()
    # The loss and the stop request travel in one all-reduce, so every rank agrees on what happens next;
    # read now, not when the step began, so a signal that came during this step stops after it.
    shared = torch.stack([loss_sum / cfg.grad_accum, torch.tensor(float(bool(caught)), device=run.device)])
    if run.world > 1:
        dist.all_reduce(shared)
    loss, stops = shared.tolist()
    loss /= run.world
    # fp16's GradScaler expects overflowing gradients now and then: it skips that step and lowers its scale.
    finite = math.isfinite(loss) and (math.isfinite(norm) or run.scaler.is_enabled())
    if not finite and not cfg.skip_nonfinite:
        latest = Path(cfg.out_dir) / "latest"
        saved = f"the checkpoints in {cfg.out_dir} stand" if latest.exists() else "no checkpoint saved yet"
        raise ValueError(
            f"step {run.step + 1}: loss {loss}, gradient norm {norm}: training diverged ({saved}); "
            "lower lr or set skip_nonfinite=true"
        )
    if finite:
        run.scaler.step(run.optimizer)
    run.scaler.update()  # after a skip too: it clears unscale_'s mark, or the next unscale_ raises
    run.skipped += not (math.isfinite(loss) and math.isfinite(norm))  # GradScaler's own skips included
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    return loss, norm, stops > 0


# --- 4. Evaluation ---------------------------------------------------------------------------------------
@torch.no_grad()
def summed_loss(model, batches, autocast=nullcontext) -> torch.Tensor:
    """[next-token loss summed over every target, number of targets] in float64 on the model's device.
    Their quotient is the mean over all tokens, which a mean of batch means is not when one is short."""
    loss_sum, count = torch.zeros((), dtype=torch.float64, device=next(model.parameters()).device), 0
    for x, y in batches:
        with autocast():
            loss_sum += model(x, y)[1].double() * y.numel()
        count += y.numel()
    return torch.stack([loss_sum, loss_sum.new_tensor(count)])


def evaluate(run, batches, bytes_per_token) -> dict:
    """Mean next-token loss over this rank's validation batches, summed over all ranks' disjoint shares."""
    model = run.model  # the uncompiled model: no recompilation for eval mode
    model.eval()
    total = summed_loss(model, batches, run.autocast)
    if run.world > 1:
        dist.all_reduce(total)
    model.train()
    loss = (total[0] / total[1]).item()
    perplexity, bits_per_byte = perplexity_and_bpb(loss, bytes_per_token)
    return {"step": run.step, "val_loss": loss, "val_ppl": perplexity, "val_bpb": bits_per_byte}


def perplexity_and_bpb(loss, bytes_per_token) -> tuple[float, float]:
    """Perplexity (inf rather than an OverflowError: exp overflows a double past ~709) and bits per byte,
    the loss spread over the raw bytes, so a tokenizer that packs more bytes per token gains nothing."""
    perplexity = math.exp(loss) if loss < 700 else math.inf
    return perplexity, loss / math.log(2) / bytes_per_token


# --- 5. Checkpoints --------------------------------------------------------------------------------------
def latest_checkpoint(path) -> Path:
    """Run folder -> its newest checkpoint; a checkpoint or any HF-format GPT-2 folder -> itself."""
    path = Path(path)
    if (path / "latest").is_file():
        name = (path / "latest").read_text().strip()
        newest = path / name
        if not name or not newest.is_dir():  # empty, `latest` would name the run folder itself
            problem = f"names {name!r}, which is not there" if name else "is empty"
            raise ValueError(
                f"{path / 'latest'} {problem}; write the name of an existing ckpt-* folder into it"
            )
        return newest
    if (path / "config.json").is_file() and any((path / w).is_file() for w in WEIGHT_FILES):
        return path
    if saved := sorted(p.name for p in path.glob("ckpt-*[0-9]") if p.is_dir()):
        raise ValueError(f"{path} has no `latest` file naming its newest checkpoint; write one of "
                         f"{', '.join(saved)} into it")  # fmt: skip
    if (path / "metrics.jsonl").is_file():
        raise ValueError(f"{path}: a run with no checkpoint yet (before its first save, or stopped there)")
    raise ValueError(
        f"{path}: no checkpoint here (no `latest`, no config.json + model.safetensors); "
        "give a run folder of train.py or a checkpoint folder"
    )


def save_checkpoint(run):
    """Every rank hands in its RNG state; rank 0 writes ckpt-NNNNNNN.tmp/, renames it, then moves `latest`."""
    cuda = run.device.type == "cuda"
    rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if cuda else None}
    rngs = [rng] * run.world
    if run.world > 1:
        dist.all_gather_object(rngs, rng)
    if run.rank == 0:
        out = Path(run.cfg.out_dir)
        final = out / f"ckpt-{run.step:07d}"
        tmp = out / (final.name + ".tmp")
        for stale in out.glob("ckpt-*.tmp*"):  # saves a crash cut short (some 18 GB each at 1.5B)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            write_checkpoint(run, tmp, rngs)
        except (OSError, RuntimeError, SafetensorError) as e:  # torch.save on a full disk: "unexpected pos"
            shutil.rmtree(tmp, ignore_errors=True)
            why = str(e).partition("\n")[0]
            raise OSError(f"{tmp}: could not be written ({why}); is {out} full? The checkpoints before "
                          "it stand: free some space, then --resume") from None  # fmt: skip
        sync_to_disk(tmp)
        shutil.rmtree(final, ignore_errors=True)  # this step's, which `latest` no longer names (rolled back)
        os.replace(tmp, final)
        write_atomic(out / "latest", final.name + "\n")
        if run.cfg.keep_last > 0:  # names sort by step; newer ones, left by rolling `latest` back, are kept
            done = sorted(p for p in out.glob("ckpt-*[0-9]") if p.name <= final.name)
            for old in done[: -run.cfg.keep_last]:  # renamed first: a crash mid-delete leaves a stale .tmp
                doomed = old.with_name(old.name + ".tmp")
                os.replace(old, doomed)
                shutil.rmtree(doomed)
    if run.world > 1:
        dist.barrier()  # nobody runs ahead (or exits) before the checkpoint is complete


def write_checkpoint(run, folder, rngs):
    """A checkpoint's files: the HF-format model, the tokenizer, the config, and the training state."""
    run.model.save_pretrained(folder)
    (folder / "tokenizer.bpe").write_bytes(run.tokenizer)
    (folder / "train_config.json").write_text(config_json(run.cfg))
    state = dict(step=run.step, tokens=run.tokens, skipped=run.skipped, world_size=run.world, rng=rngs)
    state |= {name: getattr(run, name).state_dict() for name in ("optimizer", "scaler", "loader")}
    torch.save(state, folder / "train_state.pt")


def sync_to_disk(folder):
    """Flush a checkpoint's files to the disk before `latest` names it, so that a power cut or a crashed
    node cannot leave `latest` naming empty files (data.py's shards do the same; so does
    torch.distributed.checkpoint, with sync_files)."""
    for path in [*folder.iterdir(), folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_checkpoint(run, folder):
    """Put `run` back where save_checkpoint left it: weights, optimizer, scaler, data, counters, RNG."""
    saved = GPT.from_pretrained(folder)
    if saved.config.vocab_size != run.model.config.vocab_size:  # the vocabulary is the dataset's, not a knob
        raise ValueError(
            f"{folder}: its model has a {saved.config.vocab_size}-token vocabulary, the dataset "
            f"{run.cfg.data_dir} {run.model.config.vocab_size}; resume with the data_dir it was trained on"
        )
    if (folder / "tokenizer.bpe").read_bytes() != run.tokenizer:  # same size, other token meanings
        raise ValueError(f"{folder}: trained with another tokenizer than the dataset {run.cfg.data_dir}'s; "
                         "resume with the data_dir it was trained on")  # fmt: skip
    for knob in ("context", "n_layer", "n_head", "n_embd"):
        if getattr(saved.config, knob) != getattr(run.model.config, knob):
            raise ValueError(
                f"{folder}: its model has {knob}={getattr(saved.config, knob)}, this run's config "
                f"{getattr(run.model.config, knob)}; resume with the config it was trained with"
            )
    run.model.load_state_dict(saved.state_dict())
    try:
        state = torch.load(folder / "train_state.pt", map_location=run.device, weights_only=True)
    except Exception as e:  # missing, or junk, on which the weights-only unpickler raises all kinds of errors
        why = type(e).__name__ + ": " + str(e).partition("\n")[0]  # torch's advice runs on for lines
        raise ValueError(
            f"{folder / 'train_state.pt'}: unreadable ({why}); put an earlier checkpoint's name in `latest`"
        ) from None
    for name in ("optimizer", "scaler", "loader"):
        if name != "scaler" or state["scaler"]:  # saved without fp16, it is empty: an fp16 resume starts anew
            getattr(run, name).load_state_dict(state[name])
    run.step, run.skipped = state["step"], state["skipped"]
    try:
        saved_cfg = json.loads((folder / "train_config.json").read_text())
    except ValueError as e:
        raise ValueError(f"{folder / 'train_config.json'}: not valid JSON ({e}); put an earlier "
                         "checkpoint's name in `latest`") from None  # fmt: skip
    if run.rank == 0:
        note_schedule_change(run.cfg, saved_cfg, run.step)
    if state["world_size"] == run.world:  # same processes: each continues its own random stream
        seed = saved_cfg.get("seed")
        if seed != run.cfg.seed and run.rank == 0:
            print(f"note: seed={run.cfg.seed} is not used: the run goes on with the random streams saved "
                  f"at step {run.step} (its seed was {seed})")  # fmt: skip
        rng = state["rng"][run.rank]
        torch.set_rng_state(rng["cpu"].cpu())
        if rng["cuda"] is not None and run.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"].cpu())
    else:
        torch.manual_seed(run.cfg.seed + 1000 * run.step + run.rank)  # new world size: fresh, reproducible


SCHEDULE = ("lr", "min_lr", "warmup_steps", "schedule", "max_steps")


def note_schedule_change(cfg, saved_cfg, step):
    """The schedule is a function of these knobs, not a saved state: raising max_steps to train further
    stretches the decay, and the rate jumps at the resumed step (as in nanoGPT and the HF Trainer)."""
    changed = [k for k in SCHEDULE if k in saved_cfg and saved_cfg[k] != getattr(cfg, k)]
    if changed:
        before = learning_rate(step, replace(cfg, **{k: saved_cfg[k] for k in changed}))
        what = ", ".join(f"{k} {saved_cfg[k]} -> {getattr(cfg, k)}" for k in changed)
        now = learning_rate(step, cfg)
        print(f"note: the schedule changed ({what}): the learning rate at step {step} is {now:.3g}, where "
              f"the saved run would have used {before:.3g}")  # fmt: skip


RUN_FILES = {"config.json", "metrics.jsonl", "loss.png", "tensorboard", "wandb", ".lock"}  # before any save


def checkpoint_to_resume(cfg) -> Path | None:
    """Refuse to overwrite a run unless resuming; returns the checkpoint to resume from, if any."""
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: out_dir is a file, not a folder; choose another --out_dir")
    has_checkpoint = (out / "latest").is_file()
    # Only what a start writes before its first save (or a save cut short) may be replaced by a fresh
    # start: anything else, a complete ckpt-* folder or another program's files, is refused. (.tmp: what
    # write_atomic leaves when a crash cuts it short.)
    ours = {name + ".tmp" for name in RUN_FILES} | RUN_FILES
    entries = out.iterdir() if out.is_dir() else []
    others = [p.name for p in entries if p.name not in ours and not p.match("ckpt-*.tmp*")]
    saved = sorted(name for name in others if name.startswith("ckpt-"))
    # a crash between a first checkpoint's rename and `latest` leaves the folder, complete, and no `latest`
    name_it = f"write {saved[-1]!r} into {out / 'latest'}" if saved and not has_checkpoint else ""
    if (has_checkpoint or saved) and not cfg.resume:
        then = f"{name_it}, then " if name_it else ""
        raise ValueError(
            f"{out} already holds a run; {then}continue it with --resume or choose another --out_dir"
        )
    if others and not saved and not has_checkpoint:  # a dataset or a model folder, say: --resume won't help
        raise ValueError(f"{out} holds other files ({', '.join(sorted(others)[:3])}), no run of train.py's; "
                         "choose another --out_dir")  # fmt: skip
    if cfg.resume and not has_checkpoint:
        fix = name_it or "drop --resume to start fresh"
        raise ValueError(f"{out}: no checkpoint to resume (no `latest` file); {fix}")
    return latest_checkpoint(out) if cfg.resume else None


def start_run_folder(run):
    """Rank 0's run folder: config.json, and metrics cut back to the resumed step. Written last in set-up,
    so that a start that fails before leaves no half-made run behind."""
    out = Path(run.cfg.out_dir)
    write_atomic(out / "config.json", config_json(run.cfg))
    if (out / "metrics.jsonl").exists():  # forget steps logged after the checkpoint we start from
        if not run.cfg.resume:
            print(f"note: {out} held a start that stopped before its first checkpoint; starting over")
        kept = [r for r in read_metrics(out) if run.cfg.resume and r["step"] <= run.step]
        write_atomic(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))


def lock_run_folder(out):
    """Hold out/.lock while training, so that a second train.py in the same folder (a job requeued while
    the first still runs, say) is refused instead of both writing checkpoints."""
    try:
        return lock_folder(out)
    except BlockingIOError:
        raise ValueError(f"{out} is in use by another train.py; wait for it to end (or stop it), then "
                         f"continue with --resume; if none runs (its node crashed), delete {out / '.lock'}"
                         ) from None  # fmt: skip


def config_json(cfg) -> str:
    return json.dumps(asdict(cfg), indent=1) + "\n"


def read_metrics(out_dir) -> list[dict]:
    """metrics.jsonl's records; a line torn by a crash mid-write (the file is appended to) is skipped."""
    records = []
    for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def catch_stop_signals() -> list:
    """SIGTERM (preemption, torchrun shutting down) and SIGINT (Ctrl-C) only raise a flag, so the loop ends
    its step, saves and exits cleanly. A signal's path: the handler appends it to the list returned here;
    optimizer_step sends "any caught?" along in its all-reduce, so every rank stops after the same step;
    run_steps saves and returns the signal's number; main ends the process as that signal would (die_of).
    A second signal gets the default behaviour, kill, except under torchrun: a terminal's Ctrl-C reaches
    the ranks and torchrun, which then sends the ranks the same signal again, and kills them itself if
    they are not done within its timeout (30 s, or torchrun's --shutdown-timeout where it has one)."""
    caught, torchrun = [], "TORCHELASTIC_RUN_ID" in os.environ

    def handler(signum, frame):
        caught.append(signum)
        if not torchrun:
            signal.signal(signum, signal.SIG_DFL)

    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)
    return caught


# --- 6. Logging ------------------------------------------------------------------------------------------
# dense bf16/fp16 tensor-core peak per GPU from NVIDIA's data sheets; the first name that matches wins
PEAK_TFLOPS = {
    "H100 PCIe": 756,
    "H100 NVL": 835,
    "H100": 989,
    "H200 NVL": 835,
    "H200": 989,  # also GH200 (its GPU is an H100's at 989)
    "A100": 312,
    "L40S": 362,
    "L40": 181,
    "L4": 121,
    "V100": 125,
}


def peak_flops(device) -> float | None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    return next((tflops * 1e12 for key, tflops in PEAK_TFLOPS.items() if key in name), None)


def installed(module) -> bool:
    if importlib.util.find_spec(module):
        return True
    print(f"note: {module} is not installed; not logging to it")
    return False


class RunLog:
    """Rank 0's outputs: a tqdm bar, metrics.jsonl, and TensorBoard / W&B when switched on and installed."""

    def __init__(self, run):
        cfg, out, self.on = run.cfg, Path(run.cfg.out_dir), run.rank == 0
        self.tb = self.wandb = None
        self.bar = tqdm(total=cfg.max_steps, initial=run.step, disable=not self.on, unit="step")
        self.file = open(out / "metrics.jsonl", "a") if self.on else None
        if self.on and cfg.tensorboard and installed("tensorboard"):
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(out / "tensorboard")
        if self.on and cfg.wandb and installed("wandb"):
            import wandb

            self.wandb = wandb.init(project=cfg.wandb_project, config=asdict(cfg), dir=out)
        self.peak, self.flops_per_token = peak_flops(run.device), run.model.flops_per_token()

    def restart_clock(self, run):
        """Throughput counts training only: restart after evaluating or saving, and after each record."""
        self.tick, self.tokens_at_tick = time.perf_counter(), run.tokens

    def training(self, run, loss, norm):
        tok_s = (run.tokens - self.tokens_at_tick) / (time.perf_counter() - self.tick)
        lr = learning_rate(run.step - 1, run.cfg)  # the rate the step just taken used
        record = {"step": run.step, "loss": loss, "lr": lr, "grad_norm": norm, "tokens": run.tokens}
        record |= {"tok_per_s": tok_s, "skipped": run.skipped}
        mfu = ""
        if self.peak:  # model FLOPs utilisation (PaLM): achieved / peak FLOPS, per GPU
            record["mfu"] = tok_s * self.flops_per_token / (self.peak * run.world)
            mfu = f" mfu {record['mfu']:.1%}"
        self.write(record)
        self.bar.set_postfix_str(f"loss {loss:.3f} lr {lr:.2e} {tok_s:,.0f} tok/s{mfu}")
        self.restart_clock(run)

    def evaluation(self, result):
        self.write(result)
        if self.on:  # tqdm.write prints even when the bar is disabled
            self.bar.write(
                f"step {result['step']}: val loss {result['val_loss']:.4f}, perplexity "
                f"{result['val_ppl']:.2f}, {result['val_bpb']:.3f} bits per byte"
            )

    def write(self, record):
        if not self.on:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        for key, value in record.items():
            if self.tb and key != "step":
                self.tb.add_scalar(key, value, record["step"])
        if self.wandb:
            self.wandb.log(record, step=record["step"])

    def close(self):
        self.bar.close()
        if self.file:
            self.file.close()
        if self.tb:
            self.tb.close()
        if self.wandb:
            self.wandb.finish()


def plot_losses(out_dir):
    """out_dir/loss.png: train and validation loss against the step, drawn from metrics.jsonl."""
    if importlib.util.find_spec("matplotlib") is None:
        return print(f"note: `pip install matplotlib` to get a loss curve in {out_dir / 'loss.png'}")
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a GPU node or in CI
    import matplotlib.pyplot as plt

    records = read_metrics(out_dir)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label, marker in (("loss", "train", None), ("val_loss", "validation", "o")):
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            ax.plot(*zip(*points, strict=True), label=label, marker=marker)
    ax.set(xlabel="step", ylabel="loss (nats per token)", title=str(out_dir))
    if ax.lines:  # a run stopped before its first log has none, and an empty legend warns
        ax.legend()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    write_atomic(out_dir / "loss.png", png.getvalue())


# --- 7. The loop -----------------------------------------------------------------------------------------
def train(cfg) -> dict:
    """Train per `cfg`; returns the last evaluation's val_* figures (from the end, or from an earlier step
    when a signal stopped the run) with the steps done, tokens, skipped, and stopped: the number of the
    signal that stopped it early, 0 if none."""
    rank, world, device = setup_distributed(cfg)
    handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        return train_on(cfg, rank, world, device)
    finally:
        for signum, handler in handlers.items():  # a caller (a test, a notebook) gets its own back
            signal.signal(signum, handler)
        if world > 1:
            dist.destroy_process_group()


def build_run(cfg, rank, world, device, meta) -> Run:
    """Model, optimizer, scaler and loader for the dataset `meta` describes, restored from the latest
    checkpoint when resuming. This process's own work only, no collective: see agreed()."""
    cfg = with_named_size(cfg)  # also when a TrainConfig comes from Python, not load_config
    vocab_size = meta["vocab_size"]
    gpt_config = model_config(cfg, vocab_size)  # a bad size fails here, before anything is written
    loader = Loader(
        cfg.data_dir, "train", cfg.batch_size, cfg.context, cfg.grad_accum, rank, world, cfg.seed, device
    )
    ckpt = checkpoint_to_resume(cfg)
    say = print if rank == 0 else lambda *a: None
    say(config_json(cfg).rstrip())
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = GPT(gpt_config).to(device)
    # Read now: a dataset rebuilt during a days-long run must not hand its checkpoints another tokenizer.
    tokenizer_file = Path(cfg.data_dir) / meta["tokenizer"]
    tokenizer = tokenizer_file.read_bytes()
    key_ids = torch.zeros(0, dtype=torch.long)
    if cfg.keytoken_alpha > 0:
        key_ids = keytoken_ids(Tokenizer.load(tokenizer_file), say).to(device)
    dtype = pick_dtype(cfg, device)
    optimizer = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    run = Run(cfg, rank, world, device, dtype, model, model, optimizer, scaler, loader, key_ids, tokenizer)
    if ckpt:
        load_checkpoint(run, ckpt)
        say(f"resuming from {ckpt} at step {run.step}")
        if run.step >= cfg.max_steps:
            say(f"note: nothing to do, the run is at max_steps={cfg.max_steps}; raise it to train further")
    else:
        torch.manual_seed(cfg.seed + rank)  # dropout masks differ across ranks
    say(
        f"model: {model.num_params() / 1e6:.2f}M parameters, vocab {vocab_size}; "
        f"{world} process(es) on {device}, {dtype}; {loader.global_batch} sequences "
        f"of {cfg.context} tokens per step"
    )
    return run


def distribute(run):
    """The model the loop calls: DDP (gradients all-reduced during backward) and torch.compile if asked."""
    if run.world > 1:
        run.train_model = DDP(run.model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    # Compiling the DDP module lets dynamo split graphs at its gradient buckets, so communication overlaps.
    if run.cfg.compile:
        run.train_model = torch.compile(run.train_model)


@contextmanager
def agreed(rank, world, device):
    """Set-up that fails on some processes only (a dataset missing on one node, the run folder locked by
    another job, a full disk on rank 0) stops every process instead of leaving the others waiting at their
    next collective, or dying in a gloo / NCCL traceback that buries the error. A user's mistake is printed
    by its rank before any rank exits (torchrun then stops the rest), and rank 0 names the failed ranks.
    Also a barrier: no rank starts training before every rank is set up."""
    try:
        yield
    except Exception as e:
        if world == 1:
            raise
        mistake = isinstance(e, (ValueError, OSError))
        if mistake:
            print(f"error on rank {rank}: {e}", file=sys.stderr, flush=True)
        with suppress(Exception):  # a broken device or peer must not hide this rank's own error
            failed_ranks(True, rank, world, device)
        if mistake:
            sys.exit(2)
        raise
    if world > 1 and (ranks := failed_ranks(False, rank, world, device)):
        if rank == 0:
            raise ValueError(f"set-up failed on rank {', '.join(map(str, ranks))}: see its error above or in "
                             "its node's log")  # fmt: skip
        sys.exit(2)  # rank 0 says it once


def failed_ranks(failed, rank, world, device) -> list[int]:
    flags = torch.zeros(world, device=device)
    flags[rank] = failed
    dist.all_reduce(flags)  # every rank learns which ranks failed
    return flags.nonzero().flatten().tolist()


def rank_0_config(cfg, world) -> dict | None:
    """Rank 0's config (None where its command line was refused), sent to every rank. The first collective
    of every rank, the ones that failed to read their config included (fail_with_the_others)."""
    sent = [asdict(cfg) if cfg else None]
    if world > 1:
        dist.broadcast_object_list(sent, src=0)
    return sent[0]


def check_same_config(cfg, theirs):
    """Every node must run the same command: with another lr on one node its replica drifts silently away
    from rank 0's, the one saved; with another max_steps or save_interval the collectives stop matching.
    The paths may differ (a node may mount the files elsewhere): what is there is checked on each rank."""
    if theirs is None:  # rank 0's own command line was refused: the set-up agreement stops every rank
        return
    mine = {key: value for key, value in asdict(cfg).items() if key not in ("data_dir", "out_dir")}
    if differ := [key for key, value in mine.items() if theirs[key] != value]:
        what = ", ".join(f"{key}={getattr(cfg, key)!r} here, {theirs[key]!r} there" for key in differ[:3])
        raise ValueError(f"the config differs from rank 0's ({what}); run the same command on every node")


def fail_with_the_others(error):
    """A config error on some ranks only (one node's command line) would leave the others waiting for this
    rank at the process group's start until torch's timeout (30 min on CPUs): join the group with the
    default config and fail the first set-up agreement, so every rank stops now and rank 0 names this one."""
    rank, world, device = setup_distributed(TrainConfig())
    try:
        rank_0_config(None, world)  # train_on's first collective
        with agreed(rank, world, device):
            raise error
    finally:
        dist.destroy_process_group()  # as train() does: NCCL warns at exit about a group left open


def train_on(cfg, rank, world, device) -> dict:
    """Set up, run the steps, then draw the loss curve; the run folder's lock and rank 0's outputs are
    released however it ends.

    Set-up runs in two rounds, each closed by agreed(), a vote and a barrier: first every rank reads (the
    dataset, the checkpoint) and builds its model, then rank 0 alone writes (the run folder). A mistake
    found in round one, on any rank, so ends every rank before anything is written."""
    out, lock, log = Path(cfg.out_dir), None, None
    theirs = rank_0_config(cfg, world)
    try:
        with agreed(rank, world, device):  # no collective in here: a rank that failed would never join it
            check_same_config(cfg, theirs)
            if cfg.compile and (missing := compile_missing(device)):
                raise ValueError(f"compile=True on {device.type} needs {missing}, or pass --compile=false")
            meta = load_meta(cfg.data_dir)
            val = val_batches(cfg.data_dir, cfg.batch_size, cfg.context, cfg.eval_tokens, rank, world, device)
            val = list(val)  # every evaluation rereads these batches, and a generator runs only once
            resuming_here = rank == 0 and cfg.resume and (out / "latest").is_file()
            if resuming_here:  # a requeued job's twin is refused before it loads a checkpoint (18 GB for xl)
                lock = lock_run_folder(out)
            run = build_run(cfg, rank, world, device, meta)
        with agreed(rank, world, device):  # then rank 0 writes: a start that failed leaves nothing behind
            if rank == 0:
                out.mkdir(parents=True, exist_ok=True)
                if not resuming_here:  # else taken above (once: where flock fails, it says so once)
                    lock = lock_run_folder(out)
                start_run_folder(run)
            log = RunLog(run)  # rank 0 opens metrics.jsonl, TensorBoard, W&B
        distribute(run)
        result, signum = run_steps(run, log, val, meta["bytes_per_token"]["valid"])
    finally:
        if log:  # closed on an error too, or tqdm redraws its bar below the error line
            log.close()
        if lock:
            lock.close()
    if rank == 0:
        plot_losses(Path(cfg.out_dir))
        if signum:
            print(f"stopped by a signal at step {run.step}, checkpoint saved; continue with --resume")
    return {**result, "step": run.step, "tokens": run.tokens, "skipped": run.skipped, "stopped": signum}


def run_steps(run, log, val, bytes_per_token) -> tuple[dict, int]:
    """Optimizer steps until max_steps or a stop signal, evaluating, logging and saving when due; returns
    the last evaluation and the number of the signal that stopped the run early (0 if none)."""
    cfg, caught = run.cfg, catch_stop_signals()
    result, stopped = {}, False
    log.restart_clock(run)  # throughput counts training, not set-up
    while run.step < cfg.max_steps and not stopped:
        loss, norm, stopped = optimizer_step(run, caught)
        stopped = stopped and run.step < cfg.max_steps  # a signal in the last step: it just finishes
        log.bar.update(1)
        at_end = run.step == cfg.max_steps
        if run.step % cfg.log_interval == 0 or at_end:
            log.training(run, loss, norm)
        # Also when stopping: a fraction of the save's time, and no evaluation is missing from the metrics.
        if run.step % cfg.eval_interval == 0 or at_end:
            result = evaluate(run, val, bytes_per_token)
            log.evaluation(result)
            log.restart_clock(run)
        if run.step % cfg.save_interval == 0 or at_end or stopped:
            save_checkpoint(run)
            log.restart_clock(run)
    return result, (caught or [signal.SIGTERM])[0] if stopped else 0  # another rank may have been signalled


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):  # the knobs as the rest of the command line would set them
        cfg = load_config([a for a in argv if a not in ("-h", "--help")])
        print(__doc__ + "\nusage: train.py [CONFIG] [--key=value ...]; the knobs, as this command sets them:")
        notes = field_comments(TrainConfig)
        return print("\n".join(f"{f'  --{k}={v!r}':29} {notes[k]}" for k, v in asdict(cfg).items()))
    try:
        cfg = load_config(argv)
    except (ValueError, OSError) as e:  # what run_cli reports as a mistake (OSError: an unreadable config)
        if int(os.environ.get("WORLD_SIZE", 1)) > 1:  # the other ranks wait for this one to join them
            fail_with_the_others(e)
        raise
    stopped = train(cfg)["stopped"]
    if stopped:  # scripts and schedulers see that the run did not finish
        die_of(stopped)


if __name__ == "__main__":
    run_cli(main)
