# CodeParrot (1.5B parameters): "NLP with Transformers" ch.10, the training script's config: lr 2e-4,
# 750 warmup steps, cosine, 2 sequences of 1,024 tokens per GPU with 16 accumulation steps on 16 A100s
# (512 sequences per step), 50,000 steps, weight decay 0.1, seed 1, gradient (activation) checkpointing
# to fit the 40 GB GPUs; about 7 days in the book. The book evaluates and saves every 50,000 micro-batches,
# i.e. every 3,125 optimizer steps; we evaluate as often and save every 1,000 steps, so that a preempted
# week-long run loses hours, not days. The book's loop does not clip gradients: grad_clip keeps our
# default of 1.0, as the HF course clips. It evaluates on the whole validation set, we on eval_tokens.
#   torchrun --nproc_per_node=16 train.py xl      (same dataset as configs/small.py)
data_dir = "out/codeparrot"
out_dir = "out/xl"
model = "gpt2-xl"
context = 1024
batch_size = 2
grad_accum = 16
max_steps = 50_000
lr = 2e-4
warmup_steps = 750
schedule = "cosine"
weight_decay = 0.1
checkpointing = True
seed = 1
save_interval = 1_000
eval_interval = 3_125
log_interval = 10
compile = True  # not in the book; bench/RESULTS.md's H100 figures are compiled (--compile=false: eager)
