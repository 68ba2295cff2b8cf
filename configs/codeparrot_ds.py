# The HF course's data-science model ("Training a causal language model from scratch"): GPT-2 small at a
# context of 128 on the codeparrot subset of files using pandas/sklearn/matplotlib/seaborn, AdamW lr 5e-4,
# weight decay 0.1, 16 sequences per batch with 16 accumulation steps, linear schedule with 1,000 warmup
# steps to 0, gradient clipping 1.0, the keytoken-weighted loss (alpha 1), evaluation every 5,000 steps,
# one epoch of the course's dataset: 7.6M sequences of 128 tokens / 256 per step = about 29,500 steps (the
# dataset prepare builds is cleaned and split otherwise: one epoch of it is its meta.json's train tokens /
# (129 x 256) steps). The course passes the number of micro-batches as the schedule's length, so its decay
# only gets 1/16 of the way; ours reaches 0. Its tokenizer (code-search-net-tokenizer) has 52,000 tokens.
#   python data.py prepare --out out/codeparrot_ds --source <codeparrot train file-*.json.gz> \
#       --keywords pandas,sklearn,matplotlib,seaborn --vocab-size 52000
#   python train.py codeparrot_ds
data_dir = "out/codeparrot_ds"
out_dir = "out/codeparrot_ds"
model = "gpt2"
context = 128
batch_size = 16
grad_accum = 16
max_steps = 29_500
lr = 5e-4
warmup_steps = 1_000
schedule = "linear"
weight_decay = 0.1
grad_clip = 1.0
keytoken_alpha = 1.0
eval_interval = 5_000
save_interval = 5_000
log_interval = 100
compile = True  # not in the course; bench/RESULTS.md's H100 figures are compiled (--compile=false: eager)
