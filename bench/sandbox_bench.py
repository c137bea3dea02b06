"""`rho-bench sandbox`: executions per second of the tora/pal executor (issue 16), trivial and sympy programs.

Runs `evaluation.executor.execute` from whichever `evaluation` package is first on sys.path (so the same script
measures an older checkout with PYTHONPATH=<that checkout>), serially and with one caller thread per core.
"""
from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

PROGRAMS = {
    "trivial": "print(6 * 7)",
    "sympy": "from sympy import symbols, solve, Rational\nx = symbols('x')\nprint(solve(x**2 - Rational(9, 4), x))",
}


def _rate(execute, program: str, count: int, threads: int) -> float:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: execute(program), range(threads)))  # warm-up: starts workers / caches probes
        started = time.perf_counter()
        results = list(pool.map(lambda _: execute(program), range(count)))
    elapsed = time.perf_counter() - started
    assert all(r.report == "Done" for r in results), {r.report for r in results}
    return count / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rho-bench sandbox", description=__doc__)
    parser.add_argument("--count", type=int, default=40, help="executions per measurement")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="concurrent callers")
    args = parser.parse_args(argv)
    from evaluation import executor

    print(f"executor: {executor.__file__}")
    print(f"{'program':<8}  {'serial exec/s':>13}  {f'{args.threads} threads exec/s':>17}")
    for name, program in PROGRAMS.items():
        serial = _rate(executor.execute, program, args.count, 1)
        parallel = _rate(executor.execute, program, args.count, args.threads)
        print(f"{name:<8}  {serial:13.1f}  {parallel:17.1f}")


if __name__ == "__main__":
    main()
