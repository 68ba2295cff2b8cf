"""Tests for model.py: GPT-2 semantics, the KV cache, sizes, checkpoints, parity with transformers."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import model as model_module
from model import GPT, GPTConfig, sample_next

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
TINY = GPTConfig(vocab_size=97, context=16, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models are all per-op overhead: a second thread only adds sync, which costs dearly while
    other jobs crowd the cores. Restored afterwards for the rest of the session."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]  # on CUDA, stream replays its decode step as a graph


def tiny_model(config=TINY, seed=0, device="cpu"):
    torch.manual_seed(seed)
    return GPT(config).to(device).eval()


def test_changing_token_t_changes_no_logit_before_t():
    m = tiny_model()
    idx = torch.randint(0, TINY.vocab_size, (2, 12))
    changed = idx.clone()
    changed[:, 7] = (idx[:, 7] + 1) % TINY.vocab_size
    with torch.no_grad():
        a, b = m(idx)[0], m(changed)[0]
    assert torch.equal(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def recompute_greedy(m, idx, steps):
    """The reference: no cache, full forward over the last `context` tokens at every step."""
    logits_seen = []
    for _ in range(steps):
        logits = m(idx[:, -m.config.context :])[0][:, -1, :]
        logits_seen.append(logits)
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    return idx, logits_seen


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("prompt_len, steps", [(5, 8), (5, 30), (20, 6)])  # fits / runs past / starts past
def test_cached_generation_equals_recomputation(monkeypatch, prompt_len, steps, device):
    m = tiny_model(device=device)
    idx = torch.randint(0, TINY.vocab_size, (3, prompt_len), device=device)
    logits_seen = []

    def greedy_and_record(logits, *args):
        logits_seen.append(logits.clone())
        return logits.argmax(-1)

    monkeypatch.setattr(model_module, "sample_next", greedy_and_record)
    out = m.generate(idx, steps, temperature=0)
    monkeypatch.undo()
    with torch.no_grad():
        ref, ref_logits = recompute_greedy(m, idx, steps)
    assert torch.equal(out, ref)
    assert len(logits_seen) == steps
    for got, want in zip(logits_seen, ref_logits, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_decoding_gives_the_uncached_logits(monkeypatch, device):
    """bf16 weights, as sample.py runs on CUDA (a replayed graph there): each decode step's logits are those
    of a forward without a cache over the same tokens, to bf16 rounding."""
    m = tiny_model(device=device).to(torch.bfloat16)
    idx = torch.randint(0, TINY.vocab_size, (3, 5), device=device)
    seen = []

    def greedy_and_record(logits, *args):
        seen.append(logits.float().clone())
        return logits.argmax(-1)

    monkeypatch.setattr(model_module, "sample_next", greedy_and_record)
    out = m.generate(idx, 8, temperature=0)  # 13 tokens: within the 16-token context, no slide
    monkeypatch.undo()
    with torch.no_grad():
        full = m(out[:, :-1])[0].float()  # (3, 12, V): position 4 + k predicts new token k
    assert len(seen) == 8
    for k, got in enumerate(seen):
        torch.testing.assert_close(got, full[:, 4 + k], atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("rows", [1, 3, 32, 33])
@pytest.mark.parametrize("n_out, bias", [(97, False), (96, True), (8, True)])  # remainder / even / too few
def test_few_row_linear_equals_nn_linear(monkeypatch, rows, n_out, bias):
    """model.Linear's decode path (16 slices through torch.bmm) computes nn.Linear's product, and is
    taken exactly for inference on 1 to 32 float32 rows of at least 16 outputs."""
    torch.manual_seed(0)
    layer = model_module.Linear(64, n_out, bias=bias)
    calls, bmm = [], torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda *args: calls.append(1) or bmm(*args))
    x = torch.randn(rows, 1, 64)
    with torch.no_grad():
        y = layer(x)  # (rows, 1, n_out)
    assert bool(calls) == (rows <= 32 and n_out >= 16)
    torch.testing.assert_close(y, torch.nn.functional.linear(x, layer.weight, layer.bias))
    calls.clear()
    layer(x)  # with gradients: training's path
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16  # autocast's product, as nn.Linear gives it
    with torch.no_grad():
        layer.to(torch.bfloat16)(x.bfloat16())
    assert not calls


def test_stream_yields_one_token_per_row_and_seeds_reproduce():
    m = tiny_model()
    idx = torch.randint(0, TINY.vocab_size, (2, 4))
    steps = list(m.stream(idx, 5, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(7)))
    assert len(steps) == 5 and all(t.shape == (2,) and t.dtype == torch.long for t in steps)
    again = m.generate(idx, 5, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(7))
    assert torch.equal(again[:, 4:], torch.stack(steps, dim=1))
    assert torch.equal(m.generate(idx, 0), idx)
    # decoded under inference_mode (no autograd bookkeeping); generate's result is an ordinary tensor
    assert all(t.is_inference() for t in steps) and not again.is_inference()


def test_stream_runs_under_autocast():
    """fp32 weights under bf16 autocast, as transformers' generate allows: the cache takes its dtype."""
    m, idx = tiny_model(), torch.randint(0, TINY.vocab_size, (2, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first = m(idx)[0][:, -1].argmax(-1)
        steps = list(m.stream(idx, 14, temperature=0))  # runs past the 16-token window
    assert len(steps) == 14 and torch.equal(steps[0], first)


@pytest.mark.parametrize("name, millions", [("gpt2", "111.0M"), ("gpt2-xl", "1529.6M")])
def test_parameter_counts_match_the_book(name, millions):
    with torch.device("meta"):  # shapes only: the 1.5B model costs no memory or init time
        m = GPT(GPTConfig.named(name, vocab_size=32768, context=1024))
    assert f"{m.num_params() / 1e6:.1f}M" == millions
    n = m.num_params() - 1024 * m.config.n_embd  # position embeddings are a lookup, not a product
    assert m.flops_per_token() == 6 * n + 12 * m.config.n_layer * m.config.n_embd * 1024  # PaLM's estimate


def test_residual_projections_start_scaled_down_by_depth():
    """GPT-2's init: N(0, 0.02), and 0.02 / sqrt(2 * n_layer) for the projections into the residual stream."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=512, context=16, n_layer=8, n_head=4, n_embd=256))
    for name, p in m.named_parameters():
        if p.dim() == 2 and name != "transformer.wpe.weight":
            expected = 0.02 / math.sqrt(16) if name.endswith("c_proj.weight") else 0.02
            assert p.std().item() == pytest.approx(expected, rel=0.05), name


def test_named_sizes_and_bad_config():
    cfg = GPTConfig.named("gpt2-medium", vocab_size=1000, context=256, dropout=0.1)
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size, cfg.context, cfg.dropout) == (
        24, 16, 1024, 1000, 256, 0.1,
    )  # fmt: skip
    with pytest.raises(ValueError, match="gpt3"):
        GPTConfig.named("gpt3")
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=100, n_head=3)
    with pytest.raises(ValueError, match="context"):
        tiny_model()(torch.zeros(1, TINY.context + 1, dtype=torch.long))


def test_initial_loss_is_uniform_guess():
    # n_embd kept small: logits have std 0.02*sqrt(n_embd), which adds about var/2 to ln(V)
    # (0.15 nats at n_embd 768, as nanoGPT also sees), 0.03 here.
    cfg = GPTConfig(vocab_size=32768, context=64, n_layer=2, n_head=4, n_embd=128)
    m = tiny_model(cfg)
    x, y = torch.randint(0, cfg.vocab_size, (2, 2, 64))
    with torch.no_grad():
        _, loss = m(x, y)
    assert abs(loss.item() - math.log(cfg.vocab_size)) < 0.1


def test_checkpointing_gives_the_same_gradients(monkeypatch):
    """Each block is checkpointed once per training forward (and never in eval), at no cost in exactness."""
    calls, checkpoint = [], model_module.checkpoint
    monkeypatch.setattr(model_module, "checkpoint", lambda *a, **k: calls.append(1) or checkpoint(*a, **k))
    x, y = torch.randint(0, TINY.vocab_size, (2, 2, 16))
    grads = []
    for checkpointing in (False, True):
        m = tiny_model(GPTConfig(**{**TINY.__dict__, "checkpointing": checkpointing})).train()
        m(x, y)[1].backward()
        grads.append([p.grad for p in m.parameters()])
    assert len(calls) == TINY.n_layer
    m.eval()(x)
    assert len(calls) == TINY.n_layer
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_save_then_load_is_exact_and_keeps_other_files(tmp_path):
    m = tiny_model()
    m.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp dir left behind
    (tmp_path / "ckpt" / "tokenizer.bpe").write_text("kept")
    m.save_pretrained(tmp_path / "ckpt")  # into an existing checkpoint folder
    loaded = GPT.from_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "tokenizer.bpe").read_text() == "kept"
    assert loaded.config == m.config
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    assert loaded.num_params() == m.num_params()
    for (name, a), (_, b) in zip(m.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["activation_function"] == "gelu_new"


def test_a_save_cut_short_leaves_no_half_checkpoint(tmp_path, monkeypatch):
    m = tiny_model()
    m.save_pretrained(tmp_path / "old")
    before = {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()}

    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(model_module, "save_file", full_disk)
    for path in (tmp_path / "new", tmp_path / "old"):
        with pytest.raises(OSError):
            tiny_model(seed=1).save_pretrained(path)
    assert not (tmp_path / "new").exists()
    assert {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()} == before


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_save_cut_short_gives_back_what_it_wrote(tmp_path, monkeypatch, error):
    """A full disk, or Ctrl-C during a 1.5B model's long write: the partial folder is deleted at once."""

    def cut_short(*args, **kwargs):
        raise error

    monkeypatch.setattr(model_module, "save_file", cut_short)
    with pytest.raises(type(error)):
        tiny_model().save_pretrained(tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []  # nor ckpt.tmp, with its config.json


def test_a_checkpoint_with_nan_weights_still_loads(tmp_path):
    """A diverged run's weights: its tied head holds the same NaNs, which compare unequal to themselves."""
    m = tiny_model()
    with torch.no_grad():
        m.transformer.wte.weight[3, 1] = float("nan")
    m.save_pretrained(tmp_path)
    assert GPT.from_pretrained(tmp_path).lm_head.weight.isnan().sum() == 1


def test_loads_a_pickled_pytorch_model_bin(tmp_path):
    """Checkpoints saved before safetensors hold pytorch_model.bin: the same names, pickled."""
    m = tiny_model()
    m.save_pretrained(tmp_path)
    torch.save(load_file(tmp_path / "model.safetensors"), tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    loaded = GPT.from_pretrained(tmp_path)
    for (name, a), (_, b) in zip(m.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def broken_copy(tmp_path, config_edit=None, weights_edit=None):
    """A saved tiny model with its config.json or weights edited."""
    path = tmp_path / "bad"
    tiny_model().save_pretrained(path)
    if config_edit:
        config = json.loads((path / "config.json").read_text())
        config_edit(config)
        (path / "config.json").write_text(json.dumps(config))
    if weights_edit:
        state = load_file(path / "model.safetensors")
        weights_edit(state)
        save_file(state, path / "model.safetensors")
    return path


def test_bad_checkpoint_dirs_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.*config.json"):
        GPT.from_pretrained(tmp_path / "nowhere")
    path = broken_copy(tmp_path)
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        GPT.from_pretrained(path)
    cases = [
        (dict(config_edit=lambda c: c.update(model_type="llama")), "config.json: model_type is 'llama'"),
        (dict(config_edit=lambda c: c.update(activation_function="relu")), "config.json: activation_fun"),
        (dict(config_edit=lambda c: c.update(n_embd=64)), "model.safetensors: .*has shape"),
        (dict(config_edit=lambda c: c.update(n_head=0)), "config.json: n_head=0: model sizes must be"),
        (dict(config_edit=lambda c: c.update(resid_pdrop="x")), "config.json: dropout='x' must be a number"),
        (dict(weights_edit=lambda s: s.update(extra=torch.zeros(1))), "model.safetensors: unknown key"),
        (dict(weights_edit=lambda s: s.pop("transformer.ln_f.bias")), "model.safetensors: missing 1 tensors"),
    ]
    for edits, message in cases:
        with pytest.raises(ValueError, match=message):
            GPT.from_pretrained(broken_copy(tmp_path, **edits))
    path = broken_copy(tmp_path)
    (path / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="model.safetensors: not a readable weights file"):
        GPT.from_pretrained(path)
    (path / "model.safetensors").unlink()
    unreadable = "not a readable weights file"
    for junk, message in [(b"truncated", unreadable), (b"garbage\n", unreadable), (None, "holds a Tensor")]:
        if junk is None:
            torch.save(torch.zeros(2), path / "pytorch_model.bin")
        else:
            (path / "pytorch_model.bin").write_bytes(junk)
        with pytest.raises(ValueError, match=f"pytorch_model.bin: {message}") as e:
            GPT.from_pretrained(path)
        assert "\n" not in str(e.value)  # one line, not the unpickler's paragraphs of advice
    path = broken_copy(tmp_path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        GPT.from_pretrained(path)


def test_logits_match_transformers_fixture():
    """Weights and logits from transformers' GPT2LMHeadModel (tests/fixtures/make_gpt2_fixture.py)."""
    m = GPT.from_pretrained(FIXTURES / "gpt2-tiny").eval()  # its config.json says dropout 0.1
    io = load_file(FIXTURES / "gpt2-tiny-io.safetensors")
    with torch.no_grad():
        logits, _ = m(io["idx"])
    torch.testing.assert_close(logits, io["logits"], atol=1e-5, rtol=0)


def test_loading_leaves_the_compiler_unimported():
    # Building on the meta device must not run torch's meta normal_, which imports torch._dynamo: it was
    # 1.2-1.5 s of every sample.py start. A fresh interpreter, since the test session may have loaded it.
    code = (f"import sys, model; model.GPT.from_pretrained({str(FIXTURES / 'gpt2-tiny')!r}); "
            "sys.exit('torch._dynamo' in sys.modules)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0


def test_loads_original_openai_layout(tmp_path):
    """The `gpt2` repo's file: no `transformer.` prefix, causal-mask buffers, sometimes lm_head.weight."""
    m = tiny_model()
    m.save_pretrained(tmp_path / "openai")
    weights = tmp_path / "openai" / "model.safetensors"
    state = {k.removeprefix("transformer."): v for k, v in load_file(weights).items()}
    for i in range(TINY.n_layer):
        state[f"h.{i}.attn.bias"] = torch.ones(1, 1, TINY.context, TINY.context).tril()
    state["lm_head.weight"] = state["wte.weight"].clone()
    save_file(state, weights)
    loaded = GPT.from_pretrained(tmp_path / "openai")
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    for (name, a), (_, b) in zip(m.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    state["lm_head.weight"] += 1
    save_file(state, weights)
    with pytest.raises(ValueError, match="only tied heads"):
        GPT.from_pretrained(tmp_path / "openai")


def test_live_parity_with_transformers(tmp_path):
    transformers = pytest.importorskip("transformers", reason="live parity needs transformers")
    m = tiny_model()
    with torch.no_grad():  # as the fixture: large, distinct weights, so that an exact GELU would show
        for p in m.parameters():
            p.normal_(0.0, 0.2)
    m.save_pretrained(tmp_path / "ours")
    hf, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not any(info.values()), info  # no missing / unexpected / mismatched keys
    hf.eval()
    idx = torch.randint(0, TINY.vocab_size, (2, 16))
    with torch.no_grad():
        ours, loss = m(idx[:, :-1], idx[:, 1:])
        theirs = hf(idx, labels=idx)
    torch.testing.assert_close(ours, theirs.logits[:, :-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, theirs.loss, atol=1e-5, rtol=0)
    hf.save_pretrained(tmp_path / "theirs")  # and back: transformers' own output loads here
    back = GPT.from_pretrained(tmp_path / "theirs").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(idx)[0], theirs.logits, atol=1e-5, rtol=0)


def test_top_k_1_is_greedy_and_temperature_0_is_argmax():
    logits = torch.randn(64, 50, generator=torch.Generator().manual_seed(0))
    greedy = logits.argmax(-1)
    assert torch.equal(sample_next(logits, 0.0, None, None, None), greedy)
    assert torch.equal(sample_next(logits, 1.5, 1, None, torch.Generator().manual_seed(1)), greedy)
    many = logits.repeat(200, 1)  # top-k leaves exact zeros, which top-p 1.0 must still never draw
    drawn = sample_next(many, 1.0, 3, 1.0, torch.Generator().manual_seed(2))
    assert (many.topk(3).indices == drawn[:, None]).any(-1).all()
    with pytest.raises(ValueError, match="top_p"):
        sample_next(logits, 1.0, None, 1.5, None)
    with pytest.raises(ValueError, match="temperature"):  # NaN would reach multinomial as NaN probabilities
        sample_next(logits, float("nan"), None, None, None)


@pytest.mark.parametrize("top_p, kept", [(0.4, {0}), (0.7, {0, 1}), (0.9, {0, 1, 2}), (1.0, {0, 1, 2, 3})])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, kept):
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().repeat(4000, 1)
    drawn = sample_next(logits, 1.0, None, top_p, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == kept
    share = probs[0] / probs[list(kept)].sum()  # kept tokens are renormalised
    assert abs((drawn == 0).float().mean().item() - share.item()) < 0.03


def test_top_p_on_a_large_vocabulary_keeps_exactly_the_nucleus():
    # One batch of peaked rows, whose nucleus is in the ranked head of 64, and flat rows, whose is not:
    # each row must get its own nucleus, whichever path the batch takes.
    noise = torch.randn(2, 300, generator=torch.Generator().manual_seed(0))
    peaked, flat = noise[0] * 3.0, noise[1] * 0.1
    nuclei = []
    for logits in (peaked, flat):
        ranked, order = logits.softmax(-1).sort(descending=True)
        nuclei.append(set(order[ranked.cumsum(0) - ranked < 0.9].tolist()))
    assert len(nuclei[0]) < 64 < len(nuclei[1])
    rows = torch.stack([peaked, flat]).repeat_interleave(20000, dim=0)
    drawn = sample_next(rows, 1.0, None, 0.9, torch.Generator().manual_seed(1))
    assert set(drawn[:20000].tolist()) == nuclei[0] and set(drawn[20000:].tolist()) == nuclei[1]
    # a few tokens: their shares are measurable (flat, sampling noise hides any bias)
    kept = torch.zeros(300).index_fill_(0, torch.tensor(sorted(nuclei[0])), 1.0) * peaked.softmax(-1)
    seen = torch.bincount(drawn[:20000], minlength=300) / 20000
    assert (seen - kept / kept.sum()).abs().sum() / 2 < 0.02  # total variation from the renormalised


def test_temperature_divides_the_logits():
    """Below 1 sharpens, above 1 flattens: token 0 has probability softmax([1, 0] / T)[0]."""
    logits = torch.tensor([[1.0, 0.0]]).repeat(4000, 1)
    for temperature in (0.25, 4.0):
        drawn = sample_next(logits, temperature, None, None, torch.Generator().manual_seed(0))
        want = torch.softmax(torch.tensor([1.0, 0.0]) / temperature, -1)[0].item()
        assert abs((drawn == 0).float().mean().item() - want) < 0.03


def test_stream_refuses_an_empty_prompt():
    with pytest.raises(ValueError, match="at least one token"):
        next(tiny_model().stream(torch.zeros(2, 0, dtype=torch.long), 3))


def test_checkpoint_config_defaults_and_unsupported_n_inner(tmp_path):
    # transformers' GPT2Config defaults resid_pdrop to 0.1 when config.json leaves it out
    no_dropout_key = broken_copy(tmp_path, config_edit=lambda c: c.pop("resid_pdrop"))
    assert GPT.from_pretrained(no_dropout_key).config.dropout == 0.1
    with pytest.raises(ValueError, match="n_inner=64 is not supported"):
        GPT.from_pretrained(broken_copy(tmp_path, config_edit=lambda c: c.update(n_inner=64)))
    assert GPT.from_pretrained(broken_copy(tmp_path, config_edit=lambda c: c.update(n_inner=128))) is not None


def test_old_transformers_masked_bias_buffers_are_skipped(tmp_path):
    # older transformers versions saved h.N.attn.masked_bias (a scalar -1e4) beside h.N.attn.bias
    def edit(state):
        state.update({f"transformer.h.{i}.attn.masked_bias": torch.tensor(-1e4) for i in range(TINY.n_layer)})

    loaded = GPT.from_pretrained(broken_copy(tmp_path, weights_edit=edit))
    assert torch.equal(loaded.transformer.wte.weight, tiny_model().transformer.wte.weight)
