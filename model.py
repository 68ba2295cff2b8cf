"""GPT-2, the model stage of the pipeline: token ids in, next-token logits out.

    raw code -> bpe.py -> data.py (uint16 shards) -> train.py --(GPT.forward)--> checkpoints
                                                    sample.py / evaluate.py --(GPT.stream)--> completions

The network is GPT-2 exactly as OpenAI released it (Radford et al. 2019), so that transformers'
GPT2LMHeadModel computes the same logits from the same weights: learned token + position embeddings,
n_layer pre-LayerNorm blocks of causal self-attention and a 4x tanh-GELU MLP, a final LayerNorm, and an
LM head tied to the token embedding. The book (NLP with Transformers, ch.10) trains it from scratch
on Python code as CodeParrot: "gpt2" (111M) and "gpt2-xl" (1.5B) with a 32,768-token vocabulary.
Checkpoints are Hugging Face-format folders (config.json + model.safetensors) both ways, so existing
GPT-2 checkpoints load here (older ones' pytorch_model.bin too) and ours load in transformers.
Generation (GPT.stream) keeps a key/value cache so each new token costs one position; the helpers after
GPT make that step fast: a CUDA graph on GPUs (cuda_graph), sliced few-row products on CPUs (Linear).
Embedding skips its init on the meta device, so loading a checkpoint stays quick.
"""

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils.checkpoint import checkpoint

