# GPT-2 small pretrained on BookCorpus with the HF Trainer (the blog post "Pre-training GPT-2 on
# BookCorpus"): the GPT-2 tokenizer, sequences of 1,024, 8 per device, AdamW lr 2.5e-4 (betas 0.9, 0.999),
# weight decay 0.01, cosine with 5% warmup, evaluation and logging every 500 steps, a checkpoint every
# 5,000, 10 kept; the post shows samples after 5,000 and 40,000 steps, so we train for 40,000.
#   python data.py prepare --out out/bookcorpus --source <bookcorpus .jsonl> --field text --tokenizer gpt2
#   python train.py gpt2_bookcorpus
data_dir = "out/bookcorpus"
out_dir = "out/gpt2_bookcorpus"
model = "gpt2"
context = 1024
batch_size = 8
grad_accum = 1
max_steps = 40_000
warmup_steps = max_steps * 5 // 100
lr = 2.5e-4
schedule = "cosine"
weight_decay = 0.01
beta2 = 0.999
eval_interval = 500
log_interval = 500
save_interval = 5_000
keep_last = 10
compile = True  # not in the book; bench/RESULTS.md's H100 figures are compiled (--compile=false: eager)
