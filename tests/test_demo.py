"""The main job (demo.sh) end to end on a small slice: two stdlib packages, a few training steps.

The same script as `bash demo.sh`, so CI proves the whole chain install -> data -> BPE -> shards -> train
-> completions every time; a second run must reuse every finished stage instead of redoing it."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STDLIB = Path(sysconfig.get_paths()["stdlib"])
SLICE = ["--source", str(STDLIB / "email"), f"--source={STDLIB / 'json'}", "--vocab-size=512"]  # both forms
STEPS = ["--max_steps=6", "--eval_interval=3", "--save_interval=3", "--log_interval=1", "--eval_tokens=4096"]


def demo(out, *args):
    cmd = ["bash", str(ROOT / "demo.sh"), f"--out={out}", *SLICE, *STEPS, *args]
    # The interpreter running the tests comes first on PATH, and pip finds everything installed without
    # asking the network (it would check its own version there). Output in UTF-8 whatever the locale: the
    # tiny model's completions may hold any character, which an ASCII or latin-1 stdout refuses.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run(cmd, capture_output=True, encoding="utf-8", timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_demo_runs_every_stage_then_reuses_them(tmp_path):
    out = demo(tmp_path)
    meta = json.loads((tmp_path / "stdlib" / "meta.json").read_text())
    assert meta["vocab_size"] == 512 and meta["tokens"]["valid"] > 0
    assert "Python keywords that are not one token" in out  # the book's tokenizer analysis
    run = tmp_path / "tiny"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in metrics if "val_loss" in r] == [3, 6]
    assert (run / "latest").read_text().strip() == "ckpt-0000006"
    assert out.count("=" * 80) == 4 * 3  # four prompts, four completions each, three rules between them

    again = demo(tmp_path)
    assert "already complete; reusing it" in again  # the dataset stage says it reuses its work
    assert "resuming from" in again and "at step 6" in again
    assert len((run / "metrics.jsonl").read_text().splitlines()) == len(metrics)  # nothing retrained


def test_demo_refuses_an_unknown_argument_and_an_empty_out(tmp_path):
    for args, word in ((["--bogus"], "--bogus"), (["--fresh", "--out="], "--out needs a folder")):
        result = subprocess.run(["bash", ROOT / "demo.sh", *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and word in result.stderr


def test_demo_help_is_its_opening_comment():
    script = f"{ROOT.name}/demo.sh"  # a relative path from another folder: demo.sh changes folder first
    result = subprocess.run(
        ["bash", script, "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT.parent
    )
    assert result.returncode == 0 and result.stdout.startswith("The main job: the whole CodeParrot pipeline")
    assert "bash demo.sh [--fresh] [--out DIR]" in result.stdout and "set -e" not in result.stdout
