"""CPU linears at decode-step row counts: MKL `F.linear` (row-major and column-major weights) against oneDNN with
the weight prepacked (server/cpu_ops.PackedLinear), for the shapes of the bundled model and the 7.5M random Llama.

Best of 5 timed loops of 100 calls each, after warm-up; microseconds per call, in one run.

    rho-bench linear [--threads 2] [--rows 1,6,32]
"""
from __future__ import annotations

import argparse
import time

import torch

# (in, out): qkv, gate_up, down, lm_head
SHAPES = {"bundled 1M": ((128, 384), (128, 672), (336, 128), (128, 1024)),
          "random 7.5M": ((256, 768), (256, 1376), (688, 256), (256, 8000))}


def best_us(fn, reps: int = 100) -> float:
    for _ in range(20):
        fn()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps * 1e6)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rho-bench linear", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", default="1,6,32")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from server.cpu_ops import PackedLinear

    print(f"{args.threads} threads; us per call: MKL row-major / MKL column-major / oneDNN packed (speed-up vs best MKL)")
    for model, shapes in SHAPES.items():
        for k, n in shapes:
            linear = torch.nn.Linear(k, n, bias=False)
            w, wt = linear.weight.detach(), linear.weight.detach().t().contiguous().t()
            packed = PackedLinear(linear)
            cells = []
            for m in (int(r) for r in args.rows.split(",")):
                x = torch.randn(m, k)
                with torch.inference_mode():
                    a = best_us(lambda: torch.nn.functional.linear(x, w))
                    b = best_us(lambda: torch.nn.functional.linear(x, wt))
                    c = best_us(lambda: packed(x))
                cells.append(f"{m:>2} rows {a:6.0f} / {b:6.0f} / {c:6.0f} ({min(a, b) / c:.2f}x)")
            print(f"{model:<12} ({k:>4} -> {n:>4})  " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