SIZES = {  # name -> (n_layer, n_head, n_embd), the four sizes OpenAI released
    "gpt2": (12, 12, 768),
    "gpt2-medium": (24, 16, 1024),
    "gpt2-large": (36, 20, 1280),
    "gpt2-xl": (48, 25, 1600),
}
# A GPT-2 folder's weights, in the order looked for: checkpoints saved before safetensors hold the second.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# config.json settings under which transformers computes something other than GPT-2 -> allowed values
UNSUPPORTED_IF_NOT = {
    "activation_function": ("gelu_new", "gelu_pytorch_tanh"), "layer_norm_epsilon": (1e-5,),
    "scale_attn_weights": (True,), "scale_attn_by_inverse_layer_idx": (False,),
    "reorder_and_upcast_attn": (False,), "add_cross_attention": (False,),
}  # fmt: skip


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    context: int = 1024  # n_positions: the longest sequence the position embedding covers
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    checkpointing: bool = False  # activation checkpointing per block: recompute instead of store

    def __post_init__(self):
        sizes = dict(vocab_size=self.vocab_size, context=self.context, n_layer=self.n_layer,
                     n_head=self.n_head, n_embd=self.n_embd)  # fmt: skip
        bad = [f"{k}={v!r}" for k, v in sizes.items() if type(v) is not int or v < 1]
        if bad:
            raise ValueError(f"{', '.join(bad)}: model sizes must be positive integers")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout!r} must be a number in [0, 1)")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")

    @classmethod
    def named(cls, name, **overrides):
        if name not in SIZES:
            raise ValueError(f"unknown model size {name!r}; choose one of {', '.join(SIZES)}")
        n_layer, n_head, n_embd = SIZES[name]
        return cls(**{"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, **overrides})


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.c_attn = Linear(cfg.n_embd, 3 * cfg.n_embd)  # q, k, v in one matmul
        self.c_proj = Linear(cfg.n_embd, cfg.n_embd)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cache=None, positions=None):
        B, T, C = x.shape
        heads = (B, T, self.n_head, C // self.n_head)
        q, k, v = (t.view(heads).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))  # (B,H,T,C/H)
        drop = self.dropout if self.training else 0.0
        if cache is None:  # training, evaluation: on GPU a flash kernel that never builds (T,T)
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)  # (B,H,T,C/H)
        else:  # store this chunk's keys/values at their positions, attend to the slots up to each query
            k_cache, v_cache = cache  # (B,H,L,C/H) each, zero-filled by GPT.stream
            k_cache.index_copy_(2, positions, k)
            v_cache.index_copy_(2, positions, v)
            # All L slots with a mask, not a slice of the filled ones: every decode step then has the same
            # shapes, which a CUDA graph needs. Unwritten slots must hold zeros (GPT.stream's new_zeros):
            # the mask drops their scores, but NaN garbage in V would still reach the output as 0 * NaN.
            mask = torch.arange(k_cache.size(2), device=x.device) <= positions[:, None]  # (T,L)
            y = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask, dropout_p=drop)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_drop(self.c_proj(y))  # (B,T,C)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = Linear(4 * cfg.n_embd, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        # GPT-2 used the tanh approximation of GELU ("gelu_new" in transformers); one fused kernel here.
        return self.drop(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=1e-5)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=1e-5)
        self.mlp = MLP(cfg)

    def forward(self, x, cache=None, positions=None):  # pre-LN: normalise the branch input only
        x = x + self.attn(self.ln_1(x), cache, positions)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        # Module names follow transformers' GPT2LMHeadModel so checkpoints map one to one.
        self.transformer = nn.ModuleDict(dict(
            wte=Embedding(config.vocab_size, config.n_embd),
            wpe=Embedding(config.context, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=nn.LayerNorm(config.n_embd, eps=1e-5),
        ))  # fmt: skip
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: one matrix reads and writes tokens
        if self.lm_head.weight.is_meta:  # from_pretrained: shapes only, the values come from the file
            return
        self.apply(self._init_weights)
        # GPT-2 paper sec. 2.3: scale residual output projections by 1/sqrt(N), N "the number of residual
        # layers", read as 2 * n_layer (attention + MLP in each block) by transformers and nanoGPT, so the
        # stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None):
        logits = self._logits(idx)  # (B,T,V)
        if targets is None:
            return logits, None
        # The mean loss, in float32 whatever the weights' dtype: a bf16 log-softmax over 32k classes
        # loses digits. For float32 logits .float() is the same tensor, and autocast casts them anyway.
        return logits, F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    def _logits(self, idx, cache=None, positions=None):
        T = idx.size(1)
        if T > self.config.context:
            raise ValueError(f"sequence of {T} tokens exceeds the model context {self.config.context}")
        if positions is None:
            positions = torch.arange(T, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(positions))  # (B,T,C)
        for i, block in enumerate(self.transformer.h):
            if self.config.checkpointing and self.training and cache is None:
                x = checkpoint(block, x, use_reentrant=False)  # keep only block inputs; recompute in backward
            else:
                x = block(x, None if cache is None else cache[i], positions)
        return self.lm_head(self.transformer.ln_f(x))  # (B,T,V)

    @torch.inference_mode()  # no_grad, and no view or version tracking: 10-18% faster decoding on a CPU
    def stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None):
        """Yield the next token ids (B,) one step at a time, reusing keys/values of earlier positions.

        The prompt is prefilled once; after that each token costs one position of compute, and on a GPU
        that step is replayed as a CUDA graph. Positions are absolute, so once the window is full and
        slides left every cached key changes: from then on each step re-prefills the last `context`
        tokens, so the output stays that of recomputing without a cache (up to rounding). Call model.eval()
        first, or dropout makes sampling noisy. The ids are inference-mode tensors: read them, cat them,
        call .tolist(); clone one before changing it in place.
        """
        B, T = idx.shape
        if T == 0:
            raise ValueError("stream needs a prompt of at least one token per row")
        ctx, cfg, p = self.config.context, self.config, next(self.parameters())  # p: dtype, device
        length = min(ctx, T + max_new_tokens)  # the most positions the cache will ever hold
        shape = (B, cfg.n_head, length, cfg.n_embd // cfg.n_head)
        # Under autocast the keys and values come out of its matmuls in its dtype, not the weights'.
        autocast = torch.is_autocast_enabled(p.device.type)
        kv = dict(size=shape, dtype=torch.get_autocast_dtype(p.device.type) if autocast else p.dtype)
        cache = [(p.new_zeros(**kv), p.new_zeros(**kv)) for _ in range(cfg.n_layer)]  # (k, v) per layer
        token, pos = idx.new_zeros(B, 1), idx.new_zeros(1)  # the decode step's inputs, filled in place

        def decode():  # one new position against the cache -> (B,V)
            return self._logits(token, cache, pos)[:, -1, :]

        if idx.is_cuda:  # capture first: capturing decodes a dummy token into cache slot 0, which the
            decode = cuda_graph(decode)  # prefill below then overwrites
        window = idx[:, -ctx:]  # (B,T') the tokens the model can see
        logits = self._logits(window, cache)[:, -1, :]  # prefill: positions 0..T'-1
        for step in range(max_new_tokens):
            new = sample_next(logits, temperature, top_k, top_p, generator)  # (B,)
            yield new
            if step + 1 == max_new_tokens:
                break
            if window.size(1) < ctx:  # room left: one new position against the cache
                window = torch.cat([window, new[:, None]], dim=1)
                token.copy_(new[:, None])
                pos.fill_(window.size(1) - 1)
                logits = decode()
            else:  # full: slide the window and recompute it from position 0
                window = torch.cat([window[:, 1:], new[:, None]], dim=1)
                logits = self._logits(window, cache)[:, -1, :]

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None):
        """Return the prompt followed by max_new_tokens new tokens: (B, T + max_new_tokens)."""
        new = list(self.stream(idx, max_new_tokens, temperature, top_k, top_p, generator))
        return torch.cat([idx, torch.stack(new, dim=1)], dim=1) if new else idx

    def num_params(self):
        return sum(p.numel() for p in self.parameters())  # parameters() yields the tied matrix once

    def flops_per_token(self):
        """Training FLOPs per token (forward + backward), the estimate of PaLM appendix B used for MFU.

        6N: each weight does one multiply-add (2 FLOPs) per token forward and two backward. N counts the
        tied embedding once, as the LM-head matmul, and leaves out position embeddings (a lookup, no
        matmul). 12*L*C*T adds attention's QK^T and AV products over a full window of T = context.
        """
        cfg = self.config
        n = self.num_params() - self.transformer.wpe.weight.numel()
        return 6 * n + 12 * cfg.n_layer * cfg.n_embd * cfg.context

    # --- Hugging Face-format checkpoints -------------------------------------------------------------
    # transformers stores the 2-D weights of c_attn / c_proj / c_fc as Conv1D, i.e. (in, out): the
    # transpose of nn.Linear's (out, in). Everything else maps name for name.
    CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

    @classmethod
    def from_pretrained(cls, path):
        path = Path(path)
        config_file = path / "config.json"
        weights_file = next((path / w for w in WEIGHT_FILES if (path / w).is_file()), path / WEIGHT_FILES[0])
        for f in (config_file, weights_file):
            if not f.is_file():
                holds = "config.json + model.safetensors (or pytorch_model.bin)"
                raise FileNotFoundError(f"{f}: not found; a GPT-2 dir holds {holds}")
        config = cls._config_from_hf(config_file)
        with torch.device("meta"):  # no memory, no init: every tensor comes from the file
            model = cls(config)
        expected = model.state_dict()
        tensors = cls._read_weights(weights_file)
        state = {}
        for key, tensor in tensors.items():
            if key.endswith((".attn.bias", ".attn.masked_bias")):  # causal-mask buffers of old versions
                continue
            # Files saved from GPT2Model (the hub's own gpt2 among them) name tensors without "transformer."
            name = key if key.startswith(("transformer.", "lm_head.")) else "transformer." + key
            if name not in expected:
                raise ValueError(f"{weights_file}: unknown key {key!r}; is this a GPT-2 checkpoint?")
            state[name] = tensor.t() if name.endswith(cls.CONV1D) else tensor
            if state[name].shape != expected[name].shape:
                raise ValueError(f"{weights_file}: {key} has shape {tuple(tensor.shape)}, "
                                 f"config.json implies {tuple(expected[name].shape)}")  # fmt: skip
        missing = sorted(set(expected) - set(state) - {"lm_head.weight"})  # the head may be left out: tied
        if missing:
            raise ValueError(f"{weights_file}: missing {len(missing)} tensors, first {missing[0]!r}")
        wte = state["transformer.wte.weight"]
        head = state.setdefault("lm_head.weight", wte)
        if head.shape != wte.shape or not torch.allclose(head, wte, rtol=0, atol=0, equal_nan=True):
            raise ValueError(f"{weights_file}: lm_head.weight differs from wte.weight; only tied heads work")
        model.load_state_dict({k: v.float().contiguous() for k, v in state.items()}, assign=True)
        model.lm_head.weight = model.transformer.wte.weight  # assign=True made two Parameters; re-tie
        return model

    @staticmethod
    def _read_weights(weights_file) -> dict:
        """{name: tensor} from safetensors, or from a pickled state dict read with weights_only, which
        refuses anything but tensors and containers: a .bin cannot run code on loading."""
        try:
            if weights_file.suffix == ".bin":
                tensors = torch.load(weights_file, map_location="cpu", weights_only=True)
            else:
                tensors = load_file(weights_file)
        except Exception as e:  # truncated or foreign bytes make the readers raise all kinds of errors
            problem = type(e).__name__ + ": " + str(e).partition("\n")[0]  # not torch's paragraphs of advice
            raise ValueError(f"{weights_file}: not a readable weights file ({problem})") from None
        if not isinstance(tensors, dict):
            raise ValueError(f"{weights_file}: holds a {type(tensors).__name__}, not a state dict")
        return tensors

    @staticmethod
    def _config_from_hf(config_file):
        try:
            hf = json.loads(config_file.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{config_file}: not valid JSON ({e})") from None
        if not isinstance(hf, dict) or hf.get("model_type") != "gpt2":
            found = hf.get("model_type") if isinstance(hf, dict) else type(hf).__name__
            raise ValueError(f"{config_file}: model_type is {found!r}, expected 'gpt2'")
        for key, ok in UNSUPPORTED_IF_NOT.items():
            if key in hf and hf[key] not in ok:
                raise ValueError(f"{config_file}: {key}={hf[key]!r} is not supported; GPT-2 uses {ok[0]!r}")
        if hf.get("n_inner") not in (None, 4 * hf.get("n_embd", 768)):
            raise ValueError(f"{config_file}: n_inner={hf['n_inner']} is not supported; GPT-2 uses 4*n_embd")
        sizes = {k: hf[k] for k in ("vocab_size", "n_layer", "n_head", "n_embd") if k in hf}
        # transformers defaults resid_pdrop to 0.1 when absent; we use one rate for all three dropouts.
        try:
            return GPTConfig(context=hf.get("n_positions", 1024), dropout=hf.get("resid_pdrop", 0.1), **sizes)
        except ValueError as e:
            raise ValueError(f"{config_file}: {e}") from None

    def save_pretrained(self, path):
        """Write config.json + model.safetensors into `path`, which transformers loads unchanged."""
        cfg, path = self.config, Path(path).resolve()  # resolve: "." has no name to add ".tmp" to
        hf = dict(
            model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=cfg.vocab_size,
            n_positions=cfg.context, n_ctx=cfg.context, n_layer=cfg.n_layer, n_head=cfg.n_head,
            n_embd=cfg.n_embd, n_inner=None, activation_function="gelu_new", layer_norm_epsilon=1e-5,
            resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
            initializer_range=0.02, scale_attn_weights=True, tie_word_embeddings=True, use_cache=True,
            bos_token_id=None, eos_token_id=None,  # the tokenizer knows <|endoftext|>, not the model
        )  # fmt: skip
        state = {}
        for name, tensor in self.state_dict().items():
            if name != "lm_head.weight":  # tied: transformers re-ties it from wte
                tensor = tensor.t() if name.endswith(self.CONV1D) else tensor
                state[name] = tensor.detach().cpu().contiguous()
        # Build the files in a temp dir, then rename it into place: a new folder appears whole. Into an
        # existing folder (one that also holds a tokenizer, say) each file moves by its own atomic rename.
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            (tmp / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
            save_file(state, tmp / WEIGHT_FILES[0], metadata={"format": "pt"})
        except BaseException:  # a full disk: give back what was written
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if path.is_dir():
            for f in tmp.iterdir():
                os.replace(f, path / f.name)
            tmp.rmdir()
        else:
            os.replace(tmp, path)


class Embedding(nn.Embedding):
    """nn.Embedding, whose default init skips the meta device (from_pretrained builds the model there).

    torch's normal_ on a meta tensor imports its compiler, torch._dynamo, for values no one reads: 1.2-1.5
    s of a short sample.py run on the 2-core machine, which took 3.5-4.3 s before and 2.0-2.1 s after.
    On real devices the init runs as nn.Embedding's, so the random stream, and every run's initial
    weights, stay what they were.
    """

    def reset_parameters(self):
        if not self.weight.is_meta:
            super().reset_parameters()


class Linear(nn.Linear):
    """nn.Linear, with a faster CPU inference product for the few float32 rows of a decode step.

    A decode step multiplies each weight once per sample, so its speed is the rate at which weights
    stream from memory. For so few rows MKL runs `x @ W^T` as one call that reached 13-14 GB/s on the
    2-core CPU of bench/RESULTS.md, where summing a tensor reads 32 GB/s. Cut into 16 slices of output
    rows and handed to torch.bmm as a batch, the same products run side by side at 24-38 GB/s: the
    matrix products of a gpt2-size decode step take 2.1x less time for one sample, 1.5x for 8, 1.3x for
    32 (the most rows sent this way: past it the gain fades, 1.05x at 128, even at 256). The sums are the
    same, rounded differently in the last bits.
    Training, GPUs, autocast and bfloat16 (which oneDNN already streams well) take nn.Linear's path.
    """

    SLICES = 16

    def forward(self, x):
        rows, (n_out, n_in) = x.numel() // x.size(-1), self.weight.shape
        inference = not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
        few_rows = x.device.type == "cpu" and x.dtype == torch.float32 and 0 < rows <= 32
        if not (inference and few_rows) or n_out < self.SLICES:
            return super().forward(x)
        x2, sliced = x.reshape(rows, n_in), n_out - n_out % self.SLICES  # equal slices: 50257 leaves 1
        w = self.weight[:sliced].view(self.SLICES, -1, n_in)  # (S, sliced/S, in), a view
        if rows == 1:  # each slice times the column x^T: the faster order for one row (measured)
            y = torch.bmm(w, x2.T.expand(self.SLICES, -1, -1)).view(1, sliced)  # (S, sliced/S, 1) flat
        else:  # x times each slice transposed
            y = torch.bmm(x2.expand(self.SLICES, -1, -1), w.transpose(1, 2))  # (S, rows, sliced/S)
            y = y.transpose(0, 1).reshape(rows, sliced)
        if sliced < n_out:
            y = torch.cat([y, F.linear(x2, self.weight[sliced:])], dim=1)
        y = y if self.bias is None else y + self.bias
        return y.view(*x.shape[:-1], n_out)


def cuda_graph(fn):
    """Record the GPU kernels of fn() once; return a function that replays them and returns fn's output.

    A decode step of GPT-2 small is some 200 small kernels. Launched one by one from Python, the CPU is
    the bottleneck and the GPU mostly waits; a replayed graph launches them all in one call. fn must
    read only tensors that outlive the graph and that callers update in place between replays. The
    returned tensor is the graph's own output buffer: the next replay overwrites it, so read it first.
    """
    side = torch.cuda.Stream()  # warm up off the default stream, as capture requires (cuBLAS handles)
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()

    def replay():
        graph.replay()
        return out

    return replay


def check_sampling(temperature, top_k, top_p):
    """Refuse settings that would fail deep inside sampling; written so that NaN fails too."""
    if not 0 <= temperature < math.inf:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (no limit: None, or 0 on the command line), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Pick one next token per row from logits (B,V) -> (B,). temperature 0 means greedy (argmax)."""
    check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]  # (B,1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)  # (B,V)
    if top_p is None:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)
    return sample_nucleus(probs, top_p, generator)


def sample_nucleus(probs, top_p, generator=None):
    """Nucleus sampling (Holtzman et al. 2020), probs (B,V) -> (B,): keep the smallest set of most likely
    tokens whose mass reaches top_p, i.e. a token stays if the mass ranked strictly above it is still below
    top_p, and draw from it renormalised. At the book's settings (temperature 0.4, top_p 0.95) that set is
    a few tokens: rank a short head first and sort the whole vocabulary only when the head falls short
    (sorting 32,768 was ~14% of a CPU decode step). probs must be float32 (sample_next makes it so): the
    sort below reads their bits as int32."""
    ranked, order = torch.topk(probs, min(64, probs.size(-1)))  # (B,64) most likely first
    if (ranked.sum(dim=-1) < top_p).any():
        # Non-negative floats order as their bit patterns do, and torch sorts int32 1.5x faster on CPU.
        bits, order = torch.sort(probs.view(torch.int32), dim=-1, descending=True)  # (B,V)
        ranked = bits.view(torch.float32)
    cum = ranked.cumsum(dim=-1)  # (B,K) the mass of each ranked token and of all above it
    size = ((cum - ranked < top_p) & (ranked > 0)).sum(dim=-1, keepdim=True)  # (B,1) tokens kept, >= 1
    # Inverse-CDF draw among the kept: one uniform number per row, where torch.multinomial would draw
    # one per candidate (5.7 of 17 ms for 8 x 32,768 after the sort). The first rank whose cumulative
    # mass exceeds u has positive probability; min() only guards against u rounding up to the total.
    u = torch.rand(size.shape, generator=generator, device=cum.device) * cum.gather(-1, size - 1)  # (B,1)
    pick = torch.minimum(torch.searchsorted(cum, u, right=True), size - 1)  # (B,1) an index into `order`
    return order.gather(-1, pick).squeeze(-1)  # (B,)
