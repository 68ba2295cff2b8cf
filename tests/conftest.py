"""Shared test set-up: the repository root on sys.path, so tests import model, bpe, data... as readers do."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Tests start `python -c "import bpe ..."` with cwd=ROOT, which finds the project through sys.path[0] = the
# current folder; PYTHONSAFEPATH=1 (Python 3.11+) leaves it out, and those children failed to import it.
os.environ.pop("PYTHONSAFEPATH", None)
