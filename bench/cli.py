"""`rho-bench`: the project's benchmarks, one subcommand each; every one prints a single comparison table."""
from __future__ import annotations

import importlib
import sys

BENCHES = {
    "engine": ("bench.engine_bench", "engine vs transformers throughput, and engine overhead (issue 2)"),
    "http": ("bench.http_bench", "HTTP streaming vs in-process engine throughput (issue 3)"),
    "grammar": ("bench.grammar_bench", "constrained decoding cost and grammar compile times (issue 5)"),
    "slm": ("bench.slm_bench", "SLM vs causal-LM training cost and scoring throughput (issue 4)"),
    "speculate": ("bench.speculate_bench", "n-gram speculative decoding vs plain, GSM8K CoT (issue 19)"),
    "load": ("bench.load_bench", "overload, disconnect storms and slow clients on loopback (issue 15)"),
    "serve": ("bench.serve_bench", "rho-serve over HTTP vs transformers (and llama-server), one light client (issue 13)"),
    "attention": ("bench.attention_bench", "C++ CPU paged attention vs the pure-torch path, per call (issue 13)"),
    "router": ("bench.router_bench", "the router's CPU per generated token, no HTTP, no model (issue 13)"),
    "linear": ("bench.linear_bench", "CPU linears at decode row counts: MKL vs oneDNN prepacked (issue 13)"),
    "gpu": ("bench.gpu_bench", "the CUDA path against transformers on one GPU (issue 9; run bench/gpu.sh)"),
    "sandbox": ("bench.sandbox_bench", "tora/pal executor executions per second, trivial and sympy programs (issue 16)"),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in BENCHES:
        print("usage: rho-bench {" + ",".join(BENCHES) + "} [options]\n")
        for name, (_, text) in BENCHES.items():
            print(f"  {name:<8} {text}")
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    module, _ = BENCHES[argv[0]]
    importlib.import_module(module).main(argv[1:])


if __name__ == "__main__":
    main()
