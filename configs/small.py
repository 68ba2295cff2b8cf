# CodeParrot-small (111M parameters with a 32,768-token vocabulary): "NLP with Transformers" ch.10, the
# training script's config (its commented values are the small model's): lr 5e-4, 2,000 warmup steps,
# cosine, 12 sequences of 1,024 tokens per GPU on 16 A100s (a2-megagpu-16g, 196,608 tokens per step),
# 150,000 steps, weight decay 0.1, seed 1, a checkpoint every 15,000 steps; about 24 hours in the book.
# The book trains in fp16; dtype "auto" picks bf16 on GPUs that have it. The book's loop does not clip
# gradients: grad_clip keeps our default of 1.0, as the HF course clips. It evaluates on the whole
# validation set at each checkpoint, we on eval_tokens (1M by default).
#   python data.py prepare --out out/codeparrot --source <codeparrot-clean file-*.json.gz> --vocab-size 32768
#   torchrun --nproc_per_node=16 train.py small
data_dir = "out/codeparrot"
out_dir = "out/small"
model = "gpt2"
context = 1024
batch_size = 12
grad_accum = 1
max_steps = 150_000
lr = 5e-4
warmup_steps = 2_000
schedule = "cosine"
weight_decay = 0.1
seed = 1
save_interval = 15_000
eval_interval = 15_000  # the book evaluates whenever it saves
log_interval = 100
compile = True  # not in the book; bench/RESULTS.md's H100 figures are compiled (--compile=false: eager)
