"""Shared test set-up: the repository root on sys.path, so tests import model, bpe, data... as readers do."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Tests start `python -c "import bpe ..."` with cwd=ROOT, which finds the project through sys.path[0] = the
# current folder; PYTHONSAFEPATH=1 (Python 3.11+) leaves it out, and those children failed to import it.
os.environ.pop("PYTHONSAFEPATH", None)
# Nor are the scripts they start ranks of a job, whatever launched the tests: a CI pod may set torchrun's
# variables, and train.py then took itself for a rank (exit 2 without MASTER_ADDR; with it, a wait).
for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
    os.environ.pop(name, None)
