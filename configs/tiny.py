# The CPU demo: a 1.3M-parameter GPT (4 layers x 128) on this Python's standard library. Sized by
# measurement on a 2-core machine (bench/RESULTS.md, "train.py"): 3.5 min of training when quiet (7.5 min
# with other jobs running, before train.py kept freed memory); validation loss 8.3 (uniform) -> 3.85, 1.64
# bits per byte. Not a recipe from the book: the schedule and optimizer follow configs/small.py, scaled down.
#   python data.py prepare --out out/stdlib --vocab-size 4096
#   python train.py tiny
data_dir = "out/stdlib"
out_dir = "out/tiny"
n_layer = 4
n_head = 4
n_embd = 128
context = 128
batch_size = 16
grad_accum = 1
max_steps = 1_200
lr = 2e-3
min_lr = 2e-4
warmup_steps = 100
schedule = "cosine"
weight_decay = 0.1
beta2 = 0.99  # short runs with small batches like a faster-forgetting second moment
eval_interval = 300
eval_tokens = 65_536
log_interval = 10
save_interval = 300
# device stays "auto": the same demo trains on a GPU when there is one
